// Presence with the official phoenix client across two notifiers
// (docs/phoenix-protocol.md#8-presence). Started by
// internal/notifier/presence_js_test.go (TestPhoenixJSPresence), which
// provides:
//   NOTIFIER_WS_A, NOTIFIER_WS_B   two notifiers on one NATS
//   CONTROL_URL                    POST /kill (A dies without a goodbye), POST /restart (A again, same name)
//   PRESENCE_INTERVAL_MS           the notifiers' presence heartbeat
//   TOKEN_ALICE, TOKEN_BOB, TOKEN_CAROL  tokens whose rooms claim allows "lab"
// Not named *.test.js: the single-notifier run of `node --test` skips it.
"use strict";
const { test, after } = require("node:test");
const assert = require("node:assert/strict");
const WebSocket = require("ws");

const newest = require("phoenix");
const old = require("phoenix-1815");

const A = process.env.NOTIFIER_WS_A, B = process.env.NOTIFIER_WS_B, CTRL = process.env.CONTROL_URL;
const HB = Number(process.env.PRESENCE_INTERVAL_MS);
if (!A || !B || !CTRL || !HB) throw new Error("run me through internal/notifier/presence_js_test.go");

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitFor(cond, ms, what) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}
const ctrl = async (path) => {
  const r = await fetch(CTRL + path, { method: "POST" });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
};

const members = [];
after(() => members.forEach((m) => m.socket.disconnect()));

// member connects name to the notifier at url and joins studio:lab with
// a Presence, recording its callbacks.
function member(phx, url, token, name) {
  const socket = new phx.Socket(url, {
    transport: WebSocket, params: { token },
    reconnectAfterMs: () => 50, rejoinAfterMs: () => 100,
  });
  socket.connect();
  const ch = socket.channel("studio:lab", { device: name, presence: { typing: false } });
  const presence = new phx.Presence(ch);
  const m = { name, socket, ch, presence, syncs: 0, joins: [], leaves: [], joined: false };
  presence.onSync(() => m.syncs++);
  presence.onJoin((key) => m.joins.push({ key, at: Date.now() }));
  presence.onLeave((key, cur) => m.leaves.push({ key, at: Date.now(), left: cur.metas.length }));
  ch.join().receive("ok", () => (m.joined = true)).receive("error", (e) => { throw new Error(`${name} join: ${JSON.stringify(e)}`); });
  members.push(m);
  return m;
}

// view is what a member's Presence.list() shows: each key with its refs.
const view = (m) => JSON.stringify(m.presence.list((key, { metas }) => [key, metas.map((x) => x.phx_ref).sort()]).sort());
const keys = (m) => m.presence.list((key) => key).sort();

// converged waits until every member in ms lists exactly want, all alike.
async function converged(ms, want, what) {
  await waitFor(() => ms.every((m) => JSON.stringify(keys(m)) === JSON.stringify(want)) &&
    ms.every((m) => view(m) === view(ms[0])), 5000, what);
}

test("Presence.list() agrees on every client across two notifiers; a dead notifier's users leave within 2 heartbeats; a restart shows nobody twice", async () => {
  const alice = member(newest, A, process.env.TOKEN_ALICE, "alice");
  await converged([alice], ["alice"], "alice sees herself");
  const bob = member(old, B, process.env.TOKEN_BOB, "bob");
  await converged([alice, bob], ["alice", "bob"], "alice and bob see each other");
  const carol = member(newest, A, process.env.TOKEN_CAROL, "carol");
  await converged([alice, bob, carol], ["alice", "bob", "carol"], "three members");

  // A client meta update reaches everyone as one meta per connection.
  await new Promise((res, rej) => carol.ch.push("presence", { meta: { typing: true } }).receive("ok", res).receive("error", rej));
  await waitFor(() => [alice, bob].every((m) => {
    const c = m.presence.list((k, p) => (k === "carol" ? p.metas : null)).filter(Boolean)[0];
    return c && c.length === 1 && c[0].meta.typing === true;
  }), 5000, "carol typing everywhere");
  await converged([alice, bob, carol], ["alice", "bob", "carol"], "after the update");

  carol.ch.leave();
  await converged([alice, bob], ["alice", "bob"], "carol left");

  // A dies: alice (on A) leaves on B within 2 heartbeats.
  const t0 = Date.now();
  await ctrl("/kill");
  await waitFor(() => bob.leaves.some((l) => l.key === "alice" && l.at >= t0 && l.left === 0), 4 * HB, "alice leaving on B");
  const took = bob.leaves.find((l) => l.key === "alice" && l.at >= t0).at - t0;
  assert.ok(took <= 2 * HB, `alice left on B ${took} ms after A died, want ≤ ${2 * HB}`);
  assert.deepEqual(keys(bob), ["bob"]);

  // A comes back: alice's client reconnects and rejoins; nobody twice.
  await ctrl("/restart");
  await converged([alice, bob], ["alice", "bob"], "alice back");
  await sleep(3 * HB); // heartbeats go round
  await converged([alice, bob], ["alice", "bob"], "still two after heartbeats");
  for (const m of [alice, bob]) {
    for (const [key, refs] of JSON.parse(view(m))) assert.equal(refs.length, 1, `${m.name} shows ${key} ${refs.length} times`);
  }
});
