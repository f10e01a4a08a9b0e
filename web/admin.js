// admin.js — the pipeline dashboard: figures pushed on admin:metrics, with
// hand-rolled SVG charts of the last two minutes. No polling.
import { connect } from "./beamline.js";
import { pageToken, askForToken, forgetToken } from "./token.js";
import { connectionIndicator } from "./conn.js";

const TOKEN_KEY = "beamline.adminToken";
const WINDOW_MS = 2 * 60 * 1000;
const $ = (id) => document.getElementById(id);

const token = pageToken(TOKEN_KEY);
if (!token) askForToken(TOKEN_KEY);
else start(token);

/** One time series: [t, value] samples within the window. */
class Series {
  constructor() { this.points = []; }
  push(t, v) {
    if (typeof v !== "number" || !Number.isFinite(v)) return;
    this.points.push([t, v]);
    while (this.points.length && this.points[0][0] < t - WINDOW_MS) this.points.shift();
  }
}

let firstSample = 0; // when the first figures arrived

const series = {
  high: new Series(), normal: new Series(), low: new Series(),
  held: new Series(), inflight: new Series(),
  succeeded: new Series(), failed: new Series(), retried: new Series(), dead: new Series(),
  dlq: new Series(), restarts: new Series(), conns: new Series(),
};

const COLORS = {
  high: "#dc2626", normal: "#0284c7", low: "#94a3b8", held: "#d97706", inflight: "#0284c7",
  succeeded: "#16a34a", failed: "#dc2626", retried: "#d97706", dead: "#7c3aed",
  dlq: "#7c3aed", restarts: "#d97706", conns: "#0284c7",
};

function start(token) {
  const client = connect({ token });
  connectionIndicator(client, $("conn"), $("conn-text"));
  client.watchMetrics(render, {
    onError: (reason) => {
      const el = $("error");
      el.hidden = false;
      el.textContent = reason === "unauthorized"
        ? "This token is not an admin token: the dashboard needs one (devstack prints it)."
        : `Cannot join admin:metrics: ${reason}`;
      if (reason === "unauthorized") forgetToken(TOKEN_KEY);
    },
  });
  // admin:presence: every user on a studio: or job: topic, with the topics.
  client.presence("admin:presence", renderOnline);
  setInterval(() => drawAll(Date.now()), 1000); // keep charts sliding even if a push is late
  jobView(client, token);
  dlqView(token);
  schedView(token);
  streamsView(token);
}

// streamsView: each stream's messages, bytes and retention
// (GET /v1/admin/streams), read on open and on Refresh.
function streamsView(token) {
  const bytes = (n) => (n >= 1 << 30 ? (n / (1 << 30)).toFixed(1) + " GiB" : n >= 1 << 20 ? (n / (1 << 20)).toFixed(1) + " MiB" : n >= 1024 ? (n / 1024).toFixed(1) + " KiB" : n + " B");
  async function load() {
    try {
      const data = await api(token, "GET", "/v1/admin/streams");
      const table = $("streams-table");
      const body = table.querySelector("tbody");
      body.replaceChildren();
      for (const st of data.streams) {
        const tr = document.createElement("tr");
        tr.dataset.stream = st.name;
        cell(tr, st.name); cell(tr, String(st.messages)); cell(tr, bytes(st.bytes)); cell(tr, st.max_age || "no limit");
        body.append(tr);
      }
      table.hidden = false;
    } catch (err) { $("streams-refresh").title = `Cannot read the streams: ${err.message}`; }
  }
  $("streams-refresh").addEventListener("click", load);
  load();
}

// schedView: a user's repeating schedules (GET /v1/schedules?user=), each
// with a delete button.
function schedView(token) {
  const status = (t) => { $("sched-status").textContent = t; };
  async function load() {
    const user = $("sched-user").value.trim();
    const q = user ? "?user=" + encodeURIComponent(user) : "";
    try {
      const data = await api(token, "GET", "/v1/schedules" + q);
      const table = $("sched-table");
      const body = table.querySelector("tbody");
      body.replaceChildren();
      for (const sc of data.schedules) {
        const tr = document.createElement("tr");
        tr.dataset.name = sc.name;
        cell(tr, sc.name); cell(tr, sc.cron || "every " + sc.every); cell(tr, sc.time_zone || "UTC");
        cell(tr, `${sc.job.kind} (${sc.job.priority || "normal"})`);
        const td = document.createElement("td");
        const b = document.createElement("button");
        b.type = "button";
        b.className = "link";
        b.textContent = "Delete";
        b.addEventListener("click", async () => {
          if (!window.confirm(`Delete the schedule ${sc.name} of ${sc.user}? It fires no more.`)) return;
          try {
            await fetch(`/v1/schedules/${encodeURIComponent(sc.name)}?user=${encodeURIComponent(sc.user)}`,
              { method: "DELETE", headers: { Authorization: "Bearer " + token } });
          } finally { load(); }
        });
        td.append(b);
        tr.append(td);
        body.append(tr);
      }
      table.hidden = data.schedules.length === 0;
      status(data.schedules.length ? `${data.schedules.length} schedule(s)` : "No schedules.");
    } catch (err) { status(`Cannot list schedules: ${err.message}`); }
  }
  $("sched-form").addEventListener("submit", (e) => { e.preventDefault(); load(); });
}

// ingest's API, on this origin (devstack proxies it; in production a
// gateway does).
async function api(token, method, path, body) {
  const headers = { Authorization: "Bearer " + token, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new Error((data && data.error && `${data.error.code}: ${data.error.message}`) || `HTTP ${res.status}`);
  return data;
}

const cell = (tr, text, cls) => {
  const td = document.createElement("td");
  td.textContent = text ?? "";
  if (cls) td.className = cls;
  tr.append(td);
};

// jobView: a job's timeline — every event, replayed from seq 0 and then
// live, read from the notifier's Server-Sent Events (fetch, so the token
// travels in a header) — and a user's recent jobs (GET /v1/jobs?user=).
function jobView(client, token) {
  let abort = null;
  const status = (t) => { $("job-status").textContent = t; };
  async function show(id) {
    if (abort) abort.abort();
    abort = new AbortController();
    const table = $("job-timeline");
    const body = table.querySelector("tbody");
    body.replaceChildren();
    table.hidden = true;
    table.dataset.job = id;
    status(`Reading job ${id}…`);
    let res;
    try {
      res = await fetch(`/v1/jobs/${encodeURIComponent(id)}/events`, {
        headers: { Authorization: "Bearer " + token, "Last-Event-ID": "0", Accept: "text/event-stream" },
        signal: abort.signal,
      });
    } catch (e) { if (e.name !== "AbortError") status(`Cannot read job ${id}: ${e.message}`); return; }
    if (!res.ok) {
      const data = await res.json().catch(() => null);
      status(`Job ${id}: ${(data && data.error && data.error.message) || res.status}`);
      return;
    }
    table.hidden = false;
    status(`Job ${id}`);
    let prev = null;
    const add = (ev, p) => {
      const j = p.job || {};
      const at = Date.parse(j.updated_at);
      const tr = document.createElement("tr");
      tr.dataset.status = j.status || "";
      cell(tr, Number.isFinite(at) ? new Date(at).toISOString().replace("T", " ").replace("Z", "") : "");
      cell(tr, ev);
      cell(tr, j.status);
      cell(tr, String(j.attempt ?? ""));
      cell(tr, j.progress !== undefined ? j.progress + "%" : "");
      cell(tr, prev !== null && Number.isFinite(at) ? `${((at - prev) / 1000).toFixed(3)} s` : "");
      cell(tr, String(p.seq ?? j.seq ?? ""));
      cell(tr, j.provider || (j.remote && j.remote.provider) || "", "provider");
      cell(tr, p.trace_id || "", "trace");
      cell(tr, j.error, "err");
      body.append(tr);
      if (Number.isFinite(at)) prev = at;
      status(`Job ${id}: ${j.status}${j.rerun_of ? ` (rerun of ${j.rerun_of})` : ""} · ${j.kind} · ${j.user}`);
    };
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let ev = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) ev = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (!data) continue;
          try { add(ev, JSON.parse(data)); } catch { /* not an event */ }
        }
      }
    } catch (e) { if (e.name !== "AbortError") status(`Job ${id}: the stream ended (${e.message})`); }
  }
  $("job-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("job-id").value.trim();
    if (id) show(id);
  });
  $("job-user-go").addEventListener("click", async () => {
    const user = $("job-user").value.trim();
    const list = $("job-recent");
    list.replaceChildren();
    if (!user) return;
    try {
      const page = await client.listJobs({ user, limit: 20 });
      for (const j of page.jobs) {
        const li = document.createElement("li");
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = `${j.id.slice(0, 8)} ${j.kind} ${j.status}`;
        b.dataset.jobId = j.id;
        b.addEventListener("click", () => { $("job-id").value = j.id; show(j.id); });
        li.append(b);
        list.append(li);
      }
      if (!page.jobs.length) status(`${user} has no recent jobs`);
    } catch (err) { status(`Cannot list ${user}'s jobs: ${err.message}`); }
  });
}

// dlqView: dead jobs by filter (GET /v1/admin/dlq) and a redrive of the
// same filter, after a confirmation that says how many jobs it reruns.
function dlqView(token) {
  const status = (t) => { $("dlq-status").textContent = t; };
  const filter = () => {
    const f = {};
    for (const k of ["kind", "user", "reason"]) {
      const v = $("dlq-" + k).value.trim();
      if (v) f[k] = v;
    }
    return f;
  };
  let shown = 0;
  async function load() {
    const f = filter();
    const q = new URLSearchParams(f).toString();
    try {
      const data = await api(token, "GET", "/v1/admin/dlq" + (q ? "?" + q : ""));
      const table = $("dlq-table");
      const body = table.querySelector("tbody");
      body.replaceChildren();
      for (const d of data.jobs) {
        const tr = document.createElement("tr");
        tr.dataset.jobId = d.id;
        cell(tr, d.id); cell(tr, d.user); cell(tr, d.kind); cell(tr, d.reason, "err");
        cell(tr, String(d.attempts)); cell(tr, new Date(Date.parse(d.died_at)).toLocaleString());
        body.append(tr);
      }
      shown = data.jobs.length;
      table.hidden = shown === 0;
      $("dlq-redrive").disabled = shown === 0;
      status(shown ? `${shown} dead job${shown === 1 ? "" : "s"}${data.truncated ? " (more: narrow the filter)" : ""}` : "No dead jobs match.");
    } catch (err) { status(`Cannot read the DLQ: ${err.message}`); }
  }
  $("dlq-form").addEventListener("submit", (e) => { e.preventDefault(); load(); });
  $("dlq-redrive").addEventListener("click", async () => {
    if (!window.confirm(`Rerun ${shown} dead job${shown === 1 ? "" : "s"} and remove ${shown === 1 ? "it" : "them"} from the DLQ?`)) return;
    try {
      const res = await api(token, "POST", "/v1/admin/dlq/redrive", { ...filter(), limit: Math.max(shown, 1) });
      status(`Redriven ${res.redriven} of ${res.matched}${res.failed ? `; ${res.failed.length} failed` : ""}.`);
      $("dlq-view").dataset.redriven = String(res.redriven);
      await load();
    } catch (err) { status(`Redrive failed: ${err.message}`); }
  });
  load();
}

function renderOnline(list) {
  const ul = $("m-online");
  ul.replaceChildren();
  if (list.length === 0) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "nobody";
    ul.append(li);
    return;
  }
  for (const { key, metas } of list) {
    const topics = [...new Set(metas.map((m) => m.topic))].sort();
    const li = document.createElement("li");
    li.dataset.user = key;
    const b = document.createElement("b");
    b.textContent = key;
    li.append(b, ` — ${topics.join(", ")} (${metas.length} connection${metas.length === 1 ? "" : "s"})`);
    ul.append(li);
  }
}

const fmt = (v, digits = 0) => (typeof v === "number" && Number.isFinite(v) ? v.toFixed(digits) : "—");
const rate = (v) => (typeof v === "number" ? (v >= 10 ? v.toFixed(0) : v.toFixed(1)) : "—");

function render(m) {
  const t = m.at ? Date.parse(m.at) || Date.now() : Date.now();
  if (!firstSample) firstSample = t;
  const q = m.queue_depth || {};
  const qTotal = ["high", "normal", "low"].reduce((s, p) => s + (typeof q[p] === "number" ? q[p] : 0), 0);
  $("m-queue").textContent = m.queue_depth ? String(qTotal) : "—";
  for (const p of ["high", "normal", "low"]) {
    $("m-queue-" + p).textContent = fmt(q[p]);
    series[p].push(t, q[p]);
  }
  // Held (num_ack_pending) counts the running jobs and those a processor
  // keeps until a slot frees (a user's limit, a breaker, a busy pool).
  const h = m.held || {};
  const held = m.held ? ["high", "normal", "low"].reduce((s, p) => s + (typeof h[p] === "number" ? h[p] : 0), 0) : undefined;
  $("m-held").textContent = fmt(held);
  series.held.push(t, held);
  $("m-inflight").textContent = fmt(m.inflight);
  series.inflight.push(t, m.inflight);
  $("m-held-waiting").textContent = typeof held === "number" && typeof m.inflight === "number" ? fmt(Math.max(0, held - m.inflight)) : "—";

  const r = m.jobs_per_second || {};
  const outcomes = ["succeeded", "failed", "retried", "dead"];
  const total = outcomes.reduce((s, k) => s + (typeof r[k] === "number" ? r[k] : 0), 0);
  $("m-rate").textContent = m.jobs_per_second ? rate(total) : "—";
  for (const k of outcomes) {
    $("m-" + k).textContent = rate(r[k]);
    series[k].push(t, r[k]);
  }
  $("m-dlq").textContent = fmt(m.dlq);
  series.dlq.push(t, m.dlq);
  $("m-restarts").textContent = fmt(m.supervisor_restarts);
  series.restarts.push(t, m.supervisor_restarts);
  $("m-conns").textContent = fmt(m.notifier_connections);
  series.conns.push(t, m.notifier_connections);

  renderBreakers(m.breakers);
  $("stamp").textContent = `Last update ${new Date(t).toLocaleTimeString()}`;
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  drawAll(t);
}

function renderBreakers(b) {
  if (!b) return;
  const ul = $("m-breakers");
  ul.replaceChildren();
  const names = Object.keys(b).sort();
  if (names.length === 0) {
    const li = document.createElement("li");
    li.className = "muted";
    li.dataset.state = "none";
    li.textContent = "no breakers";
    ul.append(li);
  }
  for (const name of names) {
    const li = document.createElement("li");
    li.dataset.state = String(b[name]).replace("_", "-");
    li.textContent = `${name}: ${b[name]}`;
    ul.append(li);
  }
}

function drawAll(now) {
  draw($("c-queue"), ["high", "normal", "low"], now);
  draw($("c-inflight"), ["held", "inflight"], now);
  draw($("c-rate"), ["succeeded", "failed", "retried", "dead"], now);
  draw($("c-dlq"), ["dlq"], now);
  draw($("c-restarts"), ["restarts"], now);
  draw($("c-conns"), ["conns"], now);
}

const SVG = "http://www.w3.org/2000/svg";
const W = 240, H = 64, PAD = 4;

function draw(svg, names, now) {
  let max = 1;
  for (const n of names) for (const [, v] of series[n].points) max = Math.max(max, v);
  max = niceMax(max);
  // The time axis grows from 30 s to the full two minutes as data comes in,
  // so a fresh dashboard is not a sliver at the right edge.
  const span = Math.min(WINDOW_MS, Math.max(30000, firstSample ? now - firstSample : WINDOW_MS));
  const x = (t) => ((t - (now - span)) / span) * W;
  const y = (v) => H - PAD - (v / max) * (H - 2 * PAD);
  svg.replaceChildren();
  for (const f of [0, 0.5, 1]) {
    const l = document.createElementNS(SVG, "line");
    l.setAttribute("class", "grid-line");
    l.setAttribute("x1", "0"); l.setAttribute("x2", String(W));
    l.setAttribute("y1", String(y(max * f))); l.setAttribute("y2", String(y(max * f)));
    l.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(l);
  }
  for (const n of names) {
    const pts = series[n].points;
    if (pts.length === 0) continue;
    const path = document.createElementNS(SVG, "polyline");
    const coords = pts.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`);
    if (pts.length === 1) coords.push(`${W},${y(pts[0][1]).toFixed(1)}`);
    path.setAttribute("points", coords.join(" "));
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", COLORS[n]);
    path.setAttribute("stroke-width", "2");
    path.setAttribute("stroke-linejoin", "round");
    path.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(path);
  }
  // The scale, as HTML under the chart (SVG text would stretch with it).
  let axis = svg.nextElementSibling;
  if (!axis || !axis.classList.contains("axis")) {
    axis = document.createElement("div");
    axis.className = "axis";
    axis.setAttribute("aria-hidden", "true");
    svg.after(axis);
  }
  axis.textContent = "";
  const left = document.createElement("span");
  left.textContent = span >= WINDOW_MS ? "2 min ago" : `${Math.round(span / 1000)} s ago`;
  const right = document.createElement("span");
  right.textContent = `scale 0–${max}`;
  axis.append(left, right);
}

function niceMax(v) {
  if (v <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}
