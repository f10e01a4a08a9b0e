package envelope

import (
	"testing"

	"github.com/nats-io/nats.go"
)

func TestNewJobMsg(t *testing.T) {
	j := testJob()
	m, err := NewJobMsg(j, "/svc", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "jobs.normal.image."+j.ID {
		t.Errorf("subject = %q", m.Subject)
	}
	if got := m.Header.Get(HeaderMsgID); got != j.ID {
		t.Errorf("Nats-Msg-Id = %q", got)
	}
	if got := m.Header.Get(HeaderType); got != string(TypeSubmitted) {
		t.Errorf("%s = %q", HeaderType, got)
	}
	if got := m.Header.Get(HeaderTraceparent); got == "" {
		t.Error("traceparent missing")
	}
	if _, got, err := DecodeJob(m.Data); err != nil || !jobEqual(got, j) {
		t.Errorf("DecodeJob(msg) = %+v, %v", got, err)
	}
	m, err = NewJobMsg(j, "/svc", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Header[HeaderTraceparent]; ok {
		t.Error("empty traceparent was set")
	}
}

func TestNewEventMsg(t *testing.T) {
	s := testSnapshot()
	m, err := NewEventMsg(TypeProgress, s, "/proc", "")
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "events.alice.job-1" {
		t.Errorf("subject = %q", m.Subject)
	}
	if got := m.Header.Get(HeaderMsgID); got != EventID(s.ID, s.Seq) || got != "job-1:7" {
		t.Errorf("Nats-Msg-Id = %q", got)
	}
	if seq, ok := SeqOf(m.Header); !ok || seq != 7 {
		t.Errorf("SeqOf = %d, %v", seq, ok)
	}
	if got := m.Header.Get(HeaderType); got != string(TypeProgress) {
		t.Errorf("%s = %q", HeaderType, got)
	}
	if _, got, err := DecodeEvent(m.Data); err != nil || !snapshotEqual(got, s) {
		t.Errorf("DecodeEvent(msg) = %+v, %v", got, err)
	}
	if _, err := NewEventMsg(TypeSubmitted, s, "/proc", ""); err == nil {
		t.Error("NewEventMsg(submitted) = nil error")
	}
}

func TestSeqOf(t *testing.T) {
	tests := []struct {
		h    nats.Header
		seq  uint64
		ok   bool
		name string
	}{
		{nats.Header{}, 0, false, "absent"},
		{nil, 0, false, "nil header"},
		{nats.Header{HeaderSeq: {"0"}}, 0, true, "zero"},
		{nats.Header{HeaderSeq: {"42"}}, 42, true, "42"},
		{nats.Header{HeaderSeq: {"18446744073709551615"}}, 1<<64 - 1, true, "max"},
		{nats.Header{HeaderSeq: {"18446744073709551616"}}, 0, false, "overflow"},
		{nats.Header{HeaderSeq: {"-1"}}, 0, false, "negative"},
		{nats.Header{HeaderSeq: {"abc"}}, 0, false, "letters"},
		{nats.Header{HeaderSeq: {""}}, 0, false, "empty"},
		{nats.Header{HeaderSeq: {" 5"}}, 0, false, "space"},
	}
	for _, tt := range tests {
		seq, ok := SeqOf(tt.h)
		if ok != tt.ok || (ok && seq != tt.seq) {
			t.Errorf("%s: SeqOf = %d, %v; want %d, %v", tt.name, seq, ok, tt.seq, tt.ok)
		}
	}
	// Set through the canonical API, read back.
	h := nats.Header{}
	h.Set(HeaderSeq, "9")
	if seq, ok := SeqOf(h); !ok || seq != 9 {
		t.Errorf("SeqOf(Set) = %d, %v", seq, ok)
	}
}
