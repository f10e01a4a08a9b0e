// app.js — the demo page: submit simulated jobs and watch them live.
import { connect, isTerminal, tokenSubject } from "./beamline.js";
import { pageToken, askForToken } from "./token.js";
import { connectionIndicator } from "./conn.js";

const TOKEN_KEY = "beamline.token";
const $ = (id) => document.getElementById(id);

const token = pageToken(TOKEN_KEY);
if (!token) {
  $("submit").disabled = true;
  askForToken(TOKEN_KEY);
} else {
  start(token);
}

function start(token) {
  const client = connect({ token });
  window.beamline = client; // handy in the console
  connectionIndicator(client, $("conn"), $("conn-text"));

  const jobs = new Map(); // id -> {job, el}
  client.watchUser((job, info) => render(job, info), {
    onError: (reason) => setFormStatus(`Cannot watch your jobs: ${reason}`, true),
  });

  // Jobs that finished before the page opened are not in the user topic's
  // join (it brings active jobs): list the recent ones, oldest first so
  // the newest ends on top; live updates go on as usual.
  client.listJobs({ limit: 50 }).then(
    (page) => { for (const j of [...(page.jobs || [])].reverse()) render(j, { type: "snapshot", seq: j.seq }); },
    (err) => setFormStatus(`Cannot list your jobs: ${err.message}`, true),
  );

  const user = tokenSubject(token);
  if (user) $("jobs-title").textContent = `My jobs (${user})`;

  $("new-job").addEventListener("submit", async (e) => {
    e.preventDefault();
    const btn = $("submit");
    const body = readForm();
    if (!body) return;
    btn.disabled = true;
    setFormStatus("Submitting…");
    try {
      const job = await client.submit(body);
      $("new-job").dataset.lastJob = job.id;
      setFormStatus(`Submitted ${job.kind} job ${shortId(job.id)}.`);
    } catch (err) {
      const retry = err.retryAfter ? ` Retry in ${err.retryAfter}s.` : "";
      setFormStatus(`Not submitted: ${err.message}${retry}`, true);
    } finally {
      btn.disabled = false;
    }
  });

  function readForm() {
    const f = $("new-job");
    const num = (name, min, max) => {
      const input = f.elements[name];
      const v = Number(input.value);
      if (!Number.isInteger(v) || v < min || v > max) {
        setFormStatus(`${input.labels[0].textContent} must be a whole number from ${min} to ${max}.`, true);
        input.focus();
        return null;
      }
      return v;
    };
    const steps = num("steps", 1, 100);
    if (steps === null) return null;
    const duration = num("duration_ms", 0, 600000);
    if (duration === null) return null;
    const failTimes = num("fail_times", 0, 20);
    if (failTimes === null) return null;
    const panicTimes = num("panic_times", 0, 20);
    if (panicTimes === null) return null;
    const sim = { steps, duration_ms: duration, fail_times: failTimes, panic_times: panicTimes };
    if (f.elements.terminal.checked) sim.fail = "terminal";
    return {
      kind: f.elements.kind.value,
      priority: f.elements.priority.value,
      input: { prompt: f.elements.prompt.value, sim },
    };
  }

  function render(job, info) {
    let entry = jobs.get(job.id);
    if (!entry) {
      entry = { job, el: jobElement(job) };
      jobs.set(job.id, entry);
      $("jobs").prepend(entry.el);
    }
    if (job.seq < entry.job.seq) return; // an older read than what we show
    const prev = entry.job.status;
    entry.job = job;
    updateJobElement(entry.el, job);
    if (prev !== job.status && info.type !== "snapshot") {
      announce(`Job ${shortId(job.id)} ${job.status}${job.error ? ": " + job.error : ""}`);
    }
    $("jobs-empty").hidden = jobs.size > 0;
    const running = [...jobs.values()].filter((e) => !isTerminal(e.job.status)).length;
    $("jobs-count").textContent = `${jobs.size} total · ${running} active`;
  }

  function jobElement(job) {
    const li = document.createElement("li");
    li.className = "job";
    li.dataset.jobId = job.id;
    li.innerHTML = `
      <div class="job-head">
        <span class="kind"></span>
        <code class="id"></code>
        <span class="prio"></span>
        <span class="badge" data-role="status"></span>
      </div>
      <div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100">
        <div class="fill"></div>
      </div>
      <div class="job-meta">
        <span data-role="progress"></span>
        <span data-role="attempt"></span>
        <span data-role="time" class="muted"></span>
        <button type="button" class="link cancel">Cancel</button>
      </div>
      <p class="job-error" data-role="error" hidden></p>`;
    li.querySelector(".kind").textContent = job.kind;
    li.querySelector(".id").textContent = shortId(job.id);
    li.querySelector(".id").title = job.id;
    li.querySelector(".prio").textContent = job.priority;
    li.querySelector(".bar").setAttribute("aria-label", `Progress of ${job.kind} job ${shortId(job.id)}`);
    const cancel = li.querySelector(".cancel");
    cancel.setAttribute("aria-label", `Cancel job ${shortId(job.id)}`);
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try {
        await client.cancel(job.id);
      } catch (err) {
        announce(`Cancel failed: ${err.message}`);
        cancel.disabled = false;
      }
    });
    return li;
  }

  function updateJobElement(li, job) {
    const pct = Math.max(0, Math.min(100, Math.round(job.progress || 0)));
    li.dataset.status = job.status;
    const badge = li.querySelector('[data-role="status"]');
    badge.textContent = job.status;
    const bar = li.querySelector(".bar");
    bar.setAttribute("aria-valuenow", String(pct));
    bar.setAttribute("aria-valuetext", `${pct}% — ${job.status}`);
    bar.dataset.progress = String(pct);
    li.querySelector(".fill").style.width = pct + "%";
    li.querySelector('[data-role="progress"]').textContent = `${pct}%`;
    li.querySelector('[data-role="attempt"]').textContent = job.attempt > 0 ? `attempt ${job.attempt}` : "not started";
    const t = li.querySelector('[data-role="time"]');
    t.textContent = job.updated_at ? "updated " + timeLabel(job.updated_at) : "";
    t.title = job.updated_at;
    const err = li.querySelector('[data-role="error"]');
    err.hidden = !job.error;
    err.textContent = job.error ? `Error: ${job.error}` : "";
    li.querySelector(".cancel").hidden = isTerminal(job.status);
  }
}

function setFormStatus(text, isError = false) {
  const el = $("form-status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function announce(text) {
  const el = $("announce");
  el.textContent = text;
}

function shortId(id) {
  return id.length > 10 ? id.slice(0, 4) + "…" + id.slice(-4) : id;
}

function timeLabel(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleTimeString();
}
