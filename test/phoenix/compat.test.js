// Compatibility of the Beamline notifier with the official phoenix client,
// newest 1.8.x and 1.8.15 (PHOENIX-PROTOCOL.md §10). Started by
// internal/notifier/phoenixjs_test.go, which provides:
//   NOTIFIER_WS  ws://host:port/socket
//   CONTROL_URL  http://host:port (create jobs, publish events, broadcast, drop sockets)
//   TOKEN_ALICE, TOKEN_BOB
"use strict";
const { describe, test, after } = require("node:test");
const assert = require("node:assert/strict");
const WebSocket = require("ws");

const WS = process.env.NOTIFIER_WS;
const CTRL = process.env.CONTROL_URL;
const ALICE = process.env.TOKEN_ALICE;
const BOB = process.env.TOKEN_BOB;
if (!WS || !CTRL) throw new Error("run me through internal/notifier/phoenixjs_test.go");

const clients = { newest: require("phoenix"), "1.8.15": require("phoenix-1815") };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond, ms = 5000, what = "condition") {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

async function ctrl(path, method = "POST") {
  const r = await fetch(CTRL + path, { method });
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

const newJob = async (user) => (await ctrl(`/job?user=${user}`)).id;
const event = (job, type, p = 0) => ctrl(`/event?job=${job}&type=${type}&p=${p}`);
const joins = async (kind, result) => (await ctrl(`/joins?kind=${kind}&result=${result}`, "GET")).value;

function join(ch) {
  return new Promise((resolve, reject) => {
    ch.join()
      .receive("ok", resolve)
      .receive("error", (e) => reject(new Error("join error: " + JSON.stringify(e))))
      .receive("timeout", () => reject(new Error("join timeout")));
  });
}

for (const [name, phx] of Object.entries(clients)) {
  describe(`phoenix ${name}`, () => {
    const sockets = [];
    const open = (opts = {}) => {
      const s = new phx.Socket(WS, { transport: WebSocket, ...opts });
      sockets.push(s);
      return s;
    };
    const connect = async (opts) => {
      const s = open(opts);
      let opened = false;
      s.onOpen(() => (opened = true));
      s.connect();
      await waitFor(() => opened, 5000, "onOpen");
      return s;
    };
    after(() => sockets.forEach((s) => s.disconnect()));

    test("1. token param: the socket opens", async () => {
      await connect({ params: { token: ALICE } });
    });

    test("2. authToken subprotocol: opens and is authenticated as that user", async () => {
      const s = await connect({ authToken: ALICE });
      const r = await join(s.channel("user:alice"));
      assert.ok(Array.isArray(r.jobs));
    });

    test("3. bad token: onError, never onOpen, and the client retries", async () => {
      const s = open({ params: { token: "bad" } });
      let opened = false, errors = 0;
      s.onOpen(() => (opened = true));
      s.onError(() => errors++);
      s.connect();
      await waitFor(() => errors >= 2, 3000, "two failed attempts");
      s.disconnect();
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
