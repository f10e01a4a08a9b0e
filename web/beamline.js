// beamline.js — a small browser client for Beamline's notifier (Phoenix
// Channels V2 JSON over WebSocket) and ingest HTTP API. Plain ES module, no
// dependencies, no build step.
//
//   import { connect } from "/beamline.js";
//   const client = connect({ getToken: () => myApp.currentToken() });
//   const stop = client.watchJob(id, (job) => render(job));
//
// The client keeps one WebSocket, sends heartbeats, reconnects with
// exponential backoff and jitter, and rejoins every watched topic with the
// last seq it has seen so the notifier replays exactly what was missed.
// Updates are de-duplicated by seq, so callbacks never see an older or
// repeated state of a job. When the notifier cannot replay (recovered:false)
// the client takes the join snapshot instead, and for a user's jobs that
// ended during the gap it reads their final state over HTTP.
//
// Tokens: in production the host application supplies the token (`token` or
// `getToken`, called again before every reconnect so it can be refreshed).
// The demo pages read a dev token from the URL fragment; see app.js.

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

/** Default reconnect delay: exponential from 100 ms to 5 s with ±50% jitter. */
/** presenceList turns a presence state into [{key, metas}], sorted by key. */
export function presenceList(state) {
  return Object.keys(state).sort().map((key) => ({ key, metas: state[key].metas.slice() }));
}

export function defaultBackoff(attempt) {
  const base = Math.min(5000, 100 * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (0.5 + Math.random()));
}

function defaultSocketURL() {
  if (typeof location === "undefined") throw new Error("beamline: connect needs a url outside a browser");
  return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/socket";
}

function websocketURL(url, token) {
  let u = url || defaultSocketURL();
  if (u.startsWith("/")) {
    u = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + u;
  } else if (u.startsWith("http")) {
    u = "ws" + u.slice(4);
  }
  u = u.replace(/\/+$/, "");
  if (!u.endsWith("/websocket")) u += "/websocket";
  const q = new URLSearchParams();
  if (token) q.set("token", token);
  q.set("vsn", "2.0.0");
  return u + "?" + q.toString();
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
  const WS = opts.WebSocket ?? globalThis.WebSocket;
  const ingestURL = (opts.ingestURL ?? "").replace(/\/+$/, "");
  const fetchImpl = opts.fetch ?? ((...a) => globalThis.fetch(...a));
  const getToken = opts.getToken ?? (() => opts.token);

  let ws = null;
  let state = "connecting";
  let everOpened = false;
  let closedByUser = false;
  let attempts = 0;
  let refCounter = 0;
  let reconnectTimer = null;
  let heartbeatTimer = null;
  let pendingHeartbeat = null;
  let opening = false;
  let lastToken = opts.token;
  const statusListeners = new Set();
  /** @type {Map<string, Channel>} */
  const channels = new Map();

  const nextRef = () => String(++refCounter);

  function setState(s, info = {}) {
    if (state === s && s !== "recovered") return;
    state = s;
    for (const cb of statusListeners) {
      try { cb(s, info); } catch (e) { console.error(e); }
    }
  }

  function send(frame) {
    if (ws && ws.readyState === 1) {
      ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  async function open() {
    if (closedByUser || opening || ws) return;
    opening = true;
    let token;
    try {
      token = await getToken();
    } catch (e) {
      console.warn("beamline: getToken failed", e);
      opening = false;
      scheduleReconnect();
      return;
    }
    opening = false;
    if (closedByUser || ws) return;
    lastToken = token;
    let sock;
    try {
      sock = new WS(websocketURL(opts.url, token));
    } catch (e) {
      console.warn("beamline: cannot open WebSocket", e);
      scheduleReconnect();
      return;
    }
    ws = sock;
    sock.onopen = () => {
      if (sock !== ws) return;
      attempts = 0;
      const wasReconnect = everOpened;
      everOpened = true;
      startHeartbeat();
      const rejoins = [...channels.values()].map((ch) => ch.join());
      if (!wasReconnect) {
        setState("open");
        return;
      }
      // "recovered" once every topic has rejoined; resumed tells whether
      // the notifier replayed what was missed (true) or we took snapshots.
      Promise.all(rejoins).then((results) => {
        if (sock !== ws || state === "closed") return;
        setState("recovered", { resumed: results.every((r) => r !== false) });
      });
    };
    sock.onmessage = (ev) => {
      if (sock !== ws) return;
      let frame;
      try { frame = JSON.parse(ev.data); } catch { return; }
      if (!Array.isArray(frame) || frame.length < 5) return;
      dispatch(frame);
    };
    sock.onclose = (ev) => {
      if (sock !== ws) return;
      ws = null;
      stopHeartbeat();
      for (const ch of channels.values()) ch.socketClosed();
      if (closedByUser) return;
      setState(everOpened ? "reconnecting" : "connecting", { code: ev.code, reason: ev.reason });
      scheduleReconnect();
    };
    sock.onerror = () => { /* onclose follows */ };
  }

  function scheduleReconnect() {
    if (closedByUser || reconnectTimer) return;
    attempts++;
    if (everOpened) setState("reconnecting", { attempt: attempts });
    reconnectTimer = setTimeout(() => { reconnectTimer = null; open(); }, backoff(attempts));
  }

  function reconnectNow() {
    if (closedByUser || ws) return;
    if (reconnectTimer) { clearTimeout(reconnectTimer); reconnectTimer = null; }
    open();
  }

  function startHeartbeat() {
    stopHeartbeat();
    heartbeatTimer = setInterval(() => {
      if (pendingHeartbeat) {
        // No reply to the last one within an interval: the link is dead.
        pendingHeartbeat = null;
        if (ws) ws.close(1000, "heartbeat timeout");
        return;
      }
      pendingHeartbeat = nextRef();
      send([null, pendingHeartbeat, "phoenix", "heartbeat", {}]);
    }, heartbeatMs);
  }

  function stopHeartbeat() {
    if (heartbeatTimer) clearInterval(heartbeatTimer);
    heartbeatTimer = null;
    pendingHeartbeat = null;
  }

  function dispatch([joinRef, ref, topic, event, payload]) {
    if (topic === "phoenix") {
      if (event === "phx_reply" && ref === pendingHeartbeat) pendingHeartbeat = null;
      return;
    }
    const ch = channels.get(topic);
    if (!ch) return;
    if (joinRef !== null && joinRef !== ch.joinRef) return; // addressed to an older join
    ch.handle(ref, event, payload || {});
  }

  /** One joined topic with its listeners, resume position and join logic. */
  class Channel {
    constructor(topic, handlers) {
      this.topic = topic;
      this.h = handlers; // {params(), onJoin(response), onPush(event, payload), onError(reason)}
      this.listeners = new Set();
      this.errorListeners = new Set();
      this.seen = new Map(); // job id -> highest seq delivered on this topic
      this.latest = new Map(); // job id -> latest snapshot delivered
      this.joinRef = null;
      this.joined = false;
      this.pending = new Map(); // ref -> reply callback
      this.rejoinTimer = null;
      this.rejoinAttempts = 0;
      this.dead = false;
      // Presence (docs/phoenix-protocol.md#8-presence): set by presence().
      this.presence = null; // {device, meta, state, joinRef, pendingDiffs}
      this.presenceListeners = new Set(); // {onSync, onJoin, onLeave}
      this.messageListeners = new Set(); // studio "msg" pushes
    }

    // params are the handlers' join params plus, when someone watches the
    // topic's presence, what asks the notifier for presence frames.
    params() {
      const p = { ...this.h.params(this) };
      if (this.presence) {
        p.device = this.presence.device;
        p.presence = this.presence.meta ?? {};
      }
      return p;
    }

    // onPresence applies presence_state / presence_diff as the official
    // Presence class does: diffs wait for the state of the current join.
    onPresence(event, payload) {
      const pr = this.presence;
      if (!pr) return;
      if (event === "presence_state") {
        const leaves = {};
        const joins = {};
        for (const [key, cur] of Object.entries(pr.state)) {
          const next = payload[key];
          const refs = new Set((next?.metas ?? []).map((m) => m.phx_ref));
          const left = cur.metas.filter((m) => !refs.has(m.phx_ref));
          if (left.length) leaves[key] = { metas: left };
        }
        for (const [key, next] of Object.entries(payload)) {
          const refs = new Set((pr.state[key]?.metas ?? []).map((m) => m.phx_ref));
          const joined = next.metas.filter((m) => !refs.has(m.phx_ref));
          if (joined.length) joins[key] = { metas: joined };
        }
        pr.joinRef = this.joinRef;
        this.applyDiff({ joins, leaves });
        for (const d of pr.pendingDiffs) this.applyDiff(d);
        pr.pendingDiffs = [];
      } else {
        if (pr.joinRef !== this.joinRef) { pr.pendingDiffs.push(payload); return; }
        this.applyDiff(payload);
      }
      const list = presenceList(pr.state);
      for (const l of this.presenceListeners) {
        try { l.onSync?.(list); } catch (e) { console.error(e); }
      }
    }

    applyDiff({ joins = {}, leaves = {} }) {
      const st = this.presence.state;
      for (const [key, p] of Object.entries(joins)) {
        const cur = st[key];
        const refs = new Set(p.metas.map((m) => m.phx_ref));
        st[key] = { metas: [...(cur ? cur.metas.filter((m) => !refs.has(m.phx_ref)) : []), ...p.metas] };
        for (const l of this.presenceListeners) {
          try { l.onJoin?.(key, cur, p); } catch (e) { console.error(e); }
        }
      }
      for (const [key, p] of Object.entries(leaves)) {
        const cur = st[key];
        if (!cur) continue;
        const refs = new Set(p.metas.map((m) => m.phx_ref));
        cur.metas = cur.metas.filter((m) => !refs.has(m.phx_ref));
        for (const l of this.presenceListeners) {
          try { l.onLeave?.(key, cur, p); } catch (e) { console.error(e); }
        }
        if (cur.metas.length === 0) delete st[key];
      }
    }

    // push sends a client event on the joined topic and resolves with the
    // reply's response; it rejects with a BeamlineError whose code is the
    // notifier's reason ("rate limited", "message too large", …).
    push(event, payload) {
      return new Promise((resolve, reject) => {
        if (!this.joined) { reject(new BeamlineError(0, "not_joined", "topic not joined yet")); return; }
        const ref = nextRef();
        const timer = setTimeout(() => {
          if (this.pending.delete(ref)) reject(new BeamlineError(0, "timeout", event + " got no reply"));
        }, joinTimeoutMs);
        this.pending.set(ref, (reply) => {
          clearTimeout(timer);
          if (reply.status === "ok") resolve(reply.response || {});
          else {
            const reason = (reply.response && reply.response.reason) || reply.status;
            reject(new BeamlineError(0, reason, reason));
          }
        });
        if (!send([this.joinRef, ref, this.topic, event, payload])) {
          this.pending.delete(ref);
          clearTimeout(timer);
          reject(new BeamlineError(0, "connection_closed", "not connected"));
        }
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

    // join resolves to whether the topic resumed (false: a snapshot was
    // taken instead of a replay), or null on error.
    join() {
      if (this.dead) return Promise.resolve(null);
      clearTimeout(this.rejoinTimer);
      this.rejoinTimer = null;
      const ref = nextRef();
      this.joinRef = ref;
      this.joined = false;
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          if (!this.pending.has(ref)) return;
          this.pending.delete(ref);
          if (this.joinRef === ref) {
            send([ref, nextRef(), this.topic, "phx_leave", {}]);
            this.scheduleRejoin();
          }
          resolve(null);
        }, joinTimeoutMs);
        this.pending.set(ref, (reply) => {
          clearTimeout(timer);
          if (reply.status === "ok") {
            this.joined = true;
            this.rejoinAttempts = 0;
            const resp = reply.response || {};
            this.h.onJoin(this, resp);
            // Topics without resume (admin:metrics) count as recovered.
            resolve(resp.recovered !== false);
            return;
          }
          const reason = (reply.response && reply.response.reason) || reply.status;
          if (reason !== "connection_closed") {
            emit(this.errorListeners, reason);
            if (PERMANENT_JOIN_ERRORS.has(reason)) this.dead = true;
            else this.scheduleRejoin();
          }
          resolve(null);
        });
        if (!send([ref, ref, this.topic, "phx_join", this.params()])) {
          // Not connected: the socket's onopen rejoins every channel.
          this.pending.delete(ref);
          clearTimeout(timer);
          resolve(null);
        }
      });
    }

    scheduleRejoin() {
      if (this.dead || this.rejoinTimer || !ws) return;
      const n = ++this.rejoinAttempts;
      const delay = [1000, 2000, 5000][n - 1] ?? 10000;
      this.rejoinTimer = setTimeout(() => {
        this.rejoinTimer = null;
        if (ws && ws.readyState === 1) this.join();
      }, delay);
    }

    handle(ref, event, payload) {
      if (event === "phx_reply") {
        const cb = this.pending.get(ref);
        if (cb) { this.pending.delete(ref); cb(payload); }
        return;
      }
      if (event === "phx_error" || event === "phx_close") {
        this.joined = false;
        this.scheduleRejoin();
        return;
      }
      if (event === "presence_state" || event === "presence_diff") {
        this.onPresence(event, payload);
        return;
      }
      if (event === "msg") {
        emit(this.messageListeners, payload);
        return;
      }
      this.h.onPush(this, event, payload);
    }

    socketClosed() {
      this.joined = false;
      clearTimeout(this.rejoinTimer);
      this.rejoinTimer = null;
      this.rejoinAttempts = 0;
      const pending = [...this.pending.values()];
      this.pending.clear();
      for (const cb of pending) cb({ status: "error", response: { reason: "connection_closed" } });
    }

    leave() {
      this.dead = true;
      clearTimeout(this.rejoinTimer);
      if (this.joinRef && this.joined) send([this.joinRef, nextRef(), this.topic, "phx_leave", {}]);
      channels.delete(this.topic);
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
      ch = new Channel(topic, makeHandlers());
      channels.set(topic, ch);
      ch.listeners.add(listener);
      if (onError) ch.errorListeners.add(onError);
      if (ws && ws.readyState === 1) ch.join();
    } else if (ch.bare) {
      // Joined by presence() alone: take the real handlers and rejoin for
      // the topic's snapshot.
      ch.h = makeHandlers();
      ch.bare = false;
      ch.listeners.add(listener);
      if (onError) ch.errorListeners.add(onError);
      if (ws && ws.readyState === 1) ch.join();
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
      ch = new Channel(topic, { params: () => ({}), onJoin: () => {}, onPush: () => {} });
      ch.bare = true;
      channels.set(topic, ch);
    }
    if (popts.onError) ch.errorListeners.add(popts.onError);
    ch.presenceListeners.add(listener);
    if (!ch.presence) {
      ch.presence = { device: popts.device ?? "web", meta: popts.meta, state: {}, joinRef: null, pendingDiffs: [] };
      if (ws && ws.readyState === 1) ch.join(); // a watched job topic rejoins to ask for presence
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
    if (reconnectTimer) clearTimeout(reconnectTimer);
    reconnectTimer = null;
    stopHeartbeat();
    for (const ch of [...channels.values()]) ch.leave();
    if (ws) { const s = ws; ws = null; s.close(1000, "client closed"); }
    setState("closed");
    if (typeof window !== "undefined" && window.removeEventListener) {
      window.removeEventListener("online", reconnectNow);
      document.removeEventListener("visibilitychange", onVisible);
    }
  }

  function onVisible() {
    if (document.visibilityState === "visible") reconnectNow();
  }

  if (typeof window !== "undefined" && window.addEventListener) {
    // Back online or back in view: try at once instead of waiting out the backoff.
    window.addEventListener("online", reconnectNow);
    document.addEventListener("visibilitychange", onVisible);
  }

  open();

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
  };
}
