// Package gateway runs the committed deploy/Caddyfile in a real Caddy (the
// Debian caddy package, which .ci/run installs) in front of a real ingest,
// processor and two notifiers, and checks what compose.yaml's gateway
// promises: one origin with TLS from Caddy's local CA, /v1 to ingest,
// WebSocket upgrades, SSE and the client files to the notifiers, spread
// over both, long-poll kept on one by a cookie, and everything else a JSON
// 404. Only the upstream addresses and the ports are changed; the routes
// are the file's own.
package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/beamline/beamline/internal/devstack/devstacktest"
	"github.com/beamline/beamline/internal/freeport"
	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/internal/notifier"
	"github.com/beamline/beamline/internal/phoenix/phoenixtest"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/web"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const repo = "../.."

func freePort(t *testing.T) int {
	t.Helper()
	p, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runNotifier starts one notifier on the stack's NATS, serving the client
// files as the notifier binary does, and returns its address and registry.
func runNotifier(t *testing.T, natsURL string) (string, *prometheus.Registry) {
	t.Helper()
	nc, err := nats.Connect(natsURL, nats.Name("gateway-test-notifier"))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	svc, err := notifier.New(notifier.Config{Listener: ln, Secret: devstacktest.Secret, Static: web.Handler()}, nc, js, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("notifier: %v", err)
		}
		nc.Close()
	})
	return ln.Addr().String(), reg
}

// gateway is a running Caddy and a client that trusts its local CA.
type gateway struct {
	base   string // https://localhost:PORT
	client *http.Client
	tls    *tls.Config
}

func startCaddy(t *testing.T, upstream map[string]string) *gateway {
	t.Helper()
	caddy, err := exec.LookPath("caddy")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("caddy is not on PATH (.ci/run installs Debian's caddy)")
		}
		t.Skip("caddy is not on PATH")
	}
	raw, err := os.ReadFile(filepath.Join(repo, "deploy", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	for from, to := range upstream {
		if !strings.Contains(text, from) {
			t.Fatalf("the Caddyfile no longer names upstream %s", from)
		}
		text = strings.ReplaceAll(text, from, to)
	}
	// Test-only global options: no admin endpoint, every listener on
	// loopback, the http->https redirect on a free port, and the local CA
	// not installed into the machine's trust store.
	httpsPort, httpPort := freePort(t), freePort(t)
	text = fmt.Sprintf("{\n\tadmin off\n\tdefault_bind 127.0.0.1\n\thttp_port %d\n\tskip_install_trust\n}\n\n", httpPort) + text
	dir := t.TempDir()
	conf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs testutil.Buffer
	cmd := exec.Command(caddy, "run", "--config", conf, "--adapter", "caddyfile")
	cmd.Env = []string{
		"HOME=" + dir, "XDG_DATA_HOME=" + filepath.Join(dir, "data"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "config"),
		// The site address as compose sets it: localhost gets a
		// certificate from Caddy's local CA.
		fmt.Sprintf("BEAMLINE_SITE=localhost:%d", httpsPort),
	}
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("caddy's log:\n%s", logs.String())
		}
	})
	rootPEM := filepath.Join(dir, "data", "caddy", "pki", "authorities", "local", "root.crt")
	pool := x509.NewCertPool()
	testutil.WaitFor(t, 20*time.Second, func() bool {
		select {
		case <-exited:
			t.Fatalf("caddy exited:\n%s", logs.String())
		default:
		}
		pem, err := os.ReadFile(rootPEM) // written while we look: wait for a whole one
		return err == nil && pool.AppendCertsFromPEM(pem)
	}, "caddy made no local CA")
	g := &gateway{base: fmt.Sprintf("https://localhost:%d", httpsPort), tls: &tls.Config{RootCAs: pool, ServerName: "localhost"}}
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", httpsPort))
	}
	g.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: g.tls, DialContext: dial}}
	testutil.WaitFor(t, 20*time.Second, func() bool {
		resp, err := g.client.Get(g.base + "/beamline.js")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, func() string { return "the gateway does not serve /beamline.js:\n" + logs.String() })
	return g
}

func (g *gateway) do(t *testing.T, method, path, token, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, g.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return testutil.Do(t, g.client, req)
}

// dialWS opens a Phoenix WebSocket through the gateway, from a page of the
// gateway's own origin.
func (g *gateway) dialWS(t *testing.T, token string) *phoenixtest.Client {
	t.Helper()
	d := websocket.Dialer{TLSClientConfig: g.tls, HandshakeTimeout: 10 * time.Second,
		NetDialContext: g.client.Transport.(*http.Transport).DialContext}
	ws, resp, err := d.Dial(phoenixtest.URL(g.base, token), http.Header{"Origin": {g.base}})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("WebSocket through the gateway: %v (HTTP %d)", err, status)
	}
	c := phoenixtest.New(ws, phoenixtest.Options{})
	t.Cleanup(c.Close)
	return c
}

func TestGateway(t *testing.T) {
	st := devstacktest.Start(t)
	n1, reg1 := runNotifier(t, st.NATSURL)
	n2, reg2 := runNotifier(t, st.NATSURL)
	g := startCaddy(t, map[string]string{
		"ingest:8080":     strings.TrimPrefix(st.IngestURL, "http://"),
		"notifier-1:8090": n1,
		"notifier-2:8091": n2,
	})

	// WebSockets first, so the job's events reach them: spread over both
	// notifiers (fewest connections first), no stickiness.
	var clients []*phoenixtest.Client
	for range 4 {
		clients = append(clients, g.dialWS(t, st.Token))
	}
	conns := func(reg *prometheus.Registry) float64 {
		return testutil.GatheredValue(t, reg, "beamline_notifier_connections", nil)
	}
	testutil.WaitFor(t, 10*time.Second, func() bool { return conns(reg1)+conns(reg2) == 4 })
	if conns(reg1) != 2 || conns(reg2) != 2 {
		t.Errorf("4 WebSockets through the gateway: %v and %v per notifier, want 2 and 2", conns(reg1), conns(reg2))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range clients {
		if _, err := c.JoinOK(ctx, "user:dev", nil); err != nil {
			t.Fatal(err)
		}
	}

	// The API through the gateway: submit, then read.
	resp, body := g.do(t, http.MethodPost, "/v1/jobs", st.Token, `{"kind":"image","input":{"sim":{"steps":2,"duration_ms":300}}}`)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/jobs through the gateway: %d %s", resp.StatusCode, body)
	}
	var job envelope.Snapshot
	if err := json.Unmarshal(body, &job); err != nil {
		t.Fatal(err)
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 || resp.TLS.PeerCertificates[0].VerifyHostname("localhost") != nil {
		t.Errorf("the gateway's certificate is not for localhost")
	}

	// Each WebSocket, on either notifier, sees the job to its end.
	for i, c := range clients {
		func() {
			deadline := time.After(30 * time.Second)
			for {
				select {
				case f, ok := <-c.Frames():
					if !ok {
						t.Fatalf("client %d: connection ended: %v", i, c.Err())
					}
					var p struct {
						Job envelope.Snapshot `json:"job"`
					}
					if f.Event == "job" && json.Unmarshal(f.Payload, &p) == nil && p.Job.ID == job.ID && p.Job.Status == envelope.StatusSucceeded {
						return
					}
				case <-deadline:
					t.Fatalf("client %d: no succeeded push through the gateway", i)
				}
			}
		}()
	}

	// SSE under /v1 goes to the notifiers, streamed, and ends after the
	// terminal event.
	resp, body = g.do(t, http.MethodGet, "/v1/jobs/"+job.ID+"/events", st.Token, "")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("SSE through the gateway: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var events []string
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			events = append(events, ev)
		}
	}
	if len(events) == 0 || events[len(events)-1] != "succeeded" {
		t.Errorf("SSE events %v, want … succeeded", events)
	}
	// The rest of /v1 is ingest's.
	resp, body = g.do(t, http.MethodGet, "/v1/jobs/"+job.ID, st.Token, "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"succeeded"`) {
		t.Errorf("GET /v1/jobs/{id} through the gateway: %d %s", resp.StatusCode, body)
	}

	// The client files and the dashboard.
	for _, p := range []string{"/beamline.js", "/react.js", "/admin", "/admin.js", "/style.css"} {
		resp, body := g.do(t, http.MethodGet, p, "", "")
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("GET %s through the gateway: %d", p, resp.StatusCode)
		}
	}

	// Long-poll: the gateway pins the client to one notifier by cookie.
	resp, _ = g.do(t, http.MethodGet, "/socket/longpoll?vsn=2.0.0&token="+st.Token, "", "")
	sticky := false
	for _, c := range resp.Cookies() {
		sticky = sticky || c.Name == "beamline_lp"
	}
	if !sticky {
		t.Errorf("long-poll answer sets no beamline_lp cookie (%d, cookies %v)", resp.StatusCode, resp.Cookies())
	}
	if resp, _ := g.do(t, http.MethodGet, "/socket/websocket", "", ""); len(resp.Cookies()) != 0 {
		t.Errorf("a WebSocket path sets cookies %v: no stickiness wanted", resp.Cookies())
	}

	// Nothing else is exposed: the services' /metrics, /healthz, /readyz
	// answer a JSON 404 from the gateway.
	for _, p := range []string{"/metrics", "/healthz", "/readyz", "/nope"} {
		resp, body := g.do(t, http.MethodGet, p, "", "")
		var e httpx.ErrorBody
		if resp.StatusCode != http.StatusNotFound || json.Unmarshal(body, &e) != nil || e.Error.Code != "not_found" ||
			resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s through the gateway: %d %q %s", p, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
}
