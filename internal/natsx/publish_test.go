package natsx_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/natstest"
	"github.com/beamline/beamline/internal/natsx"
)

// TestParsePubAck reads what nats-server answers, by hand or through
// encoding/json, the same as nats.go would.
func TestParsePubAck(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want natsx.PubAck
		err  string
	}{
		{in: `{"stream":"EVENTS","seq":42}`, want: natsx.PubAck{Stream: "EVENTS", Sequence: 42}},
		{in: `{"stream":"EVENTS","seq":7,"duplicate":true}`, want: natsx.PubAck{Stream: "EVENTS", Sequence: 7, Duplicate: true}},
		{in: `{"stream":"KV_job_status","domain":"hub","seq":3}`, want: natsx.PubAck{Stream: "KV_job_status", Sequence: 3}},
		{in: `{"stream":"S","domain":"hub","seq":4,"duplicate":true}`, want: natsx.PubAck{Stream: "S", Sequence: 4, Duplicate: true}},
		{in: `{"stream":"S","seq":3,"domain":"hub","duplicate":false}`, want: natsx.PubAck{Stream: "S", Sequence: 3}},
		{in: `{ "stream": "S", "seq": 9 }`, want: natsx.PubAck{Stream: "S", Sequence: 9}},
		{in: `{"stream":"S","seq":9,"val":"1"}`, want: natsx.PubAck{Stream: "S", Sequence: 9}},
		{in: `{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"},"stream":"KV_job_status","seq":0}`, err: "wrong last sequence"},
		{in: `{"stream":"","seq":1}`, err: jetstream.ErrInvalidJSAck.Error()},
		{in: `{"stream":"S","seq":18446744073709551616}`, err: jetstream.ErrInvalidJSAck.Error()},
		{in: `not json`, err: jetstream.ErrInvalidJSAck.Error()},
		{in: ``, err: jetstream.ErrInvalidJSAck.Error()},
	} {
		got, err := natsx.ParsePubAck([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want one saying %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	// An API error keeps its code, as callers tell a lost compare-and-set by it.
	_, err := natsx.ParsePubAck([]byte(`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"}}`))
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
		t.Fatalf("error %v is not an APIError with code 10071", err)
	}
}

// withStream starts a server with a stream name on subjects and connects
// to it.
func withStream(ctx context.Context, t *testing.T, name, subjects string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc := natstest.Connect(t, natstest.Start(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subjects}}); err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// TestPublish stores, de-duplicates and refuses as jetstream.PublishMsg
// does, against a real server.
func TestPublish(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, _ := withStream(ctx, t, "P", "p.>")
	m := nats.NewMsg("p.a")
	m.Data = []byte("one")
	m.Header.Set(jetstream.MsgIDHeader, "a-1")
	a, err := natsx.Publish(ctx, nc, m)
	if err != nil || a.Stream != "P" || a.Sequence != 1 || a.Duplicate {
		t.Fatalf("first publish: %+v, %v", a, err)
	}
	// A context that is never done (the processor's writes) takes the
	// timed request, with the same answer.
	if a, err = natsx.Publish(context.Background(), nc, m); err != nil || a.Sequence != 1 || !a.Duplicate {
		t.Fatalf("same Nats-Msg-Id again: %+v, %v; want a duplicate of seq 1", a, err)
	}
	cas := nats.NewMsg("p.a")
	cas.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
	_, err = natsx.Publish(ctx, nc, cas)
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
		t.Fatalf("compare-and-set on a subject with a message: %v, want code 10071", err)
	}
	// No stream: retried as nats.go retries (a leader being elected
	// answers "no responders" for a moment), then ErrNoStreamResponse.
	start := time.Now()
	if _, err = natsx.Publish(ctx, nc, nats.NewMsg("nostream.x")); !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("publish to no stream: %v, want ErrNoStreamResponse", err)
	}
	if took, min := time.Since(start), time.Duration(jetstream.DefaultPubRetryAttempts)*jetstream.DefaultPubRetryWait; took < min {
		t.Fatalf("publish to no stream gave up after %v, want %d retries %v apart", took, jetstream.DefaultPubRetryAttempts, jetstream.DefaultPubRetryWait)
	}
}

func FuzzParsePubAck(f *testing.F) {
	f.Add([]byte(`{"stream":"EVENTS","seq":42}`))
	f.Add([]byte(`{"stream":"S","seq":7,"domain":"d","duplicate":true}`))
	f.Add([]byte(`{"error":{"code":503,"description":"x"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := natsx.ParsePubAck(b)
		if err == nil && a.Stream == "" {
			t.Fatalf("%q: accepted with no stream", b)
		}
	})
}

// TestPubBatch publishes a batch without waiting and reads each message's
// outcome as PublishMsgAsync's futures would give it: stored, duplicate,
// refused, no stream, and none in time.
func TestPubBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, js := withStream(ctx, t, "B", "b.>")
	// A core subscriber that never answers: a message to it gets no PubAck.
	if _, err := nc.Subscribe("silent", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	b, err := natsx.NewPubBatch(nc, 6)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	msg := func(subj, id, stream string) *nats.Msg {
		m := nats.NewMsg(subj)
		m.Data = []byte(subj)
		if id != "" {
			m.Header.Set(jetstream.MsgIDHeader, id)
		}
		if stream != "" {
			m.Header.Set(jetstream.ExpectedStreamHeader, stream)
		}
		return m
	}
	var idx []int
	for _, m := range []*nats.Msg{
		msg("b.1", "one", "B"),
		msg("b.2", "", "B"),
		msg("b.1", "one", "B"),    // the first again: a duplicate
		msg("b.3", "", "OTHER"),   // refused: the stream is B
		msg("nostream.x", "", ""), // no responders
		msg("silent", "", ""),     // never answered
	} {
		i, err := b.Publish(m)
		if err != nil {
			t.Fatalf("Publish %s: %v", m.Subject, err)
		}
		idx = append(idx, i)
	}
	if _, err := b.Publish(msg("b.4", "", "")); !errors.Is(err, natsx.ErrPubBatchFull) {
		t.Fatalf("a 7th publish into a batch of 6: %v, want ErrPubBatchFull", err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer wcancel()
	b.Wait(wctx)

	if a, err := b.Result(wctx, idx[0]); err != nil || a.Stream != "B" || a.Sequence != 1 || a.Duplicate {
		t.Errorf("first: %+v, %v; want B seq 1", a, err)
	}
	if a, err := b.Result(wctx, idx[1]); err != nil || a.Sequence != 2 || a.Duplicate {
		t.Errorf("second: %+v, %v; want seq 2", a, err)
	}
	if a, err := b.Result(wctx, idx[2]); err != nil || a.Sequence != 1 || !a.Duplicate {
		t.Errorf("same Nats-Msg-Id again: %+v, %v; want a duplicate of seq 1", a, err)
	}
	var apiErr *jetstream.APIError
	if _, err := b.Result(wctx, idx[3]); !errors.As(err, &apiErr) || apiErr.ErrorCode != 10060 { // JSStreamNotMatchErr
		t.Errorf("wrong expected stream: %v, want an APIError with code 10060 (expected stream does not match)", err)
	}
	if _, err := b.Result(wctx, idx[4]); !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Errorf("no stream: %v, want ErrNoStreamResponse", err)
	}
	if _, err := b.Result(wctx, idx[5]); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("never answered: %v, want the wait's deadline", err)
	}
	if n, err := js.Stream(ctx, "B"); err != nil {
		t.Fatal(err)
	} else if info, err := n.Info(ctx); err != nil || info.State.Msgs != 2 {
		t.Fatalf("stream B holds %v messages (%v), want 2", info.State.Msgs, err)
	}
}
