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

// TestPublish stores, de-duplicates and refuses as jetstream.PublishMsg
// does, against a real server.
func TestPublish(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "P", Subjects: []string{"p.>"}}); err != nil {
		t.Fatal(err)
	}
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
