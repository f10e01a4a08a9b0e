package natsx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publish publishes m to a stream and waits for its PubAck, as nats.go's
// jetstream.PublishMsg does — same retries on "no responders" (a stream
// leader being elected), same errors (ErrNoStreamResponse,
// ErrInvalidJSAck, a *jetstream.APIError wrapped as "nats: …") — but reads
// the PubAck without encoding/json. A no-op job makes three of these
// writes; nats.go's reflective decode of each PubAck was ~5 % of the
// pipeline's CPU (BENCHMARKS.md, run O). Headers go on m as for
// PublishMsg (Nats-Msg-Id, Nats-Expected-Last-Subject-Sequence, …).
func Publish(ctx context.Context, nc *nats.Conn, m *nats.Msg) (PubAck, error) {
	request := func() (*nats.Msg, error) { return nc.RequestMsgWithContext(ctx, m) }
	if _, ok := ctx.Deadline(); !ok {
		// As jetstream's calls: a context with no deadline gets the
		// default API timeout, so a lost reply does not wait forever.
		if ctx.Done() == nil {
			// One that cannot be cancelled either (the processor's
			// writes): a plain timed request, no context to build.
			request = func() (*nats.Msg, error) { return nc.RequestMsg(m, PublishTimeout) }
		} else {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, PublishTimeout)
			defer cancel()
		}
	}
	resp, err := request()
	for r := 0; errors.Is(err, nats.ErrNoResponders) && r < jetstream.DefaultPubRetryAttempts; r++ {
		t := time.NewTimer(jetstream.DefaultPubRetryWait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		resp, err = request()
	}
	if errors.Is(err, nats.ErrNoResponders) {
		return PubAck{}, jetstream.ErrNoStreamResponse
	}
	if errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
		// nc.RequestMsg's timeout: a deadline, as jetstream.PublishMsg
		// reports it.
		err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	if err != nil {
		return PubAck{}, err
	}
	return ParsePubAck(resp.Data)
}

// PublishTimeout bounds a Publish whose context has no deadline; it is
// nats.go's default JetStream API timeout.
const PublishTimeout = 5 * time.Second

// PubAck is the part of JetStream's publish acknowledgement Beamline
// reads.
type PubAck struct {
	Stream    string
	Sequence  uint64
	Duplicate bool
}

// ParsePubAck reads a PubAck. The common answer,
// {"stream":"S","seq":N} with an optional "domain" and "duplicate", is read
// by hand; anything else (an error, a field it does not know) goes through
// encoding/json, so the result is what nats.go would make of it.
func ParsePubAck(b []byte) (PubAck, error) {
	if a, ok := parsePubAckFast(b); ok {
		return a, nil
	}
	var resp struct {
		Error *jetstream.APIError `json:"error,omitempty"`
		jetstream.PubAck
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		return PubAck{}, jetstream.ErrInvalidJSAck
	}
	if resp.Error != nil {
		return PubAck{}, fmt.Errorf("nats: %w", resp.Error)
	}
	if resp.Stream == "" {
		return PubAck{}, jetstream.ErrInvalidJSAck
	}
	return PubAck{Stream: resp.Stream, Sequence: resp.Sequence, Duplicate: resp.Duplicate}, nil
}

// parsePubAckFast reads {"stream":"…"[,"domain":"…"],"seq":N[,"duplicate":true|false]}
// exactly as nats-server writes it (no spaces, no escapes in the names);
// false for anything else.
func parsePubAckFast(b []byte) (PubAck, bool) {
	var a PubAck
	rest, ok := cutPrefix(b, `{"stream":"`)
	if !ok {
		return a, false
	}
	i := bytes.IndexByte(rest, '"')
	if i <= 0 || bytes.IndexByte(rest[:i], '\\') >= 0 {
		return a, false
	}
	a.Stream = string(rest[:i])
	rest = skipDomain(rest[i+1:]) // nats-server writes the domain before seq
	if rest, ok = cutPrefix(rest, `,"seq":`); !ok {
		return a, false
	}
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	seq, err := strconv.ParseUint(string(rest[:n]), 10, 64)
	if err != nil {
		return a, false
	}
	a.Sequence = seq
	rest = skipDomain(rest[n:])
	if r, ok := cutPrefix(rest, `,"duplicate":true`); ok {
		a.Duplicate, rest = true, r
	} else if r, ok := cutPrefix(rest, `,"duplicate":false`); ok {
		rest = r
	}
	return a, string(rest) == "}"
}

// skipDomain skips a leading ,"domain":"…" (with no escapes in it).
func skipDomain(b []byte) []byte {
	r, ok := cutPrefix(b, `,"domain":"`)
	if !ok {
		return b
	}
	i := bytes.IndexByte(r, '"')
	if i < 0 || bytes.IndexByte(r[:i], '\\') >= 0 {
		return b // left for encoding/json
	}
	return r[i+1:]
}

func cutPrefix(b []byte, p string) ([]byte, bool) {
	if len(b) < len(p) || string(b[:len(p)]) != p {
		return b, false
	}
	return b[len(p):], true
}
