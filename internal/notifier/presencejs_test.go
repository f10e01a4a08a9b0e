package notifier

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPhoenixJSPresence runs test/phoenix/cluster-presence.js: clients of
// the official phoenix client (newest and 1.8.15) with its Presence class
// on two notifiers sharing one NATS; the script kills notifier A (its NATS
// connection cut first, so it says no goodbye) and restarts it under the
// same name through the control server started here. Skipped like
// TestPhoenixJSClient when node or node_modules is missing.
func TestPhoenixJSPresence(t *testing.T) {
	dir, node := phoenixJS(t)
	const interval = 400 * time.Millisecond
	w := newWorld(t)
	cfg := func(name string) Config { return Config{PresenceNode: name, PresenceInterval: interval} }
	var mu sync.Mutex
	a := startNotifier(t, w, cfg("na"))
	b := startNotifier(t, w, cfg("nb"))
	addrA := strings.TrimPrefix(a.url, "http://")

	mux := http.NewServeMux()
	mux.HandleFunc("POST /kill", func(rw http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		a.svc.nc.Close() // dies without a goodbye
		a.stop(t)
		rw.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /restart", func(rw http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		c := cfg("na")
		ln, err := net.Listen("tcp", addrA)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		c.Listener = ln
		a = startNotifier(t, w, c)
		rw.WriteHeader(http.StatusNoContent)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "cluster-presence.js")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"NOTIFIER_WS_A="+strings.Replace(a.url, "http://", "ws://", 1)+"/socket",
		"NOTIFIER_WS_B="+strings.Replace(b.url, "http://", "ws://", 1)+"/socket",
		"CONTROL_URL=http://"+ln.Addr().String(),
		"PRESENCE_INTERVAL_MS="+strconv.Itoa(int(interval/time.Millisecond)),
		"TOKEN_ALICE="+roomToken(t, "alice", "lab"),
		"TOKEN_BOB="+roomToken(t, "bob", "lab"),
		"TOKEN_CAROL="+roomToken(t, "carol", "*"),
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test cluster-presence.js: %v\n%s", err, out)
	}
	t.Logf("node --test:\n%s", lastLines(string(out), 12))
}

// TestBeamlineJSPresence runs test/phoenix/cluster-beamline.mjs: the
// presence and studio helpers of web/beamline.js on two notifiers.
func TestBeamlineJSPresence(t *testing.T) {
	dir, err := filepath.Abs("../../test/phoenix")
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	_, modErr := os.Stat(filepath.Join(dir, "node_modules", "ws"))
	if err != nil || modErr != nil {
		msg := "node or test/phoenix/node_modules missing (run npm ci in test/phoenix)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	w := newWorld(t)
	a := startNotifier(t, w, Config{PresenceInterval: 400 * time.Millisecond})
	b := startNotifier(t, w, Config{PresenceInterval: 400 * time.Millisecond})
	mux := http.NewServeMux()
	mux.HandleFunc("POST /job", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "application/json")
		_, _ = rw.Write([]byte(`{"id":"` + w.newJob(t, r.URL.Query().Get("user")) + `"}`))
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "cluster-beamline.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"NOTIFIER_WS_A="+strings.Replace(a.url, "http://", "ws://", 1)+"/socket",
		"NOTIFIER_WS_B="+strings.Replace(b.url, "http://", "ws://", 1)+"/socket",
		"CONTROL_URL=http://"+ln.Addr().String(),
		"TOKEN_ALICE="+roomToken(t, "alice", "lab"),
		"TOKEN_BOB="+roomToken(t, "bob", "lab"),
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test cluster-beamline.mjs: %v\n%s", err, out)
	}
	t.Logf("node --test:\n%s", lastLines(string(out), 12))
}
