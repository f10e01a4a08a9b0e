// Unit tests of beamline.js against a fake notifier speaking Phoenix V2 JSON.
import { test } from "node:test";
import assert from "node:assert/strict";
import { WebSocketServer, WebSocket } from "ws";
import { connect, BeamlineError, tokenSubject } from "../beamline.js";

// A JWT-shaped token for user "alice" (the client only reads `sub`).
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
const TOKEN = `${b64({ alg: "HS256" })}.${b64({ sub: "alice" })}.sig`;

/** A scripted fake notifier. onFrame(sock, frame) answers client frames. */
async function fakeServer(onFrame) {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((r) => wss.once("listening", r));
  const srv = { wss, frames: [], sockets: [], urls: [] };
  wss.on("connection", (sock, req) => {
    srv.sockets.push(sock);
    srv.urls.push(req.url);
    sock.on("message", (data) => {
      const frame = JSON.parse(String(data));
      srv.frames.push(frame);
      onFrame(sock, frame, srv);
    });
  });
  srv.url = `ws://127.0.0.1:${wss.address().port}/socket`;
  srv.close = () => new Promise((r) => { for (const s of wss.clients) s.terminate(); wss.close(r); });
  return srv;
}

const reply = (sock, [jr, ref, topic], status, response) =>
  sock.send(JSON.stringify([jr, ref, topic, "phx_reply", { status, response }]));
const push = (sock, jr, topic, payload) => sock.send(JSON.stringify([jr, null, topic, "job", payload]));
const snap = (seq, extra = {}) => ({ id: "j1", user: "alice", kind: "image", priority: "normal", status: "running", progress: seq * 10, attempt: 1, seq, ...extra });

async function until(pred, ms = 3000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 5));
  }
}

const fastBackoff = () => 10;

test("tokenSubject reads sub", () => {
  assert.equal(tokenSubject(TOKEN), "alice");
  assert.equal(tokenSubject("garbage"), undefined);
});

test("watchJob: snapshot, then pushes in order, de-duplicated by seq", async () => {
  const srv = await fakeServer((sock, f) => {
    if (f[3] === "phx_join") {
      reply(sock, f, "ok", { snapshot: snap(2), recovered: false });
      push(sock, f[0], f[2], { type: "progress", job: snap(3), seq: 3, stream_seq: 10 });
      push(sock, f[0], f[2], { type: "progress", job: snap(3), seq: 3, stream_seq: 10 }); // duplicate
      push(sock, f[0], f[2], { type: "progress", job: snap(2), seq: 2, stream_seq: 9 }); // older
      sock.send(JSON.stringify(["999", null, f[2], "job", { type: "progress", job: snap(9), seq: 9 }])); // stale join_ref
      push(sock, null, f[2], { type: "succeeded", job: snap(4, { status: "succeeded", progress: 100 }), seq: 4 });
    }
  });
  const client = connect({ url: srv.url, token: TOKEN, WebSocket, reconnectAfterMs: fastBackoff });
  const seen = [];
  client.watchJob("j1", (job, info) => seen.push([job.seq, info.type]));
  await until(() => seen.length >= 3);
  await new Promise((r) => setTimeout(r, 30));
  assert.deepEqual(seen, [[2, "snapshot"], [3, "progress"], [4, "succeeded"]]);
  assert.match(srv.urls[0], /^\/socket\/websocket\?token=.+&vsn=2\.0\.0$/);
  client.close();
  await srv.close();
});

test("reconnect after 1012: rejoin with last_seq, replay delivered once, status recovered", async () => {
  let conn = 0;
  const srv = await fakeServer((sock, f) => {
    if (f[3] !== "phx_join") return;
    if (conn === 0) {
      conn++;
      reply(sock, f, "ok", { snapshot: snap(3), recovered: false });
      setTimeout(() => sock.close(1012, "restart"), 20);
      return;
    }
    // Resume: the reply carries the current snapshot, the replay follows.
    reply(sock, f, "ok", { snapshot: snap(5), recovered: true });
    push(sock, f[0], f[2], { type: "progress", job: snap(4), seq: 4 });
    push(sock, f[0], f[2], { type: "progress", job: snap(5), seq: 5 });
  });
  const client = connect({ url: srv.url, token: TOKEN, WebSocket, reconnectAfterMs: fastBackoff });
  const states = [];
  client.onStatus((s, info) => states.push(info.resumed === undefined ? s : `${s}:${info.resumed}`));
  const seen = [];
  client.watchJob("j1", (job) => seen.push(job.seq));
  await until(() => seen.includes(5));
  const joins = srv.frames.filter((f) => f[3] === "phx_join");
  assert.deepEqual(joins[0][4], {});
  assert.deepEqual(joins[1][4], { last_seq: 3 });
  assert.notEqual(joins[0][0], joins[1][0], "a rejoin uses a new join_ref");
  assert.deepEqual(seen, [3, 4, 5]);
  await until(() => states.includes("recovered:true"));
  assert.deepEqual(states, ["connecting", "open", "reconnecting", "recovered:true"]);
  client.close();
  assert.equal(client.status, "closed");
  await srv.close();
});

test("watchUser: recovered:false reads jobs that ended during the gap over HTTP", async () => {
  let conn = 0;
  const srv = await fakeServer((sock, f) => {
    if (f[3] !== "phx_join") return;
    assert.equal(f[2], "user:alice");
    if (conn++ === 0) {
      reply(sock, f, "ok", { jobs: [snap(1)], stream_seq: 7, recovered: false });
      push(sock, f[0], f[2], { type: "progress", job: snap(2), seq: 2, stream_seq: 8 });
      setTimeout(() => sock.terminate(), 20);
      return;
    }
    assert.deepEqual(f[4], { last_seq: 8 });
    // Too old to replay: j1 finished meanwhile and is not in the list.
    reply(sock, f, "ok", { jobs: [], stream_seq: 20, recovered: false });
  });
  const requests = [];
  const fetch = async (url, init) => {
    requests.push([init.method, url, init.headers.Authorization]);
    return new Response(JSON.stringify(snap(6, { status: "succeeded", progress: 100 })), { status: 200 });
  };
  const client = connect({ url: srv.url, token: TOKEN, WebSocket, fetch, ingestURL: "http://ingest.test/", reconnectAfterMs: fastBackoff });
  const seen = [];
  client.watchUser((job) => seen.push([job.seq, job.status]));
  await until(() => seen.length === 3);
  assert.deepEqual(seen, [[1, "running"], [2, "running"], [6, "succeeded"]]);
  assert.deepEqual(requests, [["GET", "http://ingest.test/v1/jobs/j1", "Bearer " + TOKEN]]);
  client.close();
  await srv.close();
});

test("heartbeats are sent; a missing reply closes and reconnects", async () => {
  let answer = true;
  const srv = await fakeServer((sock, f) => {
    if (f[2] === "phoenix" && f[3] === "heartbeat" && answer) reply(sock, f, "ok", {});
  });
  const client = connect({ url: srv.url, token: TOKEN, WebSocket, heartbeatMs: 30, reconnectAfterMs: fastBackoff });
  await until(() => srv.frames.filter((f) => f[3] === "heartbeat").length >= 3);
  const hb = srv.frames.find((f) => f[3] === "heartbeat");
  assert.equal(hb[0], null);
  assert.equal(typeof hb[1], "string");
  assert.equal(srv.sockets.length, 1);
  answer = false;
  await until(() => srv.sockets.length >= 2);
  answer = true;
  client.close();
  await srv.close();
});

test("join refused as unauthorized: onError once, no retry", async () => {
  const srv = await fakeServer((sock, f) => {
    if (f[3] === "phx_join") reply(sock, f, "error", { reason: "unauthorized" });
  });
  const client = connect({ url: srv.url, token: TOKEN, WebSocket });
  const errors = [];
  client.watchJob("someone-elses", () => assert.fail("no update expected"), { onError: (r) => errors.push(r) });
  await until(() => errors.length === 1);
  await new Promise((r) => setTimeout(r, 1200));
  assert.deepEqual(errors, ["unauthorized"]);
  assert.equal(srv.frames.filter((f) => f[3] === "phx_join").length, 1);
  client.close();
  await srv.close();
});

test("submit: sends the body with the bearer token; errors are BeamlineError", async () => {
  const srv = await fakeServer(() => {});
  const calls = [];
  let fail = false;
  const fetch = async (url, init) => {
    calls.push({ url, init });
    if (fail) {
      return new Response(JSON.stringify({ error: { code: "overloaded", message: "too many jobs" } }), { status: 429, headers: { "Retry-After": "3" } });
    }
    return new Response(JSON.stringify(snap(0, { status: "queued", progress: 0 })), { status: 202 });
  };
  const client = connect({ url: srv.url, getToken: async () => TOKEN, WebSocket, fetch });
  const seen = [];
  client.watchUser((job, info) => seen.push(info.type));
  const job = await client.submit({ kind: "image", input: { prompt: "x" } }, { idempotencyKey: "k1" });
  assert.equal(job.status, "queued");
  assert.equal(calls[0].url, "/v1/jobs");
  assert.equal(calls[0].init.method, "POST");
  assert.equal(calls[0].init.headers.Authorization, "Bearer " + TOKEN);
  assert.equal(calls[0].init.headers["Idempotency-Key"], "k1");
  assert.deepEqual(JSON.parse(calls[0].init.body), { kind: "image", input: { prompt: "x" } });
  await until(() => seen.includes("submitted"));
  fail = true;
  await assert.rejects(client.submit({ kind: "image" }), (e) => e instanceof BeamlineError && e.status === 429 && e.code === "overloaded" && e.retryAfter === 3);
  client.close();
  await srv.close();
});

// User topics: the notifier fills a gap in one job's events after a later
// event of another job, so pushes do not come in stream_seq order.
const jobOf = (id, seq, extra = {}) => snap(seq, { id, ...extra });

test("watchUser: a late event of another job with a lower stream_seq is delivered", async (t) => {
  const srv = await fakeServer((sock, f) => {
    if (f[3] !== "phx_join") return;
    reply(sock, f, "ok", { jobs: [jobOf("a", 1), jobOf("b", 1)], stream_seq: 10, recovered: false });
    push(sock, f[0], f[2], { type: "progress", job: jobOf("b", 2), seq: 2, stream_seq: 12 });
    // a's missed final event, filled in after b's later one.
    push(sock, f[0], f[2], { type: "succeeded", job: jobOf("a", 2, { status: "succeeded", progress: 100 }), seq: 2, stream_seq: 11 });
  });
  const client = connect({ url: srv.url, token: TOKEN, WebSocket, reconnectAfterMs: fastBackoff });
  t.after(() => { client.close(); return srv.close(); }); // also when an assertion fails
  const seen = [];
  client.watchUser((job) => seen.push(`${job.id}${job.seq}:${job.status}`));
  await until(() => seen.length >= 4);
  assert.deepEqual(seen, ["a1:running", "b1:running", "b2:running", "a2:succeeded"]);
});

test("watchUser: a duplicate of a job's event (same job, same seq) is dropped", async (t) => {
  const srv = await fakeServer((sock, f) => {
    if (f[3] !== "phx_join") return;
    reply(sock, f, "ok", { jobs: [], stream_seq: 10, recovered: false });
    push(sock, f[0], f[2], { type: "progress", job: jobOf("a", 1), seq: 1, stream_seq: 11 });
    push(sock, f[0], f[2], { type: "progress", job: jobOf("b", 1), seq: 1, stream_seq: 12 });
    push(sock, f[0], f[2], { type: "progress", job: jobOf("a", 1), seq: 1, stream_seq: 11 }); // re-sent by a gap fill
    push(sock, f[0], f[2], { type: "progress", job: jobOf("a", 1), seq: 1, stream_seq: 13 }); // stored twice
    push(sock, f[0], f[2], { type: "succeeded", job: jobOf("b", 2, { status: "succeeded" }), seq: 2, stream_seq: 14 });
  });
  const client = connect({ url: srv.url, token: TOKEN, WebSocket, reconnectAfterMs: fastBackoff });
  t.after(() => { client.close(); return srv.close(); }); // also when an assertion fails
  const seen = [];
  client.watchUser((job) => seen.push(`${job.id}${job.seq}`), { includeFinished: true });
  await until(() => seen.includes("b2"));
  await new Promise((r) => setTimeout(r, 30));
  assert.deepEqual(seen, ["a1", "b1", "b2"]);
});

test("watchUser: resumes from the advertised resume_seq, not the highest stream_seq", async (t) => {
  let conn = 0;
  const srv = await fakeServer((sock, f) => {
    if (f[3] !== "phx_join") return;
    if (conn++ === 0) {
      reply(sock, f, "ok", { jobs: [], stream_seq: 5, resume_seq: 5, recovered: false });
      // b's event (9) came ahead of a's (7, 8): the contiguous watermark
      // stays behind the highest stream_seq until the gap is filled.
      push(sock, f[0], f[2], { type: "progress", job: jobOf("b", 1), seq: 1, stream_seq: 9, resume_seq: 6 });
      push(sock, f[0], f[2], { type: "progress", job: jobOf("a", 1), seq: 1, stream_seq: 7, resume_seq: 7 });
      setTimeout(() => sock.terminate(), 20);
      return;
    }
    reply(sock, f, "ok", { jobs: [], stream_seq: 9, recovered: true });
    // The replay after 7: a's missed event, then b's again (a duplicate).
    push(sock, f[0], f[2], { type: "progress", job: jobOf("a", 2), seq: 2, stream_seq: 8, resume_seq: 8 });
    push(sock, f[0], f[2], { type: "progress", job: jobOf("b", 1), seq: 1, stream_seq: 9, resume_seq: 9 });
  });
  const client = connect({ url: srv.url, token: TOKEN, WebSocket, reconnectAfterMs: fastBackoff });
  t.after(() => { client.close(); return srv.close(); }); // also when an assertion fails
  const seen = [];
  client.watchUser((job) => seen.push(`${job.id}${job.seq}`));
  await until(() => seen.includes("a2"));
  await new Promise((r) => setTimeout(r, 30));
  const joins = srv.frames.filter((f) => f[3] === "phx_join");
  assert.deepEqual(joins[0][4], {});
  assert.deepEqual(joins[1][4], { last_seq: 7 });
  assert.deepEqual(seen, ["b1", "a1", "a2"]);
});

test("watchUser: a truncated join list is reported through onTruncated", async (t) => {
  let joins = 0;
  const srv = await fakeServer((sock, f) => {
    if (f[3] !== "phx_join") return;
    joins++;
    reply(sock, f, "ok", { jobs: [jobOf("a", 1)], stream_seq: 10, recovered: false, truncated: joins === 1 });
    if (joins === 1) setTimeout(() => sock.close(1012, "restart"), 20);
  });
  const client = connect({ url: srv.url, token: TOKEN, WebSocket, reconnectAfterMs: fastBackoff });
  t.after(() => { client.close(); return srv.close(); });
  let truncated = 0;
  const seen = [];
  client.watchUser((job) => seen.push(job.id), { onTruncated: () => truncated++ });
  await until(() => joins >= 2);
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(truncated, 1, "one report for the one truncated join, none for the complete one");
  assert.deepEqual(seen, ["a"]);
});

test("getToken runs before every reconnect; the new token is in the URL", async (t) => {
  let n = 0;
  const srv = await fakeServer(() => {});
  srv.wss.on("connection", (sock) => { if (srv.sockets.length === 1) setTimeout(() => sock.close(1012, "restart"), 20); });
  const tokens = [];
  const client = connect({ url: srv.url, WebSocket, reconnectAfterMs: fastBackoff, getToken: async () => { const tk = `tok${++n}`; tokens.push(tk); return tk; } });
  t.after(() => { client.close(); return srv.close(); });
  await until(() => srv.urls.length >= 2);
  assert.match(srv.urls[0], /token=tok1&/);
  assert.match(srv.urls[1], /token=tok2&/);
  assert.deepEqual(tokens.slice(0, 2), ["tok1", "tok2"]);
});
