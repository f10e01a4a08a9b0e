package hardening

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/ingest"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/internal/notifier"
	"github.com/beamline/beamline/internal/processor"
	"github.com/beamline/beamline/internal/provider"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).syncBlocks"),
	)
}

const (
	natsUser     = "svc"
	natsPassword = "nats-password-Zq8xV3"
)

var secret = []byte("hardening-secret-0123456789abcdef")

// syncBuffer is a log sink shared by several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServer runs a JetStream server that requires a user and password.
func startServer(t *testing.T) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
		Users: []*server.User{{Username: natsUser, Password: natsPassword}},
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// natsURL is the URL with the password in it, as the binaries get it.
func natsURL(s *server.Server) string {
	return "nats://" + natsUser + ":" + natsPassword + "@" + s.Addr().String()
}

// connect dials like the binaries do (natsx.Connect, logging to log) and
// applies the streams.
func connect(t *testing.T, s *server.Server, name string, log *slog.Logger) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := natsx.Connect(ctx, natsURL(s), name, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := jsm.ApplyStreams(ctx, js, jsm.Options{}); err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func run(t *testing.T, name string, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("%s did not stop", name)
		}
	})
}

func startIngest(t *testing.T, nc *nats.Conn, js jetstream.JetStream, log *slog.Logger) string {
	t.Helper()
	ln := listen(t)
	svc, err := ingest.New(ingest.Config{Listener: ln, Kinds: []string{"image"}, Secret: secret, Grace: time.Second}, nc, js, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	run(t, "ingest", svc.Run)
	return "http://" + ln.Addr().String()
}

func startNotifier(t *testing.T, nc *nats.Conn, js jetstream.JetStream, log *slog.Logger, origins []string) string {
	t.Helper()
	ln := listen(t)
	svc, err := notifier.New(notifier.Config{Listener: ln, Secret: secret, AllowedOrigins: origins}, nc, js, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	run(t, "notifier", svc.Run)
	return "http://" + ln.Addr().String()
}

func startProcessor(t *testing.T, nc *nats.Conn, js jetstream.JetStream, log *slog.Logger) {
	t.Helper()
	sim, err := provider.New("sim", provider.Config{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := processor.New(processor.Config{
		Listener:        listen(t),
		Kinds:           []config.Kind{{Name: "image"}},
		Providers:       map[string]provider.Provider{sim.Name(): sim},
		DefaultProvider: sim.Name(),
		Concurrency:     4,
		BackoffMin:      10 * time.Millisecond,
		BackoffMax:      50 * time.Millisecond,
		Grace:           time.Second,
		PollWait:        200 * time.Millisecond,
	}, nc, js, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	run(t, "processor", p.Run)
}
