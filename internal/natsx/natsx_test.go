package natsx

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/beamline/beamline/internal/freeport"
	"github.com/beamline/beamline/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRedact(t *testing.T) {
	tests := []struct {
		in, want string
		secrets  []string
	}{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222", nil},
		{"nats://ingest:hunter2@nats:4222", "nats://ingest:xxxxx@nats:4222", []string{"hunter2"}},
		{"tls://svc:p%40ss@host:4443", "tls://svc:xxxxx@host:4443", []string{"p%40ss", "p@ss"}},
		{"nats://svc:p@ss@host:4222", "nats://svc:xxxxx@host:4222", []string{"p@ss", "ss@"}},
		// A lone user in a NATS URL is a token.
		{"nats://s3cr3tt0ken@host:4222", "nats://xxxxx@host:4222", []string{"s3cr3tt0ken"}},
		// Server lists: every entry is redacted.
		{"nats://a:pw1@h1:4222,nats://b:pw2@h2:4222", "nats://a:xxxxx@h1:4222,nats://b:xxxxx@h2:4222", []string{"pw1", "pw2"}},
		// Not valid URLs (bad escape, no scheme) must not leak either.
		{"nats://u:bad%zzpass@host:4222", "nats://u:xxxxx@host:4222", []string{"bad%zzpass", "zzpass"}},
		{"u:nosch3me@host:4222", "u:xxxxx@host:4222", []string{"nosch3me"}},
		{"nats://u:sl/ash@host:4222", "nats://u:xxxxx@host:4222", []string{"sl/ash", "ash"}},
		{"", "", nil},
	}
	for _, tt := range tests {
		got := Redact(tt.in)
		if got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
		for _, s := range tt.secrets {
			if strings.Contains(got, s) {
				t.Errorf("Redact(%q) = %q leaks %q", tt.in, got, s)
			}
		}
	}
}

func TestURLFromEnv(t *testing.T) {
	t.Setenv("NATS_URL", "")
	if got := URLFromEnv(); got != DefaultURL {
		t.Errorf("URLFromEnv() = %q", got)
	}
	t.Setenv("NATS_URL", "nats://elsewhere:4222")
	if got := URLFromEnv(); got != "nats://elsewhere:4222" {
		t.Errorf("URLFromEnv() = %q", got)
	}
}

func TestRunEmbeddedNeedsStoreDir(t *testing.T) {
	if _, err := RunEmbedded(EmbeddedConfig{Port: -1}); !errors.Is(err, ErrEmbedded) {
		t.Fatalf("RunEmbedded without StoreDir = %v, want ErrEmbedded", err)
	}
}

// A binary survives a NATS restart: the server comes back on the same port
// and store folder, the connection reconnects by itself, and the JetStream
// data is still there.
func TestConnectReconnectsAfterRestart(t *testing.T) {
	dir := t.TempDir()
	// The server comes back on this port, chosen outside the ephemeral range
	// so that no outgoing connection takes it while NATS is down.
	port, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := RunEmbedded(EmbeddedConfig{Port: port, StoreDir: dir, ServerName: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()

	var logs testutil.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := Connect(ctx, srv.ClientURL(), "natsx-test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.1", []byte("before")); err != nil {
		t.Fatal(err)
	}

	srv.Shutdown()
	srv.WaitForShutdown()
	testutil.WaitFor(t, 10*time.Second, func() bool { return !nc.IsConnected() })

	srv, err = RunEmbedded(EmbeddedConfig{Port: port, StoreDir: dir, ServerName: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, nc.IsConnected)

	if _, err := js.Publish(ctx, "t.2", []byte("after")); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != 2 {
		t.Fatalf("stream holds %d messages after restart, want 2", n)
	}
	out := logs.String()
	for _, want := range []string{"nats connected", "nats disconnected", "nats reconnected"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// The first dial is retried until ctx ends; the error and logs never show
// the password.
func TestConnectGivesUpWithCtxAndHidesPassword(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now

	var logs testutil.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	nc, err := Connect(ctx, "nats://svc:hunter2@"+addr, "natsx-test", log)
	if err == nil {
		nc.Close()
		t.Fatal("Connect to a closed port succeeded")
	}
	if strings.Contains(err.Error(), "hunter2") || strings.Contains(logs.String(), "hunter2") {
		t.Fatalf("password leaked:\nerr: %v\nlogs:\n%s", err, logs.String())
	}
	if !strings.Contains(logs.String(), "retrying") {
		t.Errorf("no retry was logged:\n%s", logs.String())
	}
}

// Services may start before the server: Connect waits for it.
func TestConnectWaitsForServer(t *testing.T) {
	port, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	log := slog.New(slog.NewTextHandler(&testutil.Buffer{}, nil))
	go func() {
		nc, err := Connect(ctx, "nats://127.0.0.1:"+strconv.Itoa(port), "late", log)
		done <- result{nc, err}
	}()
	srv, err := RunEmbedded(EmbeddedConfig{Port: port, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.nc.Close()
	if !r.nc.IsConnected() {
		t.Fatal("Connect returned a connection that is not connected")
	}
}

// A connection made with Inbox(service) gets its replies, JetStream's
// included, under _INBOX_<service>.
func TestConnectInboxPrefix(t *testing.T) {
	srv, err := RunEmbedded(EmbeddedConfig{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := Connect(ctx, srv.ClientURL(), "natsx-test", slog.New(slog.DiscardHandler), Inbox("ingest"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := nc.NewInbox(); !strings.HasPrefix(got, "_INBOX_ingest.") {
		t.Fatalf("NewInbox() = %q, want prefix _INBOX_ingest.", got)
	}
	if got := nc.NewRespInbox(); !strings.HasPrefix(got, "_INBOX_ingest.") {
		t.Fatalf("NewRespInbox() = %q, want prefix _INBOX_ingest.", got)
	}
	// A request's reply arrives on the service's inbox.
	sub, err := nc.Subscribe("echo", func(m *nats.Msg) { _ = m.Respond([]byte(m.Reply)) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	m, err := nc.Request("echo", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(m.Data), "_INBOX_ingest.") {
		t.Fatalf("reply subject %q, want prefix _INBOX_ingest.", m.Data)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("JetStream API with a custom inbox prefix: %v", err)
	}
}
