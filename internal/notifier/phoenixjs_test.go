package notifier

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/phoenix"
)

// TestPhoenixJSClient runs test/phoenix (node --test) — the official phoenix
// client, newest 1.8.x and 1.8.15 — against a real notifier. The Node tests
// drive job events through a small control server started here. Skipped
// when node or test/phoenix/node_modules is missing, unless CI=true.
func TestPhoenixJSClient(t *testing.T) {
	dir, node := phoenixJS(t)
	w := newWorld(t)
	n := startNotifier(t, w, Config{unanswered: "unanswered"})
	ctrl := controlServer(t, w, n)

	// BEAMLINE_LONG=1 or CI=true add a 65 s heartbeat test (see compat.test.js).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-concurrency=1")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"NOTIFIER_WS="+strings.Replace(n.url, "http://", "ws://", 1)+"/socket",
		"CONTROL_URL="+ctrl,
		"TOKEN_ALICE="+token(t, "alice", false),
		"TOKEN_BOB="+token(t, "bob", false),
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
	t.Logf("node --test:\n%s", lastLines(string(out), 12))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// controlServer lets the Node tests create jobs, publish their events,
// broadcast, drop every connection with a close code, and read counters.
func controlServer(t *testing.T, w *world, n *running) string {
	mux := http.NewServeMux()
	reply := func(rw http.ResponseWriter, v any) {
		rw.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(rw).Encode(v)
	}
	mux.HandleFunc("POST /job", func(rw http.ResponseWriter, r *http.Request) {
		reply(rw, map[string]string{"id": w.newJob(t, r.URL.Query().Get("user"))})
	})
	mux.HandleFunc("POST /event", func(rw http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		id := q.Get("job")
		switch q.Get("type") {
		case "start":
			reply(rw, w.start(t, id))
		case "progress":
			p, _ := strconv.Atoi(q.Get("p"))
			reply(rw, w.progress(t, id, p))
		case "succeed":
			reply(rw, w.succeed(t, id))
		default:
			http.Error(rw, "type?", http.StatusBadRequest)
		}
	})
	mux.HandleFunc("POST /broadcast", func(rw http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		err := n.svc.Broadcast(q.Get("topic"), q.Get("event"), map[string]string{"n": q.Get("n")})
		reply(rw, map[string]any{"ok": err == nil})
	})
	mux.HandleFunc("POST /drop", func(rw http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		if code == 0 {
			code = websocket.CloseServiceRestart
		}
		n.svc.closeAll(disconnect{code: code, reason: "dropped by test", label: "test"})
		reply(rw, map[string]any{"ok": true})
	})
	// /push sends a push stamped with the given join_ref to every
	// connection joined to topic (a stale one must not reach channel.on).
	mux.HandleFunc("POST /push", func(rw http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		payload, _ := json.Marshal(map[string]string{"n": q.Get("n")})
		frame := phoenix.AppendFrame(nil, phoenix.Ref{S: q.Get("join_ref"), Valid: true}, phoenix.Ref{}, q.Get("topic"), q.Get("event"), payload)
		sent := 0
		sh := n.svc.hub.shard(q.Get("topic"))
		sh.mu.RLock()
		tp := sh.topics[q.Get("topic")]
		sh.mu.RUnlock()
		if tp != nil {
			for _, sb := range *tp.list.Load() {
				if c, ok := sb.sink.(*session); ok {
					c.send(frame)
					sent++
				}
			}
		}
		reply(rw, map[string]any{"sent": sent})
	})
	// /end ends a topic from the server side with phx_close or phx_error.
	mux.HandleFunc("POST /end", func(rw http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ok := n.svc.hub.closeTopic(q.Get("topic"), q.Get("event"), phoenix.ErrorReason("ended by test"))
		reply(rw, map[string]any{"ok": ok})
	})
	// /token issues a token for user that expires in ttl seconds (the
	// token-expiry tests).
	mux.HandleFunc("GET /token", func(rw http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ttl, _ := strconv.Atoi(q.Get("ttl"))
		tok, err := auth.Issue(secret, q.Get("user"), false, time.Duration(ttl)*time.Second)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		reply(rw, map[string]string{"token": tok})
	})
	mux.HandleFunc("GET /counter", func(rw http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		reply(rw, map[string]float64{"value": counterValue(t, n, q.Get("name"), q.Get("label"))})
	})
	mux.HandleFunc("GET /joins", func(rw http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		reply(rw, map[string]float64{"value": joinCount(t, n, q.Get("kind"), q.Get("result"))})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return fmt.Sprintf("http://%s", ln.Addr())
}

func joinCount(t testing.TB, r *running, kind, result string) float64 {
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Error(err)
		return 0
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != "beamline_notifier_joins_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["topic_kind"] == kind && labels["result"] == result {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}

// phoenixJS returns test/phoenix (the official client's Node tests) and
// the node binary; it skips the test when either is missing, unless
// CI=true (.ci/run installs both).
func phoenixJS(t *testing.T) (dir, node string) {
	t.Helper()
	dir, err := filepath.Abs("../../test/phoenix")
	if err != nil {
		t.Fatal(err)
	}
	node, err = exec.LookPath("node")
	_, modErr := os.Stat(filepath.Join(dir, "node_modules", "phoenix"))
	if err != nil || modErr != nil {
		msg := "node or test/phoenix/node_modules missing (run npm ci in test/phoenix)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return dir, node
}
