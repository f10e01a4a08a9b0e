package jobstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// ErrNotPublished means a change was stored in the KV but its event was not
// published. The change is done (the KV is the truth): the caller must
// publish the stored snapshot again (Publish, EnsurePublished), never apply
// the change a second time — that would store seq+1 and leave the event of
// seq missing, or announce the same transition twice. Errors wrapping it
// are *NotPublishedError and carry the stored snapshot and revision.
var ErrNotPublished = errors.New("jobstore: change stored, event not published")

// NotPublishedError is the error of an Apply/ApplyAt whose KV write
// succeeded and whose publish failed. errors.Is(err, ErrNotPublished) holds,
// and so does errors.Is for the publish error (Err).
type NotPublishedError struct {
	Snapshot envelope.Snapshot // as stored
	Rev      uint64            // its KV revision
	Err      error             // why the publish failed
}

func (e *NotPublishedError) Error() string {
	return fmt.Sprintf("jobstore: %s seq %d stored, event not published: %v", e.Snapshot.ID, e.Snapshot.Seq, e.Err)
}

// Unwrap makes both ErrNotPublished and the cause match errors.Is.
func (e *NotPublishedError) Unwrap() []error { return []error{ErrNotPublished, e.Err} }

// EnsurePublished publishes the event of the stored snapshot snap unless
// EVENTS already holds it: it reads the last message of
// events.<user>.<job> (a direct get, EVENTS has allow_direct) and publishes
// only when that message's Beamline-Seq is below snap.Seq (or there is
// none). Unlike Publish it does not depend on the EVENTS duplicate window,
// so a job redelivered long after it ended gets no second final event.
//
// Every writer publishes seq N's event before it stores N+1 (ApplyAt), so
// a last event at or above snap.Seq means snap's is there, and one below
// snap.Seq-1 means events are missing that nobody can publish any more
// (the bucket keeps only the latest snapshot): snap's event is published
// all the same, and the error is a *GapError (ErrSeqGap) for the caller to
// report. A job whose events all aged out of EVENTS (max_age) looks the
// same.
//
// A snapshot of seq 0 (queued, or claimed: Claim) has no event; nothing is
// done for it.
func (s *Store) EnsurePublished(ctx context.Context, snap envelope.Snapshot) error {
	return s.EnsurePublishedAs(ctx, EventTypeOf(snap), snap)
}

// EnsurePublishedAs is EnsurePublished for a caller that knows the event's
// type (a progress report of 0 % reads as started from the snapshot alone).
func (s *Store) EnsurePublishedAs(ctx context.Context, t envelope.Type, snap envelope.Snapshot) error {
	if snap.Seq == 0 {
		return nil
	}
	last, err := s.lastEventSeq(ctx, snap.User, snap.ID)
	if err != nil {
		return err
	}
	if last >= snap.Seq {
		return nil
	}
	if err := s.Publish(ctx, t, snap); err != nil {
		return err
	}
	if last+1 < snap.Seq {
		return &GapError{ID: snap.ID, From: last + 1, To: snap.Seq - 1}
	}
	return nil
}

// ErrSeqGap: a job's events lack seqs that can no longer be published.
var ErrSeqGap = errors.New("jobstore: events missing from EVENTS")

// GapError names the seqs EnsurePublished found missing before the one it
// published.
type GapError struct {
	ID       string
	From, To uint64
}

func (e *GapError) Error() string {
	return fmt.Sprintf("jobstore: %s: events of seq %d..%d are not in EVENTS and cannot be published any more", e.ID, e.From, e.To)
}

// Is makes errors.Is(err, ErrSeqGap) hold.
func (e *GapError) Is(target error) bool { return target == ErrSeqGap }

// lastEventSeq is the Beamline-Seq of the last stored event of a job, 0 when
// it has none.
func (s *Store) lastEventSeq(ctx context.Context, user, id string) (uint64, error) {
	st, err := s.eventsStream(ctx)
	if err != nil {
		return 0, err
	}
	m, err := st.GetLastMsgForSubject(ctx, envelope.EventSubject(user, id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("jobstore: last event of %s: %w", id, err)
	}
	seq, ok := envelope.SeqOf(m.Header)
	if !ok {
		// Not one of ours (no Beamline-Seq): read the seq from the body.
		_, es, derr := envelope.DecodeEvent(m.Data)
		if derr != nil {
			return 0, fmt.Errorf("jobstore: last event of %s: %w", id, derr)
		}
		seq = es.Seq
	}
	return seq, nil
}

// eventsStream is the EVENTS stream handle, looked up once (its info tells
// nats.go to use direct gets).
func (s *Store) eventsStream(ctx context.Context) (jetstream.Stream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.events != nil {
		return s.events, nil
	}
	st, err := s.js.Stream(ctx, streams.Events)
	if err != nil {
		return nil, fmt.Errorf("jobstore: stream %s: %w", streams.Events, err)
	}
	s.events = st
	return st, nil
}

// Dead-letter markers. A dead job's DLQ copy (dlq.<kind>, shared by every
// job of the kind, so a last-by-subject read cannot find one job's copy)
// is recorded in the job_status bucket under dlq.<job> — a key no job id can
// take, ids have no dots — holding the copy's DLQ stream sequence. A
// redelivery of a dead job copies it again only when the marker is missing.
// The copy carries Nats-Msg-Id dead:<job>, so the one window left (a crash
// between the copy and the marker) is covered by the DLQ duplicate window,
// which is far longer than the redelivery that follows a crash
// (ack_wait). The key is envelope.DLQMarkerKey.

// DeadLettered reports whether job id's DLQ copy is recorded.
func (s *Store) DeadLettered(ctx context.Context, id string) (bool, error) {
	_, err := s.kv.Get(ctx, envelope.DLQMarkerKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("jobstore: dlq marker of %s: %w", id, err)
	}
	return true, nil
}

// MarkDeadLettered records that job id's DLQ copy is stored at DLQ stream
// sequence seq.
func (s *Store) MarkDeadLettered(ctx context.Context, id string, seq uint64) error {
	if _, err := s.kv.Put(ctx, envelope.DLQMarkerKey(id), []byte(strconv.FormatUint(seq, 10))); err != nil {
		return fmt.Errorf("jobstore: dlq marker of %s: %w", id, err)
	}
	return nil
}

// eventsCache holds the EVENTS stream handle, looked up once.
type eventsCache struct {
	mu     sync.Mutex
	events jetstream.Stream
}
