// react.js — a React hook over beamline.js. It takes React from the host app
// (no import of "react"), so it works with any bundler or none.
//
//   const useJob = createUseJob(React, connect({ getToken }));
//   const { status, progress, error } = useJob(jobId);
//
// It replaces polling such as useQuery({ refetchInterval: 2000 }): the
// notifier pushes each change, and the client resumes after reconnects.

const initial = (id) => ({ status: id ? "connecting" : "idle", progress: 0, error: null, job: null });

function fromJob(job) {
  return { status: job.status, progress: job.progress ?? 0, error: job.error ?? null, job };
}

/** Returns a useJob(id) hook bound to one client. */
export function createUseJob(React, client) {
  if (!React || !React.useState || !React.useEffect) throw new Error("beamline/react: pass your React");
  if (!client || !client.watchJob) throw new Error("beamline/react: pass a client from connect()");
  return function useJob(id) {
    const [state, setState] = React.useState(() => initial(id));
    React.useEffect(() => {
      setState(initial(id));
      if (!id) return undefined;
      return client.watchJob(id, (job) => setState(fromJob(job)), {
        onError: (reason) => setState((s) => ({ ...s, status: s.job ? s.status : "error", error: reason })),
      });
    }, [id]);
    return state;
  };
}

const hooks = new WeakMap();

/** useJob(id, {client, React}): the same hook without a factory. */
export function useJob(id, { client, React }) {
  let h = hooks.get(client);
  if (!h) {
    h = createUseJob(React, client);
    hooks.set(client, h);
  }
  return h(id);
}

/** Returns a usePresence(topic, opts) hook bound to one client: who is on
 *  a studio: or job: topic, as [{key, metas}], [] until joined. */
export function createUsePresence(React, client) {
  if (!React || !React.useState || !React.useEffect) throw new Error("beamline/react: pass your React");
  if (!client || !client.presence) throw new Error("beamline/react: pass a client from connect()");
  return function usePresence(topic, opts = {}) {
    const [list, setList] = React.useState([]);
    React.useEffect(() => {
      setList([]);
      if (!topic) return undefined;
      return client.presence(topic, setList, opts);
    }, [topic]);
    return list;
  };
}

const presenceHooks = new WeakMap();

/** usePresence(topic, {client, React}, opts): the same hook without a factory. */
export function usePresence(topic, { client, React }, opts) {
  let h = presenceHooks.get(client);
  if (!h) {
    h = createUsePresence(React, client);
    presenceHooks.set(client, h);
  }
  return h(topic, opts);
}
