// token.js — the dev-only way the demo pages get a token.
//
// devstack prints <notifier>/#token=<jwt>. A URL fragment is never sent to a
// server (not in requests, not in Referer), so the page reads it here, keeps
// it in sessionStorage (this tab only) and removes it from the address bar.
// In production the host application supplies the token to connect()
// through `getToken` instead; nothing here is needed.

/** Returns the token for this page, taking it from the fragment first. */
export function pageToken(key) {
  const params = new URLSearchParams(location.hash.slice(1));
  const fromHash = params.get("token");
  if (fromHash) {
    sessionStorage.setItem(key, fromHash);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  }
  return sessionStorage.getItem(key) || "";
}

export function saveToken(key, token) {
  sessionStorage.setItem(key, token);
}

export function forgetToken(key) {
  sessionStorage.removeItem(key);
}
