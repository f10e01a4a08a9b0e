package perms

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/beamline/beamline/internal/ingest"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/internal/notifier"
	"github.com/beamline/beamline/internal/processor"
	"github.com/beamline/beamline/test/chaos/kit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, kit.LeakOptions()...)
}

var secret = []byte("perms-test-secret-0123456789")

// passwords are what an operator exports; nats.conf reads them.
var passwords = map[string]string{
	"ingest":    "pw-ingest-test",
	"processor": "pw-processor-test",
	"notifier":  "pw-notifier-test",
	"admin":     "pw-admin-test",
}

// startServer runs a nats-server from the committed nats.conf, with only
// what a test must change overridden: ports, store folder, no monitoring.
func startServer(t *testing.T) *server.Server {
	t.Helper()
	for user, pw := range passwords {
		t.Setenv("BEAMLINE_NATS_"+strings.ToUpper(user)+"_PASSWORD", pw)
	}
	t.Setenv("BEAMLINE_NATS_SERVER_NAME", "perms")
	t.Setenv("BEAMLINE_NATS_STORE_DIR", t.TempDir())
	opts, err := server.ProcessConfigFile(filepath.Join("..", "..", "nats.conf"))
	if err != nil {
		t.Fatalf("nats.conf: %v", err)
	}
	if len(opts.Users) != len(passwords) {
		t.Fatalf("nats.conf has %d users, want %d (ingest, processor, notifier, admin)", len(opts.Users), len(passwords))
	}
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.HTTPHost, opts.HTTPPort = "", 0
	opts.StoreDir = t.TempDir()
	opts.NoSigs, opts.NoLog = true, true
	return kit.StartServer(t, opts)
}

// recorder collects a connection's asynchronous errors: the server's
// permission violations arrive there.
type recorder struct {
	mu   sync.Mutex
	errs []error
}

func (r *recorder) add(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

// violations returns the permission violations recorded so far.
func (r *recorder) violations() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.errs {
		if errors.Is(e, nats.ErrPermissionViolation) {
			out = append(out, e.Error())
		}
	}
	return out
}

// waitViolation waits until a permission violation mentioning subject (a
// publish or a subscription) was reported.
func (r *recorder) waitViolation(t *testing.T, kind, subject string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		for _, v := range r.violations() {
			if strings.Contains(v, kind) && strings.Contains(v, `"`+subject+`"`) {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("no permission violation for %s %q; violations: %v", kind, subject, r.violations())
}

type client struct {
	user string
	nc   *nats.Conn
	js   jetstream.JetStream
	rec  *recorder
}

func connect(t *testing.T, s *server.Server, user string) *client {
	t.Helper()
	rec := &recorder{}
	opts := []nats.Option{nats.UserInfo(user, passwords[user]), nats.Name("perms-" + user),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { rec.add(err) })}
	if user != "admin" {
		// As the binaries connect: replies on the service's own inbox.
		opts = append(opts, natsx.Inbox(user))
	}
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &client{user: user, nc: nc, js: js, rec: rec}
}

// applyStreams does what every binary does at start, with its own user.
func (c *client) applyStreams(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := jsm.ApplyStreams(ctx, c.js, jsm.Options{}); err != nil {
		t.Fatalf("%s cannot apply streams/: %v (violations %v)", c.user, err, c.rec.violations())
	}
}

func startIngest(t *testing.T, c *client) string {
	t.Helper()
	ln := kit.Listen(t)
	svc, err := ingest.New(ingest.Config{Listener: ln, Kinds: []string{"image"}, Secret: secret}, c.nc, c.js, nil, nil)
	if err != nil {
		t.Fatalf("ingest.New as %s: %v (violations %v)", c.user, err, c.rec.violations())
	}
	kit.Run(t, "ingest", svc.Run)
	return "http://" + ln.Addr().String()
}

func startProcessor(t *testing.T, c *client) {
	t.Helper()
	p, err := processor.New(kit.SimProcessorConfig(t, processor.Config{
		Concurrency:     4,
		MaxDeliver:      2,
		AckWait:         5 * time.Second,
		BackoffMin:      10 * time.Millisecond,
		BackoffMax:      50 * time.Millisecond,
		Grace:           time.Second,
		PollWait:        200 * time.Millisecond,
		MetricsInterval: 200 * time.Millisecond,
	}), c.nc, c.js, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("processor.New as %s: %v (violations %v)", c.user, err, c.rec.violations())
	}
	kit.Run(t, "processor", p.Run)
}

func startNotifier(t *testing.T, c *client) string {
	t.Helper()
	ln := kit.Listen(t)
	svc, err := notifier.New(notifier.Config{Listener: ln, Secret: secret}, c.nc, c.js, nil, nil)
	if err != nil {
		t.Fatalf("notifier.New as %s: %v (violations %v)", c.user, err, c.rec.violations())
	}
	kit.Run(t, "notifier", svc.Run)
	return "http://" + ln.Addr().String()
}
