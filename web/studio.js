// studio.js — the demo page's studio view: join a studio:<room>, see who is
// here (presence) and the jobs of the room's members, live.
//
// A member's jobs reach the others as room messages: each page shares the
// latest state of its own jobs (coalesced, at most 4 sends a second, below
// the room's 5 a second) and shares its unfinished jobs again when someone
// new arrives. Receivers keep one row per job and drop an older seq.
import { isTerminal, tokenSubject } from "./beamline.js";

const $ = (id) => document.getElementById(id);
const SEND_EVERY_MS = 250;

/** roomsOf reads the token's rooms claim (a list or "*"), unverified. */
function roomsOf(token) {
  try {
    const part = String(token).split(".")[1];
    const claims = JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/")));
    return claims.rooms;
  } catch {
    return undefined;
  }
}

/**
 * Wires the studio card to client. Returns {share(job)}: app.js calls it
 * with every state of the page's own jobs.
 */
export function startStudio(client, token) {
  const me = tokenSubject(token);
  const form = $("studio-form");
  const input = form.elements.room;
  const status = $("studio-status");
  const membersEl = $("studio-members");
  const jobsEl = $("studio-jobs");
  const rooms = roomsOf(token);
  if (Array.isArray(rooms) && rooms.length) input.value = rooms[0];

  let room = null; // the joined Studio, or null
  let roomName = "";
  const own = new Map(); // id -> latest own job
  const pending = new Map(); // id -> own job waiting to be sent
  let sendTimer = null;
  const rows = new Map(); // job id -> {job, from, el}
  let present = new Set();

  const setStatus = (text, bad = false) => {
    status.textContent = text;
    status.classList.toggle("error", bad);
  };

  function share(job) {
    own.set(job.id, job);
    if (!room) return;
    pending.set(job.id, job);
    schedule();
  }

  function schedule() {
    if (sendTimer || !room) return;
    sendTimer = setTimeout(flush, SEND_EVERY_MS);
  }

  function flush() {
    sendTimer = null;
    if (!room || pending.size === 0) return;
    const [id, job] = pending.entries().next().value;
    pending.delete(id);
    const slim = { id: job.id, kind: job.kind, status: job.status, progress: job.progress, seq: job.seq };
    room.send({ job: slim }).catch((e) => {
      // Rate limited or not joined yet: try this job again with the next send.
      if (!pending.has(id)) pending.set(id, job);
      if (e.code !== "rate limited" && e.code !== "not_joined") setStatus(`Cannot share: ${e.code}`, true);
    });
    if (pending.size) schedule();
  }

  function shareActive() {
    for (const job of own.values()) if (!isTerminal(job.status)) pending.set(job.id, job);
    schedule();
  }

  function renderMembers(list) {
    const next = new Set(list.map((p) => p.key));
    const arrived = [...next].some((k) => !present.has(k) && k !== me);
    present = next;
    membersEl.replaceChildren(...list.map((p) => {
      const li = document.createElement("li");
      li.dataset.user = p.key;
      const devices = [...new Set(p.metas.map((m) => m.device))].join(", ");
      li.textContent = `${p.key}${p.key === me ? " (you)" : ""} · ${devices}`;
      return li;
    }));
    $("studio-count").textContent = `${list.length} here`;
    // Jobs of members who left go away with them.
    for (const [id, r] of rows) {
      if (!present.has(r.from)) { r.el.remove(); rows.delete(id); }
    }
    $("studio-empty").hidden = rows.size > 0;
    if (arrived) shareActive(); // the newcomer has not seen our jobs yet
  }

  function renderJob({ from, body }) {
    const j = body && body.job;
    if (!j || typeof j.id !== "string" || typeof j.seq !== "number") return;
    let r = rows.get(j.id);
    if (r && j.seq <= r.job.seq) return; // an older or repeated state
    if (!r) {
      const li = document.createElement("li");
      li.className = "job studio-job";
      li.dataset.jobId = j.id;
      li.dataset.user = from;
      li.innerHTML = `<div class="job-head"><span class="kind"></span><code class="id"></code><span class="badge" data-role="status"></span></div>
        <div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100"><div class="fill"></div></div>`;
      r = { job: j, from, el: li };
      rows.set(j.id, r);
      jobsEl.prepend(li);
    }
    r.job = j;
    const li = r.el;
    li.dataset.status = String(j.status);
    li.querySelector(".kind").textContent = `${from} · ${j.kind}`;
    li.querySelector(".id").textContent = j.id.slice(-8);
    li.querySelector('[data-role="status"]').textContent = String(j.status);
    const p = Math.max(0, Math.min(100, Number(j.progress) || 0));
    const bar = li.querySelector(".bar");
    bar.setAttribute("aria-valuenow", String(p));
    bar.dataset.progress = String(p);
    li.querySelector(".fill").style.width = p + "%";
    $("studio-empty").hidden = rows.size > 0;
  }

  function leave() {
    if (!room) return;
    room.leave();
    room = null;
    clearTimeout(sendTimer);
    sendTimer = null;
    pending.clear();
    rows.clear();
    present = new Set();
    membersEl.replaceChildren();
    jobsEl.replaceChildren();
    $("studio-count").textContent = "";
    $("studio-empty").hidden = false;
    form.dataset.room = "";
    $("studio-join").textContent = "Join";
    setStatus("");
  }

  function join(name) {
    leave();
    roomName = name;
    form.dataset.room = name;
    $("studio-join").textContent = "Leave";
    setStatus(`Joining ${name}…`);
    room = client.studio(name, {
      device: "demo page",
      onSync: (list) => {
        setStatus(`In room ${roomName}.`);
        renderMembers(list);
      },
      onMessage: renderJob,
      onError: (reason) => {
        leave();
        setStatus(`Cannot join ${name}: ${reason}${reason === "unauthorized" ? " (the token's rooms claim must name the room)" : ""}.`, true);
      },
    });
    shareActive();
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (room) { leave(); return; }
    const name = input.value.trim();
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) {
      setStatus("A room name is 1–64 letters, digits, '-' or '_'.", true);
      input.focus();
      return;
    }
    join(name);
  });

  // A token that names rooms joins the first one at once.
  if (Array.isArray(rooms) && rooms.length) join(rooms[0]);
  else if (rooms === "*") join(input.value);
  else setStatus("Your token names no studio rooms; joining will be refused unless it is an admin token.");

  return { share };
}
