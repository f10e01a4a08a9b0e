// app.js — the demo page: submit simulated jobs and watch them live.
import { connect, isTerminal, tokenSubject } from "./beamline.js";
import { pageToken, askForToken, forgetToken } from "./token.js";
import { connectionIndicator } from "./conn.js";
import { startStudio } from "./studio.js";

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
  const studio = startStudio(client, token); // shares our jobs with the room
  client.watchUser((job, info) => render(job, info), {
    onError: (reason) => setFormStatus(`Cannot watch your jobs: ${WATCH_ERRORS[reason] || reason}.`, true),
  });
  checkTokenWhenNotLive(client, token);

  // Jobs that finished before the page opened are not in the user topic's
  // join (it brings active jobs): list the recent ones, oldest first so
  // the newest ends on top; live updates go on as usual.
  client.listJobs({ limit: 50 }).then(
    (page) => { for (const j of [...(page.jobs || [])].reverse()) render(j, { type: "snapshot", seq: j.seq }); },
    // A refused token (401) is explained by checkTokenWhenNotLive, and a
    // token without a user by watchUser's error: say it once, not twice.
    (err) => { if (err.status !== 401) setFormStatus(`Cannot list your jobs: ${err.message}`, true); },
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
    if (f.elements.image.checked) sim.image = true;
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
    studio.share(job);
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
      <p class="job-error" data-role="error" hidden></p>
      <figure class="job-media" data-role="media" hidden>
        <img data-role="image" alt="" width="256" height="256" hidden>
        <video data-role="video" controls playsinline preload="metadata" hidden></video>
        <figcaption data-role="caption"></figcaption>
      </figure>`;
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
    updateMedia(li, job);
  }

  // updateMedia shows the job's picture: its live preview while it runs
  // (each progress event may name a newer one), then its stored output —
  // an <img>, or a <video> player for a video.
  function updateMedia(li, job) {
    const out = job.status === "succeeded" ? firstOutput(job.result) : null;
    if (out) {
      if (li.dataset.mediaOf === out.url) return;
      li.dataset.mediaOf = out.url;
      const video = (out.content_type || "").startsWith("video/");
      if (!video && !(out.content_type || "").startsWith("image/")) return;
      signedURL(job.id, out.url).then((src) => {
        if (src) showMedia(li, video ? "video" : "image", "output", src, `Result of ${job.kind} job ${shortId(job.id)}`);
      });
      return;
    }
    const pv = job.preview;
    if (!pv || isTerminal(job.status)) {
      if (isTerminal(job.status) && li.dataset.media === "preview") li.querySelector('[data-role="media"]').hidden = true;
      return;
    }
    if (li.dataset.mediaOf === pv.digest || !(pv.content_type || "").startsWith("image/")) return;
    li.dataset.mediaOf = pv.digest;
    const caption = `Preview of ${job.kind} job ${shortId(job.id)} at ${job.progress}%`;
    if (pv.signed_url) {
      showMedia(li, "image", "preview", pv.signed_url, caption);
    } else {
      signedURL(job.id, pv.url, pv.digest).then((src) => {
        if (src && li.dataset.mediaOf === pv.digest) showMedia(li, "image", "preview", src, caption);
      });
    }
  }

  function showMedia(li, kind, what, src, caption) {
    const fig = li.querySelector('[data-role="media"]');
    const img = li.querySelector('[data-role="image"]');
    const video = li.querySelector('[data-role="video"]');
    const el = kind === "video" ? video : img;
    (kind === "video" ? img : video).hidden = true;
    el.hidden = false;
    if (kind === "image") el.alt = caption;
    else el.setAttribute("aria-label", caption);
    el.src = src;
    li.dataset.media = what;
    fig.querySelector("figcaption").textContent = what === "preview" ? caption : "";
    fig.hidden = false;
  }

  // signedURL asks ingest for a short-lived URL of an output that needs no
  // Authorization header (<img src>, <video src>); null when refused.
  async function signedURL(id, path, version) {
    try {
      const res = await fetch(`${path}/link`, { headers: { Authorization: `Bearer ${token}` } });
      if (!res.ok) return null;
      const { url } = await res.json();
      return version ? `${url}&v=${encodeURIComponent(version)}` : url;
    } catch {
      return null;
    }
  }
}

// firstOutput is the first stored output a result names (an object with
// output, url and content_type, anywhere in it), or null.
function firstOutput(v) {
  if (!v || typeof v !== "object") return null;
  if (typeof v.output === "string" && typeof v.url === "string" && typeof v.content_type === "string") return v;
  for (const x of Array.isArray(v) ? v : Object.values(v)) {
    const o = firstOutput(x);
    if (o) return o;
  }
  return null;
}

// Sentences for the reasons watchUser reports (join refusals and the
// client's own), so that the page never shows a bare code.
const WATCH_ERRORS = {
  no_user: "your token names no user (it has no sub claim); ask for a new token",
  no_token: "no token could be read; reload the page or paste a token",
  unauthorized: "the server refused your token for these jobs",
  forbidden: "these jobs belong to another user",
  not_found: "there is no such topic",
  "invalid topic": "the user name in your token cannot be watched",
  "rate limited": "too many requests from this page; it will try again",
  unavailable: "the server cannot read your jobs just now; it will try again",
  "too many channels joined": "this page watches too many things at once",
};

// The notifier refuses a bad token with an empty 403 that a browser cannot
// read, and the client just retries; so when the socket is not live soon
// after loading, or drops, ask ingest, whose 401 says why. A refused token
// is then said in a sentence, with how to get a new one, instead of
// "Connecting…" forever.
function checkTokenWhenNotLive(client, token) {
  let live = false;
  let checking = false;
  const check = async () => {
    if (live || checking) return;
    checking = true;
    try {
      await client.getJob("token-check");
    } catch (err) {
      if (err && err.status === 401 && !live) tokenRefused(client, err.message);
    } finally {
      checking = false;
    }
  };
  client.onStatus((state) => {
    live = state === "open" || state === "recovered";
    if (state === "reconnecting") check();
  });
  setTimeout(check, 1500);
}

function tokenRefused(client, why) {
  client.close();
  forgetToken(TOKEN_KEY);
  $("submit").disabled = true;
  askForToken(TOKEN_KEY);
  $("conn-text").textContent = "Token refused";
  let p = $("token-refused");
  if (!p) {
    p = document.createElement("p");
    p.id = "token-refused";
    p.className = "form-status error";
    p.setAttribute("role", "alert");
    $("token-title").after(p);
  }
  p.textContent = `The server refused this page's token (${why}). ` +
    "A token stops working when it expires or when the secret it was signed with changes. " +
    "Open the demo page link devstack prints when it starts (it ends in #token=…) to get a new one, or paste a token below.";
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
