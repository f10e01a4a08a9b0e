package notifier

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
)

// maxReplay bounds one replay; beyond it the join says recovered:false and
// the client starts again from the snapshot.
const maxReplay = 10000

// replayJob returns the job's events with a job seq after n, read up to
// at least stream seq upTo (see readConfirmed). recovered is false when the
// stream no longer holds event n+1 (aged out or purged).
func (s *Service) replayJob(ctx context.Context, subject string, n, current, upTo uint64) ([]*event, bool, error) {
	if n >= current {
		return nil, true, nil // nothing missed
	}
	var out []*event
	recovered, first := true, true
	err := s.events.readConfirmed(ctx, subject, 1, upTo, func(m *jetstream.RawStreamMsg) bool {
		head, err := envelope.DecodeEventHead(m.Data)
		if err != nil {
			return true
		}
		if first {
			first = false
			if head.Seq > n+1 {
				recovered = false
				return false
			}
		}
		if head.Seq > n {
			out = append(out, newJobEvent(head, m.Sequence, m.Header.Get(envelope.HeaderTraceparent)))
		}
		if len(out) > maxReplay {
			recovered = false
			return false
		}
		return true
	})
	if err != nil {
		return nil, false, err
	}
	if first { // the stream holds nothing for the job
		return nil, false, nil
	}
	if !recovered {
		return nil, false, nil
	}
	return out, true, nil
}

// replayUser returns the user's events with a stream seq after n, read up
// to at least stream seq upTo (see readConfirmed).
// recovered is false when events of this user stored after n may be gone:
// the stream's first message is later than n+1 (aged out), or a job's first
// replayed event does not follow the last one of that job at or below n
// (EVENTS keeps at most max_msgs_per_subject events per job and drops a
// chatty job's oldest ones, whatever the stream's first seq says).
func (s *Service) replayUser(ctx context.Context, user string, n, upTo uint64) ([]*event, bool, error) {
	info, err := s.events.info(ctx)
	if err != nil {
		return nil, false, err
	}
	if info.State.Msgs > 0 && info.State.FirstSeq > n+1 {
		return nil, false, nil
	}
	var out []*event
	recovered := true
	firstOf := map[string]uint64{} // job subject → job seq of its first replayed event
	err = s.events.readConfirmed(ctx, envelope.UserEventsSubject(user), n+1, upTo, func(m *jetstream.RawStreamMsg) bool {
		head, err := envelope.DecodeEventHead(m.Data)
		if err != nil {
			return true
		}
		if _, ok := firstOf[m.Subject]; !ok {
			firstOf[m.Subject] = head.Seq
		}
		out = append(out, newJobEvent(head, m.Sequence, m.Header.Get(envelope.HeaderTraceparent)))
		if len(out) > maxReplay {
			recovered = false
			return false
		}
		return true
	})
	if err != nil || !recovered {
		return nil, false, err
	}
	var check []string // jobs that began before n: their previous event must still be stored
	for subj, seq := range firstOf {
		if seq > 1 {
			if n == 0 {
				return nil, false, nil
			}
			check = append(check, subj)
		}
	}
	if len(check) > 0 {
		prev, err := s.events.lastUpTo(ctx, check, n)
		if err != nil {
			return nil, false, err
		}
		for _, subj := range check {
			if p, ok := prev[subj]; !ok || p+1 != firstOf[subj] {
				return nil, false, nil
			}
		}
	}
	return out, true, nil
}

// Bounds of the scan a user: join makes for the user's open jobs.
const (
	defaultUserScanMax  = 10000           // jobs (last events) read at most
	defaultUserScanTime = 3 * time.Second // and for at most this long
)

// userJobs returns the snapshots of the user's non-terminal jobs, from the
// latest EVENTS message per subject, and the highest stream seq seen; the
// read covers the stream up to at least upTo (see readConfirmed).
//
// The scan is bounded in count (cfg.userScanMax jobs) and time
// (cfg.userScanTime): a user with more jobs than that gets what was found
// with truncated set, never an error, because an error reply makes the
// Phoenix client rejoin forever and each rejoin would scan again. What is
// kept is the most recent jobs — the open ones a user cares about — not
// the ones whose last event is oldest (mostly finished): the stream is
// read in windows going back from its end (each twice the one before),
// each window forward in stream order, and a job counts once, in the
// newest window holding one of its events.
func (s *Service) userJobs(ctx context.Context, user string, upTo uint64) (jobs []json.RawMessage, last uint64, truncated bool, err error) {
	info, err := s.events.info(ctx)
	if err != nil {
		return nil, 0, false, err
	}
	first, hi := max(info.State.FirstSeq, 1), max(info.State.LastSeq, upTo)
	if info.State.Msgs == 0 && upTo == 0 {
		return nil, 0, false, nil
	}
	sctx, cancel := context.WithTimeout(ctx, s.cfg.userScanTime)
	defer cancel()
	type found struct {
		subject string
		seq     uint64
		data    json.RawMessage // nil: terminal
	}
	filter := envelope.UserEventsSubject(user)
	seen := map[string]bool{} // jobs counted, from newer windows
	window := 4 * uint64(s.cfg.userScanMax)
	for top := true; ; top = false {
		lo := first
		if hi >= first+window {
			lo = hi - window + 1
		}
		win := map[string]found{} // job subject → its latest event in [lo, hi]
		read := func(m *jetstream.RawStreamMsg) bool {
			if m.Sequence > hi {
				return false
			}
			if seen[m.Subject] {
				return true
			}
			f := found{subject: m.Subject, seq: m.Sequence}
			if env, snap, err := envelope.DecodeEvent(m.Data); err == nil && !snap.Status.Terminal() {
				f.data = env.Data
			}
			win[m.Subject] = f
			last = max(last, m.Sequence)
			return true
		}
		if top {
			err = s.events.readConfirmed(sctx, filter, lo, upTo, read)
		} else {
			_, err = s.events.readFrom(sctx, filter, lo, read)
		}
		if err != nil {
			if ctx.Err() == nil && sctx.Err() != nil {
				// Out of time: say so rather than fail the join.
				err, truncated = nil, true
			} else {
				return nil, 0, false, err
			}
		}
		fs := make([]found, 0, len(win))
		for _, f := range win {
			fs = append(fs, f)
		}
		slices.SortFunc(fs, func(a, b found) int { return cmp.Compare(b.seq, a.seq) })
		for _, f := range fs {
			if len(seen) >= s.cfg.userScanMax {
				truncated = true
				break
			}
			seen[f.subject] = true
			if f.data != nil {
				jobs = append(jobs, f.data)
			}
		}
		if truncated || lo <= first {
			break
		}
		hi, window = lo-1, 2*window
	}
	slices.Reverse(jobs) // oldest first, in stream order, as before
	return jobs, last, truncated, nil
}
