package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// maxReplay bounds one replay; beyond it the join says recovered:false and
// the client starts again from the snapshot.
const maxReplay = 10000

// readFrom calls fn for every message on subject (may be a wildcard) stored
// at or after seq, in stream order, until the end of the stream or fn
// returns false. It uses direct gets, so it costs no consumer.
func (s *Service) readFrom(ctx context.Context, subject string, seq uint64, fn func(*jetstream.RawStreamMsg) bool) error {
	if seq == 0 {
		seq = 1
	}
	for {
		m, err := s.events.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if !fn(m) {
			return nil
		}
		seq = m.Sequence + 1
	}
}

// replayJob returns the job's events with a job seq after n. recovered is
// false when the stream no longer holds event n+1 (aged out or purged).
func (s *Service) replayJob(ctx context.Context, subject string, n, current uint64) ([]*event, bool, error) {
	if n >= current {
		return nil, true, nil // nothing missed
	}
	var out []*event
	recovered, first := true, true
	err := s.readFrom(ctx, subject, 1, func(m *jetstream.RawStreamMsg) bool {
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
// recovered is false when the stream's first message is later than n+1:
// events of this user may have aged out.
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
	err = s.readFrom(ctx, userSubject(user), n+1, func(m *jetstream.RawStreamMsg) bool {
		env, snap, err := envelope.DecodeEvent(m.Data)
		if err != nil {
			return true
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
	return out, true, nil
}

// userJobs returns the snapshots of the user's non-terminal jobs, from the
// latest EVENTS message per subject, and the highest stream seq seen.
func (s *Service) userJobs(ctx context.Context, user string) ([]json.RawMessage, uint64, error) {
	cons, err := s.js.OrderedConsumer(ctx, streams.Events, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{userSubject(user)},
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		InactiveThreshold: 10 * time.Second,
	})
	if err != nil {
		return nil, 0, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, 0, err
	}
	// Delete the consumer when done rather than leave it to the inactive
	// threshold: every user-topic join makes one, and an idle one still
	// costs the server three goroutines and its state for 10 s.
	defer func() {
		dctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
		defer cancel()
		_ = s.js.DeleteConsumer(dctx, streams.Events, cons.CachedInfo().Name)
	}()
	var jobs []json.RawMessage
	var last uint64
	pending := info.NumPending
	for pending > 0 {
		batch, err := cons.Fetch(int(min(pending, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, 0, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
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
		if err := batch.Error(); err != nil {
			return nil, 0, err
		}
		if n == 0 {
			break
		}
	}
	if ctx.Err() != nil {
		return nil, 0, ctx.Err()
	}
	return jobs, last, nil
}
