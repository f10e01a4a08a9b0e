package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// maxReplay bounds one replay; beyond it the join says recovered:false and
// the client starts again from the snapshot.
const maxReplay = 10000

// replayJob returns the job's events with a job seq after n. recovered is
// false when the stream no longer holds event n+1 (aged out or purged).
func (s *Service) replayJob(ctx context.Context, subject string, n, current uint64) ([]*event, bool, error) {
	if n >= current {
		return nil, true, nil // nothing missed
	}
	var out []*event
	recovered, first := true, true
	_, err := s.readFrom(ctx, subject, 1, func(m *jetstream.RawStreamMsg) bool {
		env, snap, err := envelope.DecodeEvent(m.Data)
		if err != nil {
			return true
		}
		if first {
			first = false
			if snap.Seq > n+1 {
				recovered = false
				return false
			}
		}
		if snap.Seq > n {
			out = append(out, newJobEvent(env, snap, m.Sequence))
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

// replayUser returns the user's events with a stream seq after n.
// recovered is false when events of this user stored after n may be gone:
// the stream's first message is later than n+1 (aged out), or a job's first
// replayed event does not follow the last one of that job at or below n
// (EVENTS keeps at most max_msgs_per_subject events per job and drops a
// chatty job's oldest ones, whatever the stream's first seq says).
func (s *Service) replayUser(ctx context.Context, user string, n uint64) ([]*event, bool, error) {
	info, err := s.events.Info(ctx)
	if err != nil {
		return nil, false, err
	}
	if info.State.Msgs > 0 && info.State.FirstSeq > n+1 {
		return nil, false, nil
	}
	var out []*event
	recovered := true
	firstOf := map[string]uint64{} // job subject → job seq of its first replayed event
	_, err = s.readFrom(ctx, userSubject(user), n+1, func(m *jetstream.RawStreamMsg) bool {
		env, snap, err := envelope.DecodeEvent(m.Data)
		if err != nil {
			return true
		}
		if _, ok := firstOf[m.Subject]; !ok {
			firstOf[m.Subject] = snap.Seq
		}
		out = append(out, newJobEvent(env, snap, m.Sequence))
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
		prev, err := s.lastUpTo(ctx, check, n)
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
// latest EVENTS message per subject, and the highest stream seq seen. The
// scan is bounded in count (cfg.userScanMax subjects) and time
// (cfg.userScanTime): a user with more jobs than that gets what was found
// with truncated set, never an error, because an error reply makes the
// Phoenix client rejoin forever and each rejoin would scan again.
func (s *Service) userJobs(ctx context.Context, user string) (jobs []json.RawMessage, last uint64, truncated bool, err error) {
	cons, err := s.js.OrderedConsumer(ctx, streams.Events, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{userSubject(user)},
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		InactiveThreshold: 10 * time.Second,
	})
	if err != nil {
		return nil, 0, false, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, 0, false, err
	}
	// Delete the consumer when done rather than leave it to the inactive
	// threshold: every user-topic join makes one, and an idle one still
	// costs the server three goroutines and its state for 10 s.
	defer func() {
		dctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
		defer cancel()
		_ = s.js.DeleteConsumer(dctx, streams.Events, cons.CachedInfo().Name)
	}()
	deadline := time.Now().Add(s.cfg.userScanTime)
	scanned := 0
	pending := info.NumPending
	for pending > 0 {
		wait := time.Until(deadline)
		if scanned >= s.cfg.userScanMax || wait < 10*time.Millisecond || ctx.Err() != nil {
			return jobs, last, true, nil
		}
		batch, err := cons.Fetch(int(min(pending, 256, uint64(s.cfg.userScanMax-scanned))), jetstream.FetchMaxWait(min(wait, 5*time.Second)))
		if err != nil {
			return nil, 0, false, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			scanned++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			last = max(last, md.Sequence.Stream)
			pending = md.NumPending
			env, snap, err := envelope.DecodeEvent(m.Data())
			if err == nil && !snap.Status.Terminal() {
				jobs = append(jobs, env.Data)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			return nil, 0, false, err
		}
		if n == 0 {
			// Nothing within the wait: the server is slow; say so rather
			// than fail the join.
			return jobs, last, pending > 0, nil
		}
	}
	return jobs, last, false, nil
}
