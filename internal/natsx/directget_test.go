package natsx

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// DirectReader: a wildcard read from a seq in stream order, a read that fn
// stops, the last message per subject at or below a seq, and a hidden
// message read as a lagging replica answers.
func TestDirectReader(t *testing.T) {
	ctx, js := embeddedStream(t, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, AllowDirect: true})
	// 600 messages: more than two batches.
	for i := range 600 {
		subj := "s.a"
		if i%3 == 0 {
			subj = "s.b"
		}
		if _, err := js.Publish(ctx, subj, []byte(subj)); err != nil {
			t.Fatal(err)
		}
	}
	r := NewDirectReader(js, "S")
	read := func(filter string, from uint64, stopAt int) (seqs []uint64, end bool) {
		t.Helper()
		end, err := r.ReadFrom(ctx, filter, from, func(m *jetstream.RawStreamMsg) bool {
			if !strings.HasPrefix(m.Subject, strings.TrimSuffix(filter, ">")) || string(m.Data) != m.Subject {
				t.Fatalf("%s: got %s %q", filter, m.Subject, m.Data)
			}
			seqs = append(seqs, m.Sequence)
			return len(seqs) != stopAt
		})
		if err != nil {
			t.Fatal(err)
		}
		return seqs, end
	}
	if seqs, end := read("s.>", 0, -1); !end || len(seqs) != 600 || seqs[0] != 1 || seqs[599] != 600 {
		t.Fatalf("all: end %v, %d messages", end, len(seqs))
	}
	if seqs, end := read("s.b", 2, -1); !end || len(seqs) != 199 || seqs[0] != 4 {
		t.Fatalf("s.b from 2: end %v, %v", end, seqs[:min(len(seqs), 3)])
	}
	if seqs, end := read("s.>", 1, 300); end || len(seqs) != 300 {
		t.Fatalf("stopped: end %v, %d messages", end, len(seqs))
	}
	last := map[string]uint64{}
	if err := r.MultiLast(ctx, []string{"s.a", "s.b", "s.c"}, 10, func(m *jetstream.RawStreamMsg) { last[m.Subject] = m.Sequence }); err != nil {
		t.Fatal(err)
	}
	if len(last) != 2 || last["s.a"] != 9 || last["s.b"] != 10 {
		t.Fatalf("multi last up to 10: %v", last)
	}
	r.Hide = func(m *jetstream.RawStreamMsg) bool { return m.Sequence >= 100 }
	if seqs, end := read("s.>", 1, -1); !end || len(seqs) != 99 {
		t.Fatalf("hidden from 100: end %v, %d messages", end, len(seqs))
	}
}
