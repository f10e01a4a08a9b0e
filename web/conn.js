// conn.js — the connection indicator both pages show.

const LABELS = {
  connecting: "Connecting…",
  open: "Live",
  reconnecting: "Reconnecting…",
  recovered: "Live · recovered",
  closed: "Disconnected",
};

const CLOSE_REASONS = {
  1001: "server going away",
  1006: "connection lost",
  1012: "server restarting",
  1013: "server shed load",
};

/** Shows client's connection state in el/textEl and announces changes. */
export function connectionIndicator(client, el, textEl, announce) {
  let was = null;
  client.onStatus((state, info) => {
    el.dataset.state = state;
    document.body.dataset.conn = state;
    let text = LABELS[state] || state;
    if (state === "reconnecting" && info.code) text += ` (${CLOSE_REASONS[info.code] || "closed " + info.code})`;
    if (state === "recovered") {
      const at = new Date().toLocaleTimeString();
      text = info.resumed === false ? `Live · recovered ${at} (resynced)` : `Live · recovered ${at}`;
    }
    textEl.textContent = text;
    el.title = state === "recovered"
      ? (info.resumed === false
        ? "Reconnected; missed updates could not be replayed, so current state was reloaded"
        : "Reconnected; every missed update was replayed")
      : "";
    if (was !== null && was !== state && announce) {
      if (state === "reconnecting" && was !== "reconnecting") announce("Connection lost. Reconnecting.");
      if (state === "recovered") announce("Connection recovered.");
    }
    was = state;
  });
}
