// The long-poll transport and binary frames against the Beamline notifier,
// with the official phoenix client, newest 1.8.x and 1.8.15
// (docs/phoenix-protocol.md#7-binary-frames, docs/phoenix-protocol.md#9-long-poll-transport,
// docs/phoenix-protocol.md#10-compatibility-checklist items 13 and 14). Started by
// internal/notifier/phoenixjs_test.go like compat.test.js.
// Set BEAMLINE_LONG=1 (or CI=true) for the 15 s quiet-period test.
"use strict";
const { describe, test, after } = require("node:test");
const assert = require("node:assert/strict");
const WebSocket = require("ws");

const { env, clients, sleep, waitFor, ctrl, newJob, event, join, push, socketKit, refusedConnect } = require("./harness.js");
const { WS, CTRL, ALICE, LONG } = env;

// A sessionStorage stand-in (Node has none); the fallback remembers itself there.
const memoryStorage = () => {
  const m = new Map();
  return { getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, String(v)), removeItem: (k) => m.delete(k) };
};

const bytes = () => new Uint8Array([0, 1, 2, 0xde, 0xad, 0xbe, 0xef, 255]);

for (const [name, phx] of Object.entries(clients)) {
  describe(`phoenix ${name}`, () => {
    const { open, connect, closeAll } = socketKit(phx);
    after(closeAll);

    test("13. push('bin', ArrayBuffer) is a binary frame; the binary reply resolves ok with an ArrayBuffer", async () => {
      const s = await connect({ transport: WebSocket, params: { token: ALICE } });
      const ch = s.channel("user:alice");
      await join(ch);
      const sent = bytes();
      const r = await push(ch, "bin", sent.buffer);
      assert.ok(r instanceof ArrayBuffer, `reply is ${Object.prototype.toString.call(r)}`);
      assert.deepEqual(new Uint8Array(r), sent);
    });

    for (const [how, opts] of [
      ["token param", { params: { token: ALICE } }],
      ["authToken", { authToken: ALICE }],
    ]) {
      test(`14. LongPoll (${how}): join, push/reply, job events and a broadcast`, async () => {
        const s = await connect({ transport: phx.LongPoll, ...opts });
        assert.ok(s.conn instanceof phx.LongPoll);
        const id = await newJob("alice");
        const ch = s.channel(`job:${id}`);
        const seqs = [], notes = [];
        ch.on("job", (p) => seqs.push(p.seq));
        ch.on("note", (p) => notes.push(p.n));
        const r = await join(ch);
        assert.equal(r.snapshot.id, id);
        assert.deepEqual(await push(ch, "ping", { hello: "lp" }), { hello: "lp" });
        await event(id, "start");
        await event(id, "progress", 50);
        await event(id, "succeed");
        await waitFor(() => seqs.length >= 3, 5000, "three job events");
        assert.deepEqual(seqs, [1, 2, 3]);
        await ctrl(`/broadcast?topic=job:${id}&event=note&n=b1`);
        await waitFor(() => notes.length >= 1, 5000, "the broadcast");
        assert.deepEqual(notes, ["b1"]);
        // Many pushes at once go out in one POST batch and are answered in order.
        const many = await Promise.all(Array.from({ length: 20 }, (_, i) => push(ch, "ping", { i })));
        assert.deepEqual(many.map((x) => x.i), Array.from({ length: 20 }, (_, i) => i));
      });
    }

    test("LongPoll: a binary push is sent base64 and its reply carries the bytes as base64 JSON", async () => {
      const s = await connect({ transport: phx.LongPoll, params: { token: ALICE } });
      const ch = s.channel("user:alice");
      await join(ch);
      const sent = bytes();
      const r = await push(ch, "bin", sent.buffer);
      assert.deepEqual(new Uint8Array(Buffer.from(r.binary, "base64")), sent);
    });

    test("LongPoll: a bad token is refused (403), onError, never onOpen", async () => {
      const opened = await refusedConnect(open({ transport: phx.LongPoll, params: { token: "bad" } }), 1, "an error");
      assert.equal(opened, false);
    });

    test("longPollFallbackMs: a WebSocket that fails falls back to LongPoll, which works", async () => {
      // The primary transport dials a path that does not upgrade (404).
      class BrokenWS extends WebSocket {
        constructor(url, protocols) {
          super(url.replace("/socket/websocket", "/nowhere/websocket"), protocols);
        }
      }
      const s = await connect({ transport: BrokenWS, longPollFallbackMs: 300, params: { token: ALICE }, sessionStorage: memoryStorage() });
      await waitFor(() => s.conn instanceof phx.LongPoll && s.isConnected(), 5000, "the LongPoll fallback");
      const ch = s.channel("user:alice");
      await join(ch);
      assert.deepEqual(await push(ch, "ping", { via: "fallback" }), { via: "fallback" });
    });

    test("LongPoll: at the token's expiry the client reconnects with the fresh token params() gives, and rejoins", async () => {
      // docs/phoenix-protocol.md#12-token-expiry
      let token = (await ctrl("/token?user=alice&ttl=2", "GET")).token;
      const s = await connect({ transport: phx.LongPoll, params: () => ({ token }) });
      const ch = s.channel("user:alice");
      let oks = 0;
      ch.join().receive("ok", () => oks++);
      await waitFor(() => oks === 1, 5000, "first join");
      token = ALICE; // what the app gives from now on
      const before = await ctrl("/counter?name=beamline_notifier_disconnects_total&label=token_expired", "GET");
      await waitFor(async () => (await ctrl("/counter?name=beamline_notifier_disconnects_total&label=token_expired", "GET")).value > before.value,
        5000, "the session ended at the token's expiry");
      await waitFor(() => oks >= 2, 15000, "rejoin on a new session with the fresh token");
    });

    test("LongPoll: a dropped session (server shutdown of sessions) makes the client rejoin", async () => {
      const s = await connect({ transport: phx.LongPoll, params: { token: ALICE } });
      const id = await newJob("alice");
      const ch = s.channel(`job:${id}`, () => ({ last_seq: 0 }));
      const seqs = [];
      ch.on("job", (p) => seqs.push(p.seq));
      let oks = 0;
      ch.join().receive("ok", () => oks++);
      await waitFor(() => oks === 1, 5000, "join");
      await ctrl("/drop?code=1012");
      await event(id, "start");
      await waitFor(() => oks >= 2, 8000, "rejoin on a new session");
      await waitFor(() => seqs.length >= 1, 5000, "the event sent while away");
      assert.deepEqual(seqs, [1]);
    });
  });
}

// docs/phoenix-protocol.md#10-compatibility-checklist item 14: a LongPoll session survives a 15 s quiet period (longer
// than the server's 10 s hold, as long as the 15 s unpolled expiry); both
// client versions at once.
test("14. a LongPoll session survives a 15 s quiet period", { skip: !LONG && "set BEAMLINE_LONG=1 (CI runs it)" }, async () => {
  await Promise.all(Object.entries(clients).map(async ([name, phx]) => {
    const s = new phx.Socket(WS, { transport: phx.LongPoll, params: { token: ALICE } });
    let opened = 0;
    const trouble = [];
    s.onOpen(() => opened++);
    s.onClose((e) => trouble.push(`${name}: close ${e && e.code}`));
    s.onError((e) => trouble.push(`${name}: error ${e}`));
    s.connect();
    try {
      await waitFor(() => opened === 1, 5000, "onOpen");
      const session = s.conn.token;
      const id = await newJob("alice");
      const ch = s.channel(`job:${id}`);
      const got = [];
      ch.on("job", (p) => got.push(p.seq));
      ch.onError(() => trouble.push(`${name}: channel error`));
      await join(ch);
      await sleep(16000);
      assert.deepEqual(trouble, []);
      assert.equal(opened, 1);
      assert.equal(s.conn.token, session);
      await event(id, "start");
      await waitFor(() => got.length === 1, 5000, "the event after 16 s");
      assert.deepEqual(got, [1]);
      assert.deepEqual(await push(ch, "ping", { after: "quiet" }), { after: "quiet" });
    } finally {
      s.disconnect();
    }
  }));
});
