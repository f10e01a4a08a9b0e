package hardening

import (
	"context"
	"log/slog"
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

const (
	natsUser     = "svc"
	natsPassword = "nats-password-Zq8xV3"
)

var secret = []byte("hardening-secret-0123456789abcdef")

// startServer runs a JetStream server that requires a user and password.
func startServer(t *testing.T) *server.Server {
	t.Helper()
	return kit.StartServer(t, &server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
		Users: []*server.User{{Username: natsUser, Password: natsPassword}},
	})
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

func startIngest(t *testing.T, nc *nats.Conn, js jetstream.JetStream, log *slog.Logger) string {
	t.Helper()
	ln := kit.Listen(t)
	svc, err := ingest.New(ingest.Config{Listener: ln, Kinds: []string{"image"}, Secret: secret, Grace: time.Second}, nc, js, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	kit.Run(t, "ingest", svc.Run)
	return "http://" + ln.Addr().String()
}

func startNotifier(t *testing.T, nc *nats.Conn, js jetstream.JetStream, log *slog.Logger, origins []string) string {
	t.Helper()
	ln := kit.Listen(t)
	svc, err := notifier.New(notifier.Config{Listener: ln, Secret: secret, AllowedOrigins: origins}, nc, js, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	kit.Run(t, "notifier", svc.Run)
	return "http://" + ln.Addr().String()
}

func startProcessor(t *testing.T, nc *nats.Conn, js jetstream.JetStream, log *slog.Logger) {
	t.Helper()
	p, err := processor.New(kit.SimProcessorConfig(t, processor.Config{
		Concurrency: 4,
		BackoffMin:  10 * time.Millisecond,
		BackoffMax:  50 * time.Millisecond,
		Grace:       time.Second,
		PollWait:    200 * time.Millisecond,
	}), nc, js, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	kit.Run(t, "processor", p.Run)
}
