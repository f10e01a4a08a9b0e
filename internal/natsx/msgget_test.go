package natsx

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// GetOnLeader: by sequence, first-after on a wildcard, last on a wildcard,
// nil for "no such message", and an error (not nil) for a stream that does
// not exist.
func TestGetOnLeader(t *testing.T) {
	ctx, js := embeddedStream(t, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}})
	for _, p := range []struct{ subj, data string }{{"s.a.1", "one"}, {"s.b.2", "two"}, {"s.a.3", "three"}} {
		m := nats.NewMsg(p.subj)
		m.Data = []byte(p.data)
		m.Header.Set("X-Test", p.data)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		r    MsgGet
		want string // "" = none
	}{
		{MsgGet{Seq: 2}, "two"},
		{MsgGet{Seq: 1, NextFor: "s.a.*"}, "one"},
		{MsgGet{Seq: 2, NextFor: "s.a.*"}, "three"},
		{MsgGet{LastFor: "s.*.2"}, "two"},
		{MsgGet{LastFor: "s.a.>"}, "three"},
		{MsgGet{LastFor: "s.c.*"}, ""},
		{MsgGet{Seq: 4}, ""},
	} {
		m, err := GetOnLeader(ctx, js, "S", c.r)
		switch {
		case err != nil:
			t.Errorf("%+v: %v", c.r, err)
		case c.want == "" && m != nil:
			t.Errorf("%+v: got %q, want none", c.r, m.Data)
		case c.want != "" && (m == nil || string(m.Data) != c.want || m.Header.Get("X-Test") != c.want || m.Sequence == 0 || m.Time.IsZero()):
			t.Errorf("%+v: got %+v, want %q", c.r, m, c.want)
		}
	}
	if m, err := GetOnLeader(ctx, js, "NOPE", MsgGet{Seq: 1}); !errors.Is(err, ErrMsgGet) || m != nil {
		t.Errorf("missing stream: %v, %v; want ErrMsgGet", m, err)
	}
}

// embeddedStream runs an embedded server for the test, connects to it and
// creates the stream cfg; ctx ends with the test, after 10s at the most.
func embeddedStream(t *testing.T, cfg jetstream.StreamConfig) (context.Context, jetstream.JetStream) {
	t.Helper()
	srv, err := RunEmbedded(EmbeddedConfig{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	return ctx, js
}
