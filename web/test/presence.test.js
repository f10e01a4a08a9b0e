// presence() and usePresence: Phoenix presence_state / presence_diff as the
// official Presence class applies them (a fake notifier; the real one is
// in test/phoenix/cluster-beamline.mjs).
import { test } from "node:test";
import assert from "node:assert/strict";
import { WebSocketServer, WebSocket } from "ws";
import { connect, presenceList } from "../beamline.js";
import { createUsePresence } from "../react.js";

const meta = (ref, extra = {}) => ({ phx_ref: ref, online_at: 1, device: "web", ...extra });

async function until(pred, ms = 3000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 5));
  }
}

test("presence(): state, diffs queued until the state of the current join, callbacks", async () => {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((r) => wss.once("listening", r));
  const joins = [];
  wss.on("connection", (sock) => {
    sock.on("message", (data) => {
      const [jr, ref, topic, event, payload] = JSON.parse(String(data));
      if (event !== "phx_join") return;
      joins.push(payload);
      const send = (ev, p) => sock.send(JSON.stringify([jr, null, topic, ev, p]));
      sock.send(JSON.stringify([jr, ref, topic, "phx_reply", { status: "ok", response: {} }]));
      // A diff before the state waits for it; a stale join's diff is dropped.
      send("presence_diff", { joins: { bob: { metas: [meta("b1")] } }, leaves: {} });
      sock.send(JSON.stringify(["999", null, topic, "presence_diff", { joins: { eve: { metas: [meta("e1")] } }, leaves: {} }]));
      send("presence_state", { alice: { metas: [meta("a1")] } });
      send("presence_diff", { joins: { alice: { metas: [meta("a2", { phx_ref_prev: "a1", meta: { typing: true } })] } }, leaves: { alice: { metas: [meta("a1")] } } });
      send("presence_diff", { joins: {}, leaves: { bob: { metas: [meta("b1")] } } });
    });
  });
  const client = connect({ url: `ws://127.0.0.1:${wss.address().port}/socket`, token: "t", WebSocket });
  const syncs = [];
  const left = [];
  const stop = client.presence("studio:lab", (l) => syncs.push(l), { device: "laptop", meta: { typing: false }, onLeave: (key) => left.push(key) });
  await until(() => syncs.length === 3);
  assert.deepEqual(joins[0], { device: "laptop", presence: { typing: false } });
  assert.deepEqual(syncs[0].map((p) => p.key), ["alice", "bob"]);
  const last = syncs[2];
  assert.deepEqual(last.map((p) => p.key), ["alice"]);
  assert.deepEqual(last[0].metas.map((m) => m.phx_ref), ["a2"]);
  assert.equal(last[0].metas[0].meta.typing, true);
  assert.deepEqual(left, ["alice", "bob"]);
  assert.ok(!syncs.some((l) => l.some((p) => p.key === "eve")));
  stop();
  client.close();
  for (const s of wss.clients) s.terminate();
  await new Promise((r) => wss.close(r));
});

test("usePresence follows the list and stops on cleanup", () => {
  const r = { state: undefined, cleanups: [] };
  r.useState = (init) => {
    if (r.state === undefined) r.state = typeof init === "function" ? init() : init;
    return [r.state, (v) => { r.state = typeof v === "function" ? v(r.state) : v; }];
  };
  r.useEffect = (fn) => { r.cleanups.push(fn()); };
  let onSync, stopped = false;
  const client = { presence: (topic, cb) => { onSync = cb; return () => { stopped = true; }; } };
  const usePresence = createUsePresence(r, client);
  assert.deepEqual(usePresence("studio:lab"), []);
  onSync(presenceList({ bob: { metas: [meta("b1")] } }));
  assert.deepEqual(usePresence("studio:lab").map((p) => p.key), ["bob"]);
  r.cleanups.forEach((c) => c && c());
  assert.ok(stopped);
});

test("presence() on a watched job topic rejoins with last_seq and presence params; no update repeats", async () => {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((r) => wss.once("listening", r));
  const frames = [];
  const job = (seq) => ({ id: "j1", user: "alice", status: "running", progress: seq, seq });
  wss.on("connection", (sock) => {
    sock.on("message", (data) => {
      const f = JSON.parse(String(data));
      frames.push(f);
      const [jr, ref, topic, event, payload] = f;
      if (event !== "phx_join") return;
      const send = (ev, p) => sock.send(JSON.stringify([jr, null, topic, ev, p]));
      const resumed = payload.last_seq !== undefined;
      sock.send(JSON.stringify([jr, ref, topic, "phx_reply", { status: "ok", response: { snapshot: job(resumed ? 3 : 2), recovered: resumed } }]));
      if (!resumed) send("job", { type: "progress", job: job(3), seq: 3 });
      else {
        send("presence_state", { alice: { metas: [meta("a1")] } });
        send("job", { type: "progress", job: job(3), seq: 3 }); // already seen
        send("job", { type: "progress", job: job(4), seq: 4 });
      }
    });
  });
  const client = connect({ url: `ws://127.0.0.1:${wss.address().port}/socket`, token: "t", WebSocket });
  const seen = [];
  const stopJob = client.watchJob("j1", (j) => seen.push(j.seq));
  await until(() => seen.includes(3));
  const syncs = [];
  const stopPresence = client.presence("job:j1", (l) => syncs.push(l.map((p) => p.key)));
  await until(() => seen.includes(4) && syncs.length > 0);
  const joins = frames.filter((f) => f[3] === "phx_join");
  assert.equal(joins.length, 2);
  assert.deepEqual(joins[1][4], { last_seq: 3, device: "web", presence: {} });
  assert.deepEqual(seen, [2, 3, 4]);
  assert.deepEqual(syncs.at(-1), ["alice"]);
  stopPresence();
  stopJob();
  client.close();
  for (const s of wss.clients) s.terminate();
  await new Promise((r) => wss.close(r));
});
