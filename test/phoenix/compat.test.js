// Compatibility of the Beamline notifier with the official phoenix client,
// newest 1.8.x and 1.8.15 (docs/phoenix-protocol.md#10-compatibility-checklist). Started by
// internal/notifier/phoenixjs_test.go, which provides:
//   NOTIFIER_WS  ws://host:port/socket
//   CONTROL_URL  http://host:port (create jobs, publish events, broadcast, drop sockets)
//   TOKEN_ALICE, TOKEN_BOB
// The server never answers a push of the event "unanswered" (a test hook).
// Set BEAMLINE_LONG=1 (or CI=true) for the 65 s heartbeat test.
//
// Presence (item 12) is in cluster-presence.js, on two notifiers
// (docs/phoenix-protocol.md#8-presence).
// Binary frames (item 13) and the long-poll transport (item 14) are in
// longpoll.test.js.
"use strict";
const { describe, test, after } = require("node:test");
const assert = require("node:assert/strict");
const WebSocket = require("ws");

const { env, clients, sleep, waitFor, ctrl, newJob, event, join, push, socketKit, refusedConnect } = require("./harness.js");
const { WS, CTRL, ALICE, BOB, LONG } = env;

const joins = async (kind, result) => (await ctrl(`/joins?kind=${kind}&result=${result}`, "GET")).value;


for (const [name, phx] of Object.entries(clients)) {
  describe(`phoenix ${name}`, () => {
    const { open, connect, closeAll } = socketKit(phx, { transport: WebSocket });
    after(closeAll);

    test("1. token param: the socket opens", async () => {
      await connect({ params: { token: ALICE } });
    });

    test("2. authToken subprotocol: opens and is authenticated as that user", async () => {
      const s = await connect({ authToken: ALICE });
      const r = await join(s.channel("user:alice"));
      assert.ok(Array.isArray(r.jobs));
    });

    test("3. bad token: onError, never onOpen, and the client retries", async () => {
      const opened = await refusedConnect(open({ params: { token: "bad" } }), 2, "two failed attempts");
      assert.equal(opened, false);
    });

    test("4. join ok carries the snapshot; another user's job is unauthorized and retried", async () => {
      const s = await connect({ params: { token: ALICE } });
      const mine = await newJob("alice");
      const r = await join(s.channel(`job:${mine}`));
      assert.equal(r.snapshot.id, mine);
      assert.equal(r.snapshot.status, "queued");
      assert.equal(r.recovered, false);

      const bobs = await newJob("bob");
      const before = await joins("job", "unauthorized");
      const reasons = [];
      const ch = s.channel(`job:${bobs}`);
      ch.join().receive("error", (e) => reasons.push(e.reason));
      await waitFor(() => reasons.length >= 2, 4000, "a rejoin after the error");
      ch.leave();
      assert.deepEqual(reasons.slice(0, 2), ["unauthorized", "unauthorized"]);
      assert.ok((await joins("job", "unauthorized")) - before >= 2);
    });

    test("every progress event and the terminal event, in order; leave; rejoin", async () => {
      const s = await connect({ params: { token: ALICE } });
      const id = await newJob("alice");
      const got = [];
      let ch = s.channel(`job:${id}`);
      ch.on("job", (p) => got.push(p));
      await join(ch);
      await event(id, "start");
      for (let p = 20; p <= 80; p += 20) await event(id, "progress", p);
      await event(id, "succeed");
      await waitFor(() => got.length >= 6, 5000, "six pushes");
      assert.deepEqual(got.map((p) => p.seq), [1, 2, 3, 4, 5, 6]);
      assert.deepEqual(got.map((p) => p.type), ["started", "progress", "progress", "progress", "progress", "succeeded"]);
      assert.equal(got[5].job.status, "succeeded");

      // 8. leave: ok and onClose; nothing delivered afterwards.
      let closed = false, left = false;
      ch.onClose(() => (closed = true));
      ch.leave().receive("ok", () => (left = true));
      await waitFor(() => left && closed, 3000, "leave ok + onClose");
      await ctrl(`/broadcast?topic=job:${id}&event=job&n=1`);
      await sleep(200);
      assert.equal(got.length, 6);

      // Rejoin with last_seq: nothing missed, then the terminal snapshot.
      ch = s.channel(`job:${id}`, () => ({ last_seq: 6 }));
      const r = await join(ch);
      assert.equal(r.snapshot.status, "succeeded");
      assert.equal(r.recovered, true);
    });

    test("5. push gets the server's reply", async () => {
      const s = await connect({ params: { token: ALICE } });
      const ch = s.channel("user:alice");
      await join(ch);
      const r = await new Promise((resolve, reject) =>
        ch.push("ping", { hello: "world" }).receive("ok", resolve).receive("error", reject).receive("timeout", reject));
      assert.deepEqual(r, { hello: "world" });
    });

    test("5. a push the server does not answer runs receive('timeout'), never 'ok'", async () => {
      const s = await connect({ params: { token: ALICE } });
      const ch = s.channel("user:alice");
      await join(ch);
      const seen = [];
      ch.push("unanswered", {}, 300)
        .receive("ok", () => seen.push("ok"))
        .receive("error", () => seen.push("error"))
        .receive("timeout", () => seen.push("timeout"));
      await waitFor(() => seen.length >= 1, 3000, "the timeout");
      // A later push is still answered, and the timed-out one stays silent.
      const r = await new Promise((resolve, reject) =>
        ch.push("ping", { after: 1 }).receive("ok", resolve).receive("error", reject).receive("timeout", reject));
      assert.deepEqual(r, { after: 1 });
      assert.deepEqual(seen, ["timeout"]);
    });

    test("6. a push stamped with an older join_ref is not delivered after a rejoin", async () => {
      const s = await connect({ params: { token: ALICE } });
      const id = await newJob("alice");
      const topic = `job:${id}`;
      const ch = s.channel(topic);
      const got = [];
      ch.on("note", (p) => got.push(p.n));
      let oks = 0;
      ch.join().receive("ok", () => oks++);
      await waitFor(() => oks === 1, 3000, "join");
      const oldRef = ch.joinRef();
      // The server errors the channel; the client rejoins with a new join_ref.
      await ctrl(`/end?topic=${topic}&event=phx_error`);
      await waitFor(() => oks === 2, 5000, "rejoin");
      const newRef = ch.joinRef();
      assert.notEqual(newRef, oldRef);
      assert.equal((await ctrl(`/push?topic=${topic}&event=note&n=stale&join_ref=${oldRef}`)).sent, 1);
      assert.equal((await ctrl(`/push?topic=${topic}&event=note&n=current&join_ref=${newRef}`)).sent, 1);
      await ctrl(`/broadcast?topic=${topic}&event=note&n=broadcast`);
      // Frames arrive in order: once the broadcast is here, the stale push
      // would have been too.
      await waitFor(() => got.includes("broadcast"), 3000, "the broadcast");
      assert.deepEqual(got, ["current", "broadcast"]);
    });

    test("9a. server phx_close: onClose, and no rejoin", async () => {
      const s = await connect({ params: { token: ALICE } });
      const id = await newJob("alice");
      const topic = `job:${id}`;
      const ch = s.channel(topic);
      let closed = 0, errored = 0, oks = 0;
      ch.onClose(() => closed++);
      ch.onError(() => errored++);
      ch.join().receive("ok", () => oks++);
      await waitFor(() => oks === 1, 3000, "join");
      const before = await joins("job", "ok");
      assert.equal((await ctrl(`/end?topic=${topic}&event=phx_close`)).ok, true);
      await waitFor(() => closed === 1, 3000, "onClose");
      // Rejoins would come after 1 s, 2 s, 5 s, 10 s: wait past the first
      // (past 10 s in the long run).
      await sleep(LONG ? 12000 : 2500);
      assert.equal(await joins("job", "ok"), before);
      assert.equal(oks, 1);
      assert.equal(errored, 0);
      assert.equal(ch.state, "closed");
    });

    test("9b. server phx_error: onError, then a rejoin with a new join_ref that succeeds", async () => {
      const s = await connect({ params: { token: ALICE } });
      const id = await newJob("alice");
      const topic = `job:${id}`;
      const ch = s.channel(topic, () => ({ last_seq: 0 }));
      const errors = [], seqs = [];
      ch.onError((e) => errors.push(e));
      ch.on("job", (p) => seqs.push(p.seq));
      let oks = 0;
      ch.join().receive("ok", () => oks++);
      await waitFor(() => oks === 1, 3000, "join");
      const firstRef = ch.joinRef();
      await ctrl(`/end?topic=${topic}&event=phx_error`);
      await waitFor(() => errors.length === 1, 3000, "onError");
      assert.equal(errors[0].reason, "ended by test");
      // An event while the channel is errored is replayed by the rejoin.
      await event(id, "start");
      await waitFor(() => oks === 2, 3000, "rejoin ok (the client waits 1 s)");
      assert.notEqual(ch.joinRef(), firstRef);
      assert.equal(ch.state, "joined");
      await waitFor(() => seqs.length >= 1, 3000, "the missed event");
      await event(id, "progress", 50);
      await waitFor(() => seqs.length >= 2, 3000, "a live event after the rejoin");
      assert.deepEqual(seqs, [1, 2]);
    });

    test("7. heartbeats every 200ms keep an idle socket open for 3s", async () => {
      const s = await connect({ params: { token: ALICE }, heartbeatIntervalMs: 200 });
      let trouble = 0;
      s.onClose(() => trouble++);
      s.onError(() => trouble++);
      const ch = s.channel("user:alice");
      await join(ch);
      await sleep(3000);
      assert.equal(trouble, 0);
      assert.ok(s.isConnected());
    });

    test("10. server closes with 1012: reconnect, rejoin with a new join_ref, one broadcast arrives once", async () => {
      const s = await connect({ params: { token: ALICE } });
      const id = await newJob("alice");
      const got = [];
      const ch = s.channel(`job:${id}`);
      ch.on("note", (p) => got.push(p));
      let oks = 0;
      ch.join().receive("ok", () => oks++);
      await waitFor(() => oks === 1, 3000, "first join");
      const firstRef = ch.joinRef();
      let opens = 0;
      s.onOpen(() => opens++);
      await ctrl("/drop?code=1012");
      await waitFor(() => opens >= 1 && oks >= 2, 3000, "reconnect + rejoin");
      assert.notEqual(ch.joinRef(), firstRef);
      await ctrl(`/broadcast?topic=job:${id}&event=note&n=7`);
      await waitFor(() => got.length >= 1, 3000, "the broadcast");
      await sleep(200);
      assert.deepEqual(got, [{ n: "7" }]);
    });

    test("token expiry: closed with 1008, the client reconnects with the fresh token params() gives, and rejoins", async () => {
      // docs/phoenix-protocol.md#12-token-expiry
      let token = (await ctrl("/token?user=alice&ttl=2", "GET")).token;
      let calls = 0;
      const s = await connect({ params: () => { calls++; return { token }; } });
      const closes = [];
      s.onClose((e) => closes.push(e && e.code));
      const ch = s.channel("user:alice");
      let oks = 0;
      ch.join().receive("ok", () => oks++);
      await waitFor(() => oks === 1, 3000, "first join");
      token = ALICE; // what the app gives from now on
      await waitFor(() => closes.length >= 1, 5000, "the close at the token's expiry");
      assert.equal(closes[0], 1008);
      await waitFor(() => oks >= 2 && s.isConnected(), 5000, "reconnect and rejoin with the fresh token");
      assert.ok(calls >= 2, `params() called ${calls} times`);
    });

    test("11. two Channel objects on one topic leave one subscription", async () => {
      const s = await connect({ params: { token: ALICE } });
      const id = await newJob("alice");
      const a = s.channel(`job:${id}`);
      const b = s.channel(`job:${id}`);
      const gotA = [], gotB = [];
      a.on("note", (p) => gotA.push(p));
      b.on("note", (p) => gotB.push(p));
      let aClosed = false;
      a.onClose(() => (aClosed = true));
      await join(a);
      await join(b);
      await waitFor(() => aClosed, 3000, "first channel closed");
      await ctrl(`/broadcast?topic=job:${id}&event=note&n=1`);
      await waitFor(() => gotB.length >= 1, 3000, "broadcast on the second channel");
      await sleep(200);
      assert.equal(gotA.length, 0);
      assert.equal(gotB.length, 1);
    });
  });
}

// The "stays connected past 60 s through heartbeats", with the
// default 30 s heartbeat and the server's 60 s idle timeout: both client
// versions at once, so it costs one 65 s wait.
test("a joined socket stays connected for 65 s on the default heartbeat", { skip: !LONG && "set BEAMLINE_LONG=1 (CI runs it)" }, async () => {
  await Promise.all(Object.entries(clients).map(async ([name, phx]) => {
    const s = new phx.Socket(WS, { transport: WebSocket, params: { token: ALICE } });
    let opened = 0, trouble = [];
    s.onOpen(() => opened++);
    s.onClose((e) => trouble.push(`${name}: close ${e && e.code}`));
    s.onError(() => trouble.push(`${name}: error`));
    s.connect();
    try {
      await waitFor(() => opened === 1, 5000, "onOpen");
      const id = await newJob("alice");
      const ch = s.channel(`job:${id}`);
      const got = [];
      ch.on("job", (p) => got.push(p.seq));
      ch.onError(() => trouble.push(`${name}: channel error`));
      await join(ch);
      await sleep(65000);
      assert.deepEqual(trouble, []);
      assert.equal(opened, 1);
      assert.ok(s.isConnected());
      await event(id, "start");
      await waitFor(() => got.length === 1, 5000, "the event after 65 s");
      assert.deepEqual(got, [1]);
    } finally {
      s.disconnect();
    }
  }));
});
