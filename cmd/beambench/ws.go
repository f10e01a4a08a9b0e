package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/beamline/beamline/internal/phoenix/phoenixtest"
	"github.com/beamline/beamline/pkg/envelope"
)

// byteCounter counts the bytes a set of connections read and wrote on the
// wire (TCP payload: HTTP headers and WebSocket framing included).
type byteCounter struct{ read, written atomic.Int64 }

func (b *byteCounter) total() int64 { return b.read.Load() + b.written.Load() }

type countedConn struct {
	net.Conn
	c *byteCounter
}

func (c countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.c.read.Add(int64(n))
	return n, err
}

func (c countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.c.written.Add(int64(n))
	return n, err
}

// countingDial dials TCP and counts the connection's bytes into c (when set).
func countingDial(c *byteCounter) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil || c == nil {
			return conn, err
		}
		return countedConn{conn, c}, nil
	}
}

// jobPush is the payload of a "job" push.
type jobPush struct {
	Type      string `json:"type"`
	StreamSeq uint64 `json:"stream_seq"`
	Job       struct {
		ID        string          `json:"id"`
		Status    envelope.Status `json:"status"`
		Seq       uint64          `json:"seq"`
		CreatedAt time.Time       `json:"created_at"`
		UpdatedAt time.Time       `json:"updated_at"`
	} `json:"job"`
}

// dialWS connects a Phoenix client to the notifier at base; onPush gets
// every frame that answers no request, with the time it was read, and may
// be nil.
func dialWS(ctx context.Context, base, token string, counter *byteCounter, onPush func(*phoenixtest.Frame, time.Time)) (*phoenixtest.Client, error) {
	if onPush == nil {
		onPush = func(*phoenixtest.Frame, time.Time) {}
	}
	c, resp, err := phoenixtest.Dial(ctx, phoenixtest.URL(base, token), phoenixtest.Options{
		NetDialContext: countingDial(counter), ReadBufferSize: 1024, WriteBufferSize: 1024, OnFrame: onPush})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial notifier: %w (HTTP %s)", err, resp.Status)
		}
		return nil, fmt.Errorf("dial notifier: %w", err)
	}
	return c, nil
}

// joinWS joins topic, waiting at most 15 s for an ok reply.
func joinWS(ctx context.Context, c *phoenixtest.Client, topic string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	_, err := c.JoinOK(ctx, topic, nil)
	return err
}

// decodeJobPush reads a "job" push; ok is false for anything else.
func decodeJobPush(f *phoenixtest.Frame) (jobPush, bool) {
	var p jobPush
	if f.Event != "job" || json.Unmarshal(f.Payload, &p) != nil {
		return p, false
	}
	return p, true
}

// errNoFigures marks a scenario that ran but measured nothing.
var errNoFigures = errors.New("no samples")
