// beamline.js — the browser client of Beamline's notifier (Phoenix Channels
// V2 JSON) and ingest HTTP API. Plain ES module, no build step. It is built
// on the official Phoenix client, vendored beside it as phoenix.mjs
// (phoenix 1.8.16, MIT; see VENDORED.md).
//
//   import { connect } from "/beamline.js";
//   const client = connect({ getToken: () => myApp.currentToken() });
//   const stop = client.watchJob(id, (job) => render(job));
//
// From the official Socket and Channel it gets the heartbeats, reconnects
// with backoff, channel rejoins with backoff, and the transport fallback:
// when WebSockets are missing or blocked it talks long-poll to
// /socket/longpoll. On top of them Beamline adds what a job feed needs:
// every topic rejoins with the last seq it has seen (join params given as a
// function, read at each join) so the notifier replays exactly what was
// missed; updates are de-duplicated by seq, so callbacks never see an older
// or repeated state of a job. When the notifier cannot replay
// (recovered:false) the client takes the join snapshot instead, and for a
// user's jobs that ended during the gap it reads their final state over
// HTTP. A user topic's truncated job list is reported through onTruncated.
//
// Tokens: in production the host application supplies the token (`token` or
// `getToken`, called again before every reconnect so it can be refreshed;
// the Socket's params are a function that reads the latest one). The demo
// pages read a dev token from the URL fragment; see app.js.

import { Socket, LongPoll, Presence } from "./phoenix.mjs";

/** Statuses after which a job never changes. */
export const TERMINAL = Object.freeze(["succeeded", "failed", "dead", "cancelled", "expired"]);

/** @param {string} status */
export function isTerminal(status) {
  return TERMINAL.includes(status);
}

/** Error thrown by submit/cancel/getJob: the ingest error body, typed. */
export class BeamlineError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message || code || `HTTP ${status}`);
    this.name = "BeamlineError";
    this.status = status;
    this.code = code || "http_" + status;
    this.retryAfter = retryAfter; // seconds, when the server sent Retry-After
  }
}

/** Reads the `sub` claim of a JWT without verifying it (the server does). */
export function tokenSubject(token) {
  try {
    const part = String(token).split(".")[1];
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    return JSON.parse(json).sub;
  } catch {
    return undefined;
  }
}

const PERMANENT_JOIN_ERRORS = new Set(["unauthorized", "not_found", "invalid_topic", "forbidden"]);

/** presenceList turns a presence state into [{key, metas}], sorted by key. */
export function presenceList(state) {
  return Object.keys(state).sort().map((key) => ({ key, metas: state[key].metas.slice() }));
}

/** Default reconnect delay: exponential from 100 ms to 5 s with ±50% jitter. */
export function defaultBackoff(attempt) {
  const base = Math.min(5000, 100 * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (0.5 + Math.random()));
}

// socketEndpoint turns the url option into what the official Socket takes:
// "/socket" (same origin, it picks ws or wss) or "ws(s)://host/socket".
function socketEndpoint(url) {
  let u = url || "/socket";
  if (u.startsWith("http")) u = "ws" + u.slice(4);
  u = u.replace(/\/+$/, "");
  if (u.endsWith("/websocket")) u = u.slice(0, -"/websocket".length);
  if (u.startsWith("/") && typeof location === "undefined") throw new Error("beamline: connect needs an absolute url outside a browser");
  return u;
}

/**
 * Connects to the notifier. See beamline.d.ts for the options and the client.
 * @param {import("./beamline").ConnectOptions} opts
 * @returns {import("./beamline").Client}
 */
export function connect(opts = {}) {
  const heartbeatMs = opts.heartbeatMs ?? 30000;
  const joinTimeoutMs = opts.joinTimeoutMs ?? 10000;
  const backoff = opts.reconnectAfterMs ?? defaultBackoff;
  const ingestURL = (opts.ingestURL ?? "").replace(/\/+$/, "");
  const fetchImpl = opts.fetch ?? ((...a) => globalThis.fetch(...a));
  const getToken = opts.getToken ?? (() => opts.token);
  // Transport: the given WebSocket constructor (the `ws` package in Node),
  // else the platform's, else long-poll. In a browser the official client
  // also falls back to long-poll when a WebSocket does not open in time.
  const transport = opts.transport === "longpoll" ? LongPoll : (opts.WebSocket ?? globalThis.WebSocket ?? LongPoll);
  const inBrowser = typeof window !== "undefined" && typeof document !== "undefined";
  const longPollFallbackMs = opts.longPollFallbackMs ?? (inBrowser && !opts.WebSocket ? 2500 : 0);

  let state = "connecting";
  let everOpened = false;
  let closedByUser = false;
  let openGen = 0; // counts opens: a "recovered" is for the latest one only
  let lastToken = opts.token;
  const statusListeners = new Set();
  /** @type {Map<string, Topic>} */
  const channels = new Map();

  // BeamlineSocket asks getToken before every connect (the first one and
  // each reconnect of the official client), so a refreshed token is used.
  class BeamlineSocket extends Socket {
    connect() {
      if (closedByUser || this.fetchingToken) return;
      if (this.connection && !this.connection.ended) return;
      this.fetchingToken = true;
      Promise.resolve()
        .then(() => getToken())
        .then((t) => { lastToken = t; return true; }, (e) => { console.warn("beamline: getToken failed", e); return false; })
        .then((ok) => {
          this.fetchingToken = false;
          if (closedByUser) return;
          // Once a WebSocket proved itself on this page (it opened and
          // answered a heartbeat), a later failure is an outage, not a
          // blocked WebSocket: reconnect on WebSocket, do not fall back.
          if (this.primaryPassedHealthCheck) this.longPollFallbackMs = 0;
          if (ok) super.connect();
          else this.reconnectTimer.scheduleTimeout();
        });
    }
  }

  const socket = new BeamlineSocket(socketEndpoint(opts.url), {
    params: () => (lastToken ? { token: lastToken } : {}),
    transport,
    longPollFallbackMs: longPollFallbackMs > 0 ? longPollFallbackMs : undefined,
    heartbeatIntervalMs: heartbeatMs,
    timeout: joinTimeoutMs,
    reconnectAfterMs: backoff,
    logger: opts.logger,
  });

  function setState(s, info = {}) {
    if (state === s && s !== "recovered") return;
    state = s;
    for (const cb of statusListeners) {
      try { cb(s, info); } catch (e) { console.error(e); }
    }
  }

  socket.onOpen(() => {
    if (closedByUser) return;
    const gen = ++openGen;
    const wasReconnect = everOpened;
    everOpened = true;
    if (!wasReconnect) {
      setState("open");
      return;
    }
    // The official channels rejoin now (their onOpen hooks run after this
    // one). "recovered" once every topic has answered; resumed tells
    // whether the notifier replayed what was missed (true) or we took
    // snapshots.
    const rejoins = [...channels.values()].map((ch) => ch.nextJoin());
    Promise.all(rejoins).then((results) => {
      if (gen !== openGen || closedByUser) return;
      setState("recovered", { resumed: results.every((r) => r !== false) });
    });
  });
  socket.onClose((ev) => {
    if (closedByUser) return;
    openGen++;
    setState(everOpened ? "reconnecting" : "connecting", { code: ev?.code, reason: ev?.reason });
  });

  /** One watched topic: its listeners, resume position and join logic over an official Channel. */
  class Topic {
    constructor(topic, handlers) {
      this.topic = topic;
      this.h = handlers; // {params(), onJoin(response), onPush(event, payload)}
      this.listeners = new Set();
      this.errorListeners = new Set();
      this.seen = new Map(); // job id -> highest seq delivered on this topic
      this.latest = new Map(); // job id -> latest snapshot delivered
      this.phx = null; // the official Channel of the current join
      this.joined = false;
      this.dead = false;
      this.waiters = []; // nextJoin resolvers
      // Presence (docs/phoenix-protocol.md#8-presence): set by presence().
      this.presence = null; // {device, meta, state}
      this.presenceListeners = new Set(); // {onSync, onJoin, onLeave}
      this.messageListeners = new Set(); // studio "msg" pushes
    }

    // params are the handlers' join params plus, when someone watches the
    // topic's presence, what asks the notifier for presence frames. The
    // official Channel calls this at every (re)join.
    params() {
      const p = { ...this.h.params(this) };
      if (this.presence) {
        p.device = this.presence.device;
        p.presence = this.presence.meta ?? {};
      }
      return p;
    }

    // nextJoin resolves with the outcome of the next join reply: whether
    // the topic resumed (false: a snapshot instead of a replay), or null.
    nextJoin() {
      if (this.dead) return Promise.resolve(null);
      return new Promise((resolve) => this.waiters.push(resolve));
    }

    settle(v) {
      const w = this.waiters;
      this.waiters = [];
      for (const r of w) r(v);
    }

    // join (re)creates the official Channel: at first, and when a topic
    // needs new join params at once (presence added, a bare presence topic
    // now watched). Reconnects do not come here: the official Channel
    // rejoins by itself, reading params() again.
    join() {
      if (this.dead || closedByUser) return;
      if (this.phx) {
        const old = this.phx;
        this.phx = null;
        old.leave();
      }
      this.joined = false;
      const ch = socket.channel(this.topic, () => this.params());
      this.phx = ch;
      const mine = () => this.phx === ch;
      if (this.presence) {
        const pr = new Presence(ch);
        pr.state = this.presence.state; // diffs of a rejoin apply to what we show
        this.presence.state = pr.state;
        pr.onJoin((key, cur, p) => { if (mine()) fan(this.presenceListeners, "onJoin", key, cur, p); });
        pr.onLeave((key, cur, p) => { if (mine()) fan(this.presenceListeners, "onLeave", key, cur, p); });
        pr.onSync(() => {
          if (!mine()) return;
          this.presence.state = pr.state;
          const list = presenceList(pr.state);
          fan(this.presenceListeners, "onSync", list);
        });
      }
      ch.on("job", (p) => { if (mine()) this.h.onPush(this, "job", p || {}); });
      ch.on("metrics", (p) => { if (mine()) this.h.onPush(this, "metrics", p || {}); });
      ch.on("msg", (p) => { if (mine()) emit(this.messageListeners, p); });
      ch.onError(() => { if (mine()) this.joined = false; });
      ch.join()
        .receive("ok", (resp) => {
          if (!mine()) return;
          this.joined = true;
          const r = resp || {};
          this.h.onJoin(this, r);
          // Topics without resume (admin:metrics) count as recovered.
          this.settle(r.recovered !== false);
        })
        .receive("error", (resp) => {
          if (!mine()) return;
          const reason = (resp && resp.reason) || "error";
          emit(this.errorListeners, reason);
          if (PERMANENT_JOIN_ERRORS.has(reason)) {
            // The official Channel would retry; a refusal like this stands.
            this.dead = true;
            this.phx = null;
            ch.leave();
          }
          this.settle(null);
        })
        .receive("timeout", () => { if (mine()) this.settle(null); });
    }

    // push sends a client event on the joined topic and resolves with the
    // reply's response; it rejects with a BeamlineError whose code is the
    // notifier's reason ("rate limited", "message too large", …).
    push(event, payload) {
      return new Promise((resolve, reject) => {
        if (!socket.isConnected()) { reject(new BeamlineError(0, "connection_closed", "not connected")); return; }
        if (!this.joined || !this.phx) { reject(new BeamlineError(0, "not_joined", "topic not joined yet")); return; }
        this.phx.push(event, payload)
          .receive("ok", (r) => resolve(r || {}))
          .receive("error", (r) => {
            const reason = (r && r.reason) || "error";
            reject(new BeamlineError(0, reason, reason));
          })
          .receive("timeout", () => reject(new BeamlineError(0, "timeout", event + " got no reply")));
      });
    }

    // deliver passes job to the listeners when it is newer than anything
    // this topic delivered for that job (de-duplication by seq).
    deliver(job, info) {
      if (!job || !job.id) return false;
      const seen = this.seen.get(job.id);
      if (seen !== undefined && job.seq <= seen) return false;
      this.seen.set(job.id, job.seq);
      this.latest.set(job.id, job);
      if (this.latest.size > 1000) {
        // Bound long-lived pages: forget the oldest finished job.
        for (const [id, j] of this.latest) {
          if (isTerminal(j.status)) { this.latest.delete(id); this.seen.delete(id); break; }
        }
      }
      emit(this.listeners, job, info);
      return true;
    }

    leave() {
      this.dead = true;
      this.settle(null);
      if (this.phx) { const ch = this.phx; this.phx = null; ch.leave(); }
      channels.delete(this.topic);
    }
  }

  function fan(listeners, name, ...args) {
    for (const l of listeners) {
      try { l[name]?.(...args); } catch (e) { console.error(e); }
    }
  }

  function emit(listeners, ...args) {
    for (const cb of listeners) {
      try { cb(...args); } catch (e) { console.error(e); }
    }
  }

  // feed passes a snapshot obtained outside a topic (submit, cancel, an HTTP
  // read) to the watchers of that job and of its user; seq de-duplicates it
  // against what the topics deliver.
  function feed(job, type) {
    const info = { type, seq: job.seq };
    channels.get("job:" + job.id)?.deliver(job, info);
    const uc = channels.get("user:" + job.user);
    if (uc) {
      uc.h.track?.(job);
      uc.deliver(job, info);
    }
  }

  // watch adds a listener to topic, creating and joining the channel first
  // if nobody watches it yet. A listener added to a live channel starts with
  // the latest state the channel knows.
  function watch(topic, makeHandlers, listener, onError, replayFilter = () => true) {
    let ch = channels.get(topic);
    if (!ch) {
      ch = new Topic(topic, makeHandlers());
      channels.set(topic, ch);
      ch.listeners.add(listener);
      if (onError) ch.errorListeners.add(onError);
      ch.join();
    } else if (ch.bare) {
      // Joined by presence() alone: take the real handlers and rejoin for
      // the topic's snapshot.
      ch.h = makeHandlers();
      ch.bare = false;
      ch.listeners.add(listener);
      if (onError) ch.errorListeners.add(onError);
      ch.join();
    } else {
      ch.listeners.add(listener);
      if (onError) ch.errorListeners.add(onError);
      for (const job of ch.latest.values()) {
        if (replayFilter(job)) {
          try { listener(job, { type: "snapshot", seq: job.seq }); } catch (e) { console.error(e); }
        }
      }
    }
    const c = ch;
    return () => {
      c.listeners.delete(listener);
      if (onError) c.errorListeners.delete(onError);
      if (idle(c) && channels.get(topic) === c) c.leave();
    };
  }

  const idle = (ch) => ch.listeners.size === 0 && ch.presenceListeners.size === 0 && ch.messageListeners.size === 0;

  // presence follows who is on a studio: or job: topic. onSync(list) runs
  // after every change with [{key, metas: [{phx_ref, online_at, device,
  // meta}]}]; popts: {device, meta, onJoin(key, current, joined),
  // onLeave(key, current, left), onError(reason)}. It joins the topic (or
  // rejoins a watched job topic, asking for presence frames).
  function presence(topic, onSync, popts = {}) {
    let ch = channels.get(topic);
    const listener = { onSync, onJoin: popts.onJoin, onLeave: popts.onLeave };
    if (!ch) {
      ch = new Topic(topic, { params: () => ({}), onJoin: () => {}, onPush: () => {} });
      ch.bare = true;
      channels.set(topic, ch);
    }
    if (popts.onError) ch.errorListeners.add(popts.onError);
    ch.presenceListeners.add(listener);
    if (!ch.presence) {
      ch.presence = { device: popts.device ?? "web", meta: popts.meta, state: {} };
      ch.join(); // a watched job topic rejoins to ask for presence
    } else {
      try { onSync(presenceList(ch.presence.state)); } catch (e) { console.error(e); }
    }
    const c = ch;
    return () => {
      c.presenceListeners.delete(listener);
      if (popts.onError) c.errorListeners.delete(popts.onError);
      if (idle(c) && channels.get(topic) === c) c.leave();
    };
  }

  // studio joins studio:<room>: presence plus the members' messages.
  // sopts: {onSync, onMessage({from, body}), device, meta, onError}.
  // send(body) and setMeta(meta) resolve with the reply or reject with a
  // BeamlineError whose code is the notifier's reason.
  function studio(room, sopts = {}) {
    const topic = "studio:" + room;
    const stopPresence = presence(topic, sopts.onSync ?? (() => {}), sopts);
    const ch = channels.get(topic);
    const onMessage = sopts.onMessage ?? (() => {});
    ch.messageListeners.add(onMessage);
    return {
      send: (body) => ch.push("msg", body),
      setMeta: (meta) => {
        if (ch.presence) ch.presence.meta = meta; // kept for rejoins
        return ch.push("presence", { meta });
      },
      leave: () => {
        ch.messageListeners.delete(onMessage);
        stopPresence();
      },
    };
  }

  function watchJob(id, onUpdate, wopts = {}) {
    const makeHandlers = () => ({
      // Resume after the last job seq this topic delivered.
      params: (ch) => (ch.seen.has(id) ? { last_seq: ch.seen.get(id) } : {}),
      onJoin: (ch, resp) => {
        // Resumed: the notifier replays every missed event next, in order,
        // so the (newer) snapshot would only make us skip some of them.
        if (resp.recovered && ch.seen.has(id)) return;
        if (resp.snapshot) ch.deliver(resp.snapshot, { type: "snapshot", seq: resp.snapshot.seq, recovered: !!resp.recovered });
      },
      onPush: (ch, event, p) => {
        if (event === "job" && p.job) ch.deliver(p.job, { type: p.type, seq: p.seq });
      },
    });
    return watch("job:" + id, makeHandlers, onUpdate, wopts.onError);
  }

  function watchUser(onUpdate, wopts = {}) {
    const user = wopts.user ?? opts.user ?? tokenSubject(lastToken ?? opts.token);
    if (user) return watchUserTopic(user, onUpdate, wopts);
    // The user comes from the token, which getToken has not produced yet.
    let stop = null;
    let cancelled = false;
    Promise.resolve(getToken()).then((t) => {
      const u = tokenSubject(t);
      if (cancelled) return;
      if (!u) {
        wopts.onError?.("no_user");
        return;
      }
      stop = watchUserTopic(u, onUpdate, wopts);
    }, () => wopts.onError?.("no_token"));
    return () => {
      cancelled = true;
      stop?.();
    };
  }

  function watchUserTopic(user, onUpdate, wopts) {
    // Pushes of a user topic are not in stream_seq order: when the
    // notifier fills a gap in one job's events it sends them after a later
    // event of another job, with a lower stream_seq. So pushes are never
    // filtered by stream_seq; the channel de-duplicates per job by the job's
    // seq (Channel.deliver, a bounded map that forgets finished jobs first).
    //
    // Resuming: the highest stream_seq seen may lie beyond events not yet
    // delivered (a gap being filled), so when the notifier advertises the
    // topic's contiguous watermark (resume_seq: every event up to it was
    // sent) the client resumes from the highest one seen; a notifier that
    // does not send it gets the highest stream_seq, as before.
    const makeHandlers = () => {
      let lastStreamSeq; // highest EVENTS stream seq seen (bookkeeping)
      let resumeSeq; // highest resume_seq the notifier advertised
      const active = new Set(); // ids of jobs we believe are not terminal
      const track = (job) => (isTerminal(job.status) ? active.delete(job.id) : active.add(job.id));
      const maxSeq = (cur, v) => (typeof v === "number" && (cur === undefined || v > cur) ? v : cur);
      return {
        track,
        params: () => {
          const from = resumeSeq ?? lastStreamSeq;
          return from === undefined ? {} : { last_seq: from };
        },
        onJoin: (ch, resp) => {
          const jobs = resp.jobs || [];
          // The notifier's scan of the user's jobs was cut short (a user
          // with very many jobs in the last 24 h): the list holds the most
          // recent ones. Say so rather than pass it off as complete.
          if (resp.truncated) wopts.onTruncated?.();
          if (!resp.recovered || lastStreamSeq === undefined) {
            // A fresh start (snapshots taken): positions restart from the reply.
            lastStreamSeq = resp.stream_seq;
            resumeSeq = typeof resp.resume_seq === "number" ? resp.resume_seq : undefined;
          } else {
            lastStreamSeq = maxSeq(lastStreamSeq, resp.stream_seq);
            resumeSeq = maxSeq(resumeSeq, resp.resume_seq);
          }
          if (!resp.recovered) {
            // Replay was not possible: jobs that ended while we could not
            // hear are not in the list, so read their final state.
            const listed = new Set(jobs.map((j) => j.id));
            for (const jid of [...active]) {
              if (!listed.has(jid)) getJob(jid).then((j) => j && j.id && feed(j, "snapshot"), () => {});
            }
          }
          for (const j of jobs) {
            // Resumed: jobs we know get their missed events from the replay.
            if (resp.recovered && ch.seen.has(j.id)) continue;
            track(j);
            ch.deliver(j, { type: "snapshot", seq: j.seq, recovered: !!resp.recovered });
          }
        },
        onPush: (ch, event, p) => {
          if (event !== "job" || !p.job) return;
          lastStreamSeq = maxSeq(lastStreamSeq, p.stream_seq);
          resumeSeq = maxSeq(resumeSeq, p.resume_seq);
          // Only a push newer than what this topic delivered for the job
          // may change what we believe about it (a duplicate of a finished
          // job's earlier event must not make it active again).
          if (ch.deliver(p.job, { type: p.type, seq: p.seq, streamSeq: p.stream_seq })) track(p.job);
        },
      };
    };
    return watch("user:" + user, makeHandlers, onUpdate, wopts.onError, (j) => !isTerminal(j.status) || wopts.includeFinished);
  }

  function watchMetrics(onMetrics, wopts = {}) {
    const makeHandlers = () => ({
      params: () => ({}),
      onJoin: (ch, resp) => { if (resp && resp.at) emit(ch.listeners, resp); },
      onPush: (ch, event, p) => { if (event === "metrics") emit(ch.listeners, p); },
    });
    return watch("admin:metrics", makeHandlers, onMetrics, wopts.onError, () => false);
  }

  async function request(method, path, body, ropts = {}) {
    const token = await getToken();
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (ropts.idempotencyKey) headers["Idempotency-Key"] = ropts.idempotencyKey;
    const res = await fetchImpl(ingestURL + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: ropts.signal,
    });
    let data = null;
    const text = await res.text();
    if (text) {
      try { data = JSON.parse(text); } catch { /* not JSON */ }
    }
    if (!res.ok) {
      const err = (data && data.error) || {};
      const ra = res.headers.get("Retry-After");
      throw new BeamlineError(res.status, err.code, err.message || text.slice(0, 200), ra ? Number(ra) : undefined);
    }
    return data;
  }

  async function submit(body, ropts) {
    const snap = await request("POST", "/v1/jobs", body, ropts);
    if (snap && snap.id) feed(snap, "submitted");
    return snap;
  }

  async function cancel(id, ropts) {
    const snap = await request("DELETE", "/v1/jobs/" + encodeURIComponent(id), undefined, ropts);
    if (snap && snap.id) feed(snap, "cancelled");
    return snap;
  }

  async function getJob(id, ropts) {
    return request("GET", "/v1/jobs/" + encodeURIComponent(id), undefined, ropts);
  }

  /** GET /v1/jobs: a page of the caller's jobs, newest first ({jobs, next_cursor}). */
  async function listJobs(query = {}, ropts) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
    const qs = q.toString();
    return request("GET", "/v1/jobs" + (qs ? "?" + qs : ""), undefined, ropts);
  }

  function onStatus(cb) {
    statusListeners.add(cb);
    try { cb(state, {}); } catch (e) { console.error(e); }
    return () => statusListeners.delete(cb);
  }

  function close() {
    closedByUser = true;
    for (const ch of [...channels.values()]) ch.leave();
    socket.disconnect(undefined, 1000, "client closed");
    setState("closed");
    if (typeof window !== "undefined" && window.removeEventListener) {
      window.removeEventListener("online", reconnectNow);
    }
  }

  // Back online: try at once instead of waiting out the backoff (the
  // official Socket already does so when the page comes back into view).
  function reconnectNow() {
    if (closedByUser || socket.isConnected()) return;
    socket.reconnectTimer.reset();
    socket.connect();
  }

  if (typeof window !== "undefined" && window.addEventListener) {
    window.addEventListener("online", reconnectNow);
  }

  socket.connect();

  return {
    watchJob,
    watchUser,
    watchMetrics,
    presence,
    studio,
    submit,
    cancel,
    getJob,
    listJobs,
    onStatus,
    close,
    get status() { return state; },
    /** "websocket" or "longpoll": the transport in use (after a fallback, long-poll). */
    get transport() { return socket.transport === LongPoll ? "longpoll" : "websocket"; },
  };
}
