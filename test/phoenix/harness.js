// What compat.test.js and longpoll.test.js share: the environment that
// internal/notifier/phoenixjs_test.go provides, the two client versions, and
// small promise helpers around the control server and the phoenix client.
//   NOTIFIER_WS  ws://host:port/socket
//   CONTROL_URL  http://host:port (create jobs, publish events, broadcast, drop sockets)
//   TOKEN_ALICE, TOKEN_BOB
// (Not named *.test.js, so `node --test` does not run it as a test file.)
"use strict";

const WS = process.env.NOTIFIER_WS;
const CTRL = process.env.CONTROL_URL;
if (!WS || !CTRL) throw new Error("run me through internal/notifier/phoenixjs_test.go");

const env = {
  WS,
  CTRL,
  ALICE: process.env.TOKEN_ALICE,
  BOB: process.env.TOKEN_BOB,
  LONG: process.env.BEAMLINE_LONG === "1" || process.env.CI === "true",
};

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

// join and push turn a phoenix Push into a promise: ok resolves, error and
// timeout reject with a message that says which.
function join(ch) {
  return new Promise((resolve, reject) => {
    ch.join()
      .receive("ok", resolve)
      .receive("error", (e) => reject(new Error("join error: " + JSON.stringify(e))))
      .receive("timeout", () => reject(new Error("join timeout")));
  });
}

function push(ch, ev, payload) {
  return new Promise((resolve, reject) =>
    ch.push(ev, payload)
      .receive("ok", resolve)
      .receive("error", (e) => reject(new Error("push error: " + JSON.stringify(e))))
      .receive("timeout", () => reject(new Error("push timeout"))));
}

// socketKit opens phoenix sockets to WS with defaults under opts, and keeps
// them so that closeAll (in an after hook) disconnects every one; connect
// also waits for onOpen.
function socketKit(phx, defaults = {}) {
  const sockets = [];
  const open = (opts = {}) => {
    const s = new phx.Socket(WS, { ...defaults, ...opts });
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
  const closeAll = () => sockets.forEach((s) => s.disconnect());
  return { open, connect, closeAll };
}

// refusedConnect connects s, waits for n onError (what names them in a
// timeout) and disconnects it; it returns whether onOpen ever fired.
async function refusedConnect(s, n, what) {
  let opened = false, errors = 0;
  s.onOpen(() => (opened = true));
  s.onError(() => errors++);
  s.connect();
  await waitFor(() => errors >= n, 3000, what);
  s.disconnect();
  return opened;
}

module.exports = { env, clients, sleep, waitFor, ctrl, newJob, event, join, push, socketKit, refusedConnect };
