// The React hook, with a minimal stand-in for React's useState/useEffect.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createUseJob } from "../react.js";

function fakeReact() {
  const r = { state: undefined, effects: [], cleanups: [] };
  r.useState = (init) => {
    if (r.state === undefined) r.state = typeof init === "function" ? init() : init;
    return [r.state, (v) => { r.state = typeof v === "function" ? v(r.state) : v; }];
  };
  r.useEffect = (fn) => { r.cleanups.push(fn()); };
  return r;
}

function fakeClient() {
  const c = { watchers: [] };
  c.watchJob = (id, onUpdate, opts) => {
    const w = { id, onUpdate, opts, stopped: false };
    c.watchers.push(w);
    return () => { w.stopped = true; };
  };
  return c;
}

test("useJob follows the job and stops watching on cleanup", () => {
  const React = fakeReact();
  const client = fakeClient();
  const useJob = createUseJob(React, client);
  let s = useJob("j1");
  assert.deepEqual(s, { status: "connecting", progress: 0, error: null, job: null });
  assert.equal(client.watchers[0].id, "j1");
  client.watchers[0].onUpdate({ id: "j1", status: "running", progress: 40, seq: 2 });
  s = useJob("j1");
  assert.equal(s.status, "running");
  assert.equal(s.progress, 40);
  client.watchers[0].onUpdate({ id: "j1", status: "failed", progress: 40, error: "boom", seq: 3 });
  s = useJob("j1");
  assert.equal(s.status, "failed");
  assert.equal(s.error, "boom");
  React.cleanups[0]();
  assert.equal(client.watchers[0].stopped, true);
});

test("useJob reports a refused watch", () => {
  const React = fakeReact();
  const client = fakeClient();
  createUseJob(React, client)("nope");
  client.watchers[0].opts.onError("not_found");
  assert.equal(React.state.status, "error");
  assert.equal(React.state.error, "not_found");
});

test("useJob(null) is idle and watches nothing", () => {
  const React = fakeReact();
  const client = fakeClient();
  const s = createUseJob(React, client)(null);
  assert.equal(s.status, "idle");
  assert.equal(client.watchers.length, 0);
});
