package kit

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/goleak"
)

// LeakOptions are the goleak options for a test binary that runs
// nats-server in process: the server's own goroutines and pollers may
// outlive a test by a moment after Shutdown.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).syncBlocks"),
		// JOBS sources SCHEDULED; the server may leave its source setup
		// waiting for a consumer reply up to 30 s after a shutdown.
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*stream).trySetupSourceConsumer.func3"),
	}
}

// NewServer creates a nats-server from opts, starts it in the background
// and shuts it down (and waits) at cleanup. It does not wait until the
// server takes connections: StartServer does, and a cluster waits for all
// its nodes after starting them all.
func NewServer(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// StartServer is NewServer that waits up to 10s until the server takes
// connections.
func StartServer(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	s := NewServer(t, opts)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return s
}

// Listen listens on a free port of 127.0.0.1; the service given it closes it.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// Run runs fn in a goroutine and, at cleanup, cancels its context and waits
// up to 20s for it; an error it returns, or not stopping, fails the test.
func Run(t testing.TB, name string, fn func(context.Context) error) {
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
