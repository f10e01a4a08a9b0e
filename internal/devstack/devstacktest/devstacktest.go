// Package devstacktest starts devstack for tests: the whole pipeline in
// process on an embedded nats-server, on random 127.0.0.1 ports. It is
// test support; production binaries build their devstack.Config
// themselves.
package devstacktest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/devstack"
)

// Secret signs the tests' tokens (Stack.Token and Stack.AdminToken).
var Secret = []byte("devstacktest-secret-0123456789abcdef")

// Config is a devstack configuration for a test run: data in dataDir, the
// embedded nats-server and the three HTTP services on random 127.0.0.1
// ports, tokens signed with Secret, logs to log.
func Config(dataDir string, log *slog.Logger) devstack.Config {
	return devstack.Config{
		DataDir:       dataDir,
		NATSPort:      -1,
		IngestAddr:    "127.0.0.1:0",
		NotifierAddr:  "127.0.0.1:0",
		ProcessorAddr: "127.0.0.1:0",
		Secret:        Secret,
		Logger:        log,
	}
}

// Start runs devstack with Config on a temporary data folder, logs
// discarded, after each tune has adjusted the configuration. It waits up to
// 30s for the start and closes the stack at cleanup; a failed start or
// Close fails the test.
func Start(t testing.TB, tune ...func(*devstack.Config)) *devstack.Stack {
	t.Helper()
	cfg := Config(t.TempDir(), slog.New(slog.DiscardHandler))
	for _, f := range tune {
		if f != nil {
			f(&cfg)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := devstack.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return st
}
