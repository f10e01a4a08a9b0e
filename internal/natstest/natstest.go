// Package natstest starts real in-process nats-servers with JetStream for
// tests: never a mock of NATS.
package natstest

import (
	"context"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natsx"
)

// Start runs a JetStream server on a random 127.0.0.1 port with its store in
// a fresh temporary folder, stopped when the test ends.
func Start(t testing.TB) *server.Server {
	t.Helper()
	return StartDir(t, t.TempDir())
}

// StartDir is Start with a given store folder, for restart tests.
func StartDir(t testing.TB, dir string) *server.Server {
	t.Helper()
	s, err := natsx.RunEmbedded(natsx.EmbeddedConfig{Port: -1, StoreDir: dir, HTTPPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect opens a client connection closed when the test ends.
func Connect(t testing.TB, s *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// StartWithStreams is Start plus ApplyStreams, returning a connection and
// its JetStream context.
func StartWithStreams(t testing.TB) (*server.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	s := Start(t)
	nc := Connect(t, s)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := jsm.ApplyStreams(context.Background(), js, jsm.Options{}); err != nil {
		t.Fatal(err)
	}
	return s, nc, js
}
