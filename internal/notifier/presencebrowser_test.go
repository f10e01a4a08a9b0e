package notifier

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// presencePage loads the official client's ES module (served from
// test/phoenix/node_modules) and lets the test start members, each a
// Socket with a Presence on studio:lab, recording list() and onLeave.
const presencePage = `<!doctype html><meta charset="utf-8"><script type="module">
import { Socket, Presence } from "/phoenix.mjs";
window.members = {};
window.start = (name, url, token) => {
  const s = new Socket(url, { params: { token }, reconnectAfterMs: () => 50, rejoinAfterMs: () => 100 });
  s.connect();
  const ch = s.channel("studio:lab", { device: name });
  const p = new Presence(ch);
  const m = { list: "[]", leaves: [] };
  window.members[name] = m;
  p.onSync(() => { m.list = JSON.stringify(p.list((k, { metas }) => [k, metas.map((x) => x.phx_ref).sort()]).sort()); });
  p.onLeave((k, cur) => m.leaves.push({ k, at: Date.now(), left: cur.metas.length }));
  ch.join();
};
window.ready = true;
</script>`

// TestPresenceInChromium: the official phoenix client's Presence in
// headless Chromium, two members on two notifiers: list() agrees; the
// notifier of one dies without a goodbye and its member leaves on the
// other within 2 heartbeats; back under its name, nobody is shown twice.
// Skipped without chromium or test/phoenix/node_modules, unless CI=true.
func TestPresenceInChromium(t *testing.T) {
	chromium := ""
	for _, p := range []string{os.Getenv("BEAMLINE_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); p != "" && err == nil {
			chromium = p
			break
		}
	}
	if chromium == "" {
		chromium, _ = exec.LookPath("chromium")
	}
	module, err := filepath.Abs("../../test/phoenix/node_modules/phoenix/priv/static/phoenix.mjs")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(module); err != nil || chromium == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium or test/phoenix/node_modules missing")
		}
		t.Skip("chromium or test/phoenix/node_modules missing")
	}
	const interval = 400 * time.Millisecond
	w := newWorld(t)
	cfg := func(name string) Config {
		return Config{PresenceNode: name, PresenceInterval: interval, AllowedOrigins: []string{"*"}}
	}
	a := startNotifier(t, w, cfg("na"))
	b := startNotifier(t, w, cfg("nb"))
	addrA := strings.TrimPrefix(a.url, "http://")
	ws := func(r *running) string { return strings.Replace(r.url, "http://", "ws://", 1) + "/socket" }

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = rw.Write([]byte(presencePage))
	})
	mux.HandleFunc("/phoenix.mjs", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/javascript")
		http.ServeFile(rw, r, module)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-dev-shm-usage", true))
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	defer cancelT()
	waitJS := func(what, js string, d time.Duration) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !jsValue[bool](t, ctx, js) {
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s: %s", what, jsValue[string](t, ctx, `JSON.stringify(window.members)`))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+ln.Addr().String()+"/")); err != nil {
		t.Fatal(err)
	}
	waitJS("the page", `window.ready === true`, 10*time.Second)
	start := func(name string, r *running) {
		t.Helper()
		tok, _ := json.Marshal(roomToken(t, name, "lab"))
		url, _ := json.Marshal(ws(r))
		jsValue[bool](t, ctx, `window.start("`+name+`", `+string(url)+`, `+string(tok)+`), true`)
	}
	start("alice", a)
	start("bob", b)
	agree := `(() => { const a = members.alice.list, b = members.bob.list;
		const keys = JSON.parse(a).map((p) => p[0]).join();
		return a === b && keys === "alice,bob" && JSON.parse(a).every((p) => p[1].length === 1); })()`
	waitJS("both lists alike, one meta each", agree, 10*time.Second)

	t0 := time.Now().UnixMilli()
	a.svc.nc.Close() // A dies without a goodbye
	a.stop(t)
	waitJS("alice leaving on B", `members.bob.leaves.some((l) => l.k === "alice" && l.left === 0)`, 10*time.Second)
	at := jsValue[int64](t, ctx, `members.bob.leaves.find((l) => l.k === "alice" && l.left === 0).at`)
	if took := time.Duration(at-t0) * time.Millisecond; took > 2*interval {
		t.Fatalf("alice left on B %v after A died, want ≤ %v", took, 2*interval)
	}

	ln2, err := net.Listen("tcp", addrA)
	if err != nil {
		t.Fatal(err)
	}
	c := cfg("na")
	c.Listener = ln2
	startNotifier(t, w, c)
	waitJS("alice back, lists alike, one meta each", agree, 15*time.Second)
	time.Sleep(3 * interval) // heartbeats go round
	waitJS("still alike after heartbeats", agree, time.Second)
}

// jsValue evaluates a JS expression in the page and decodes its value.
func jsValue[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return v
}
