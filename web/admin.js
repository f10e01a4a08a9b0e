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
