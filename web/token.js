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

/**
 * Shows the page's token form (#token-panel with #token-form and
 * #token-input) and marks the connection indicator (#conn, #conn-text) not
 * connected; a submitted token is saved under key and the page reloaded.
 */
export function askForToken(key) {
  const $ = (id) => document.getElementById(id);
  $("token-panel").hidden = false;
  $("conn").dataset.state = "closed";
  $("conn-text").textContent = "Not connected";
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = $("token-input").value.trim();
    if (!t) return;
    saveToken(key, t);
    location.reload();
  });
  $("token-input").focus();
}
