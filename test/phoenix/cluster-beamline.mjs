// web/beamline.js presence and studio helpers against two real notifiers
// on one NATS. Started by internal/notifier/presencejs_test.go
// (TestBeamlineJSPresence) with NOTIFIER_WS_A, NOTIFIER_WS_B, CONTROL_URL
// (POST /job?user=: a job), TOKEN_ALICE, TOKEN_BOB (rooms claim "lab").
// Not named *.test.js: the single-notifier `node --test` run skips it.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { connect } from "../../web/beamline.js";

const A = process.env.NOTIFIER_WS_A, B = process.env.NOTIFIER_WS_B, CTRL = process.env.CONTROL_URL;
if (!A || !B) throw new Error("run me through internal/notifier/presencejs_test.go");

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitFor(cond, ms, what) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

const clients = [];
after(() => clients.forEach((c) => c.close()));
const client = (url, token) => {
  const c = connect({ url, token, WebSocket });
  clients.push(c);
  return c;
};

test("studio(): presence and messages across notifiers; refusals reject, the room stays", async () => {
  const alice = client(A, process.env.TOKEN_ALICE);
  const bob = client(B, process.env.TOKEN_BOB);
  const seen = { alice: [], bob: [] };
  const msgs = { alice: [], bob: [] };
  const ra = alice.studio("lab", { device: "laptop", meta: { typing: false }, onSync: (l) => (seen.alice = l), onMessage: (m) => msgs.alice.push(m) });
  const rb = bob.studio("lab", { device: "phone", onSync: (l) => (seen.bob = l), onMessage: (m) => msgs.bob.push(m) });
  const keys = (l) => l.map((p) => p.key).join(",");
  await waitFor(() => keys(seen.alice) === "alice,bob" && keys(seen.bob) === "alice,bob", 5000, "both see both");
  assert.equal(seen.bob.find((p) => p.key === "alice").metas[0].device, "laptop");

  await ra.setMeta({ typing: true });
  await waitFor(() => seen.bob.find((p) => p.key === "alice")?.metas[0]?.meta?.typing === true, 5000, "typing reaches bob");
  assert.equal(seen.bob.find((p) => p.key === "alice").metas.length, 1);

  await ra.send({ text: "hello" });
  await waitFor(() => msgs.bob.length === 1, 5000, "bob gets the message");
  assert.deepEqual(msgs.bob[0], { from: "alice", body: { text: "hello" } });

  await assert.rejects(ra.send({ text: "x".repeat(2000) }), (e) => e.code === "message too large");
  await assert.rejects(ra.setMeta({ x: "y".repeat(300) }), (e) => e.code === "presence meta too large");

  rb.leave();
  await waitFor(() => keys(seen.alice) === "alice", 5000, "bob left");
});

test("presence() on a watched job topic asks for presence frames", async () => {
  const r = await fetch(CTRL + "/job?user=alice", { method: "POST" });
  const { id } = await r.json();
  const alice = client(A, process.env.TOKEN_ALICE);
  const updates = [];
  alice.watchJob(id, (job) => updates.push(job));
  await waitFor(() => updates.length === 1, 5000, "the job's snapshot");
  let list = [];
  alice.presence("job:" + id, (l) => (list = l), { device: "tab" });
  await waitFor(() => list.length === 1 && list[0].key === "alice", 5000, "alice watching her job");
});
