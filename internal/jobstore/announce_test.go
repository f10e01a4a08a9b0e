package jobstore

import (
	"errors"
	"testing"

	"github.com/beamline/beamline/pkg/envelope"
)

// seqsOf is the Beamline-Seq of every stored event of a job, in stream
// order.
func (f *fixture) seqsOf(t *testing.T, id string) []uint64 {
	t.Helper()
	var out []uint64
	for _, m := range f.events(t, id) {
		seq, ok := envelope.SeqOf(m.Header)
		if !ok {
			t.Fatalf("event without Beamline-Seq: %+v", m.Header)
		}
		out = append(out, seq)
	}
	return out
}

// A holder whose compare-and-set loses reads the job; what it read may be
// stored without its event (its writer died, or lost the reply, before
// publishing). Whoever writes seq N+1 makes sure seq N's event exists: the
// events stay 1, 2, 3 — never 1, 3.
func TestApplyAtAnnouncesWhatItReadBeforeWritingOver(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	j := newJob("job-behind")
	cur, rev, err := f.store.ApplyAt(ctx, envelope.NewSnapshot(j), RevAbsent, envelope.TypeStarted, start)
	if err != nil {
		t.Fatal(err)
	}
	restore := breakEvents(t, f.js)
	if _, err := f.store.Apply(ctx, j.ID, nil, envelope.TypeProgress, func(s *envelope.Snapshot) error {
		s.Progress = 40
		return nil
	}); !errors.Is(err, ErrNotPublished) {
		t.Fatalf("progress with EVENTS refusing: %v", err)
	}
	restore()
	got, _, err := f.store.ApplyAt(ctx, cur, rev, envelope.TypeSucceeded, setStatus(envelope.StatusSucceeded))
	if err != nil || got.Seq != 3 {
		t.Fatalf("succeeded over the stale revision: %+v, %v", got, err)
	}
	if seqs := f.seqsOf(t, j.ID); len(seqs) != 3 || seqs[0] != 1 || seqs[1] != 2 || seqs[2] != 3 {
		t.Fatalf("event seqs %v, want 1 2 3", seqs)
	}
}

// A claim is the job's snapshot, running, at seq 0, without an event; a
// second claim finds it; the next change (a cancel at the revision Lookup
// reads, as ingest's) is the job's seq 1 and keeps the claim's attempt.
func TestClaim(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	j := newJob("job-claim")
	snap, rev, err := f.store.Claim(ctx, j, 1)
	if err != nil || snap.Status != envelope.StatusRunning || snap.Seq != 0 || snap.Attempt != 1 || rev == 0 {
		t.Fatalf("claim: %+v rev %d, %v", snap, rev, err)
	}
	if _, _, err := f.store.Claim(ctx, j, 1); !errors.Is(err, ErrExists) {
		t.Fatalf("second claim: %v, want ErrExists", err)
	}
	got, gotRev, err := f.store.Lookup(ctx, j.ID)
	if err != nil || got.Status != envelope.StatusRunning || got.Seq != 0 || gotRev != rev {
		t.Fatalf("lookup: %+v rev %d, %v", got, gotRev, err)
	}
	if n := f.eventCount(t, j.ID); n != 0 {
		t.Fatalf("%d events for a claim, want none", n)
	}
	c, _, err := f.store.ApplyAt(ctx, got, gotRev, envelope.TypeCancelled, setStatus(envelope.StatusCancelled))
	if err != nil || c.Seq != 1 || c.Attempt != 1 {
		t.Fatalf("cancel over the claim: %+v, %v", c, err)
	}
	if seqs := f.seqsOf(t, j.ID); len(seqs) != 1 || seqs[0] != 1 {
		t.Fatalf("event seqs %v, want 1", seqs)
	}
}

// EnsurePublished of a snapshot whose predecessors' events are missing
// publishes it all the same and reports the gap, which nobody can fill.
func TestEnsurePublishedReportsAGap(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	j := newJob("job-gap")
	snap := envelope.NewSnapshot(j)
	snap.Status, snap.Attempt, snap.Seq = envelope.StatusCancelled, 1, 3
	b, err := snap.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.kv.Put(ctx, j.ID, b); err != nil {
		t.Fatal(err)
	}
	err = f.store.EnsurePublished(ctx, snap)
	var gap *GapError
	if !errors.Is(err, ErrSeqGap) || !errors.As(err, &gap) || gap.From != 1 || gap.To != 2 {
		t.Fatalf("EnsurePublished over a gap: %v", err)
	}
	if seqs := f.seqsOf(t, j.ID); len(seqs) != 1 || seqs[0] != 3 {
		t.Fatalf("event seqs %v, want 3", seqs)
	}
	if err := f.store.EnsurePublished(ctx, snap); err != nil {
		t.Fatalf("again: %v", err)
	}
}
