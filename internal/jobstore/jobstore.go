// Package jobstore is the one place where a job's state changes. Every change
// is a compare-and-set of the job's snapshot in the job_status KV bucket
// followed by the event that announces it on events.<user>.<job>, so:
//
//   - terminal states are final: a late or duplicate change finds the stored
//     snapshot terminal and writes nothing (ErrTerminal);
//   - seq grows by exactly one per change, and the event's Nats-Msg-Id is
//     <job>:<seq>, so publishing an event again (after a crash between the KV
//     write and the publish) is de-duplicated by JetStream;
//   - the KV write comes first: an event is never published for a change that
//     lost its compare-and-set.
//
// A job's first change creates its snapshot (lookup.go: until then its JOBS
// message is its state). Ingest cancels; the processor runs the lifecycle;
// the notifier and GET /v1/jobs/{id} read (Lookup).
package jobstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// Sentinel errors.
var (
	ErrNotFound = errors.New("jobstore: job not found")
	ErrTerminal = errors.New("jobstore: job is already in a terminal state")
	ErrExists   = errors.New("jobstore: job exists")
	ErrConflict = errors.New("jobstore: too many concurrent writers")
	// ErrUnannounced: the stored snapshot's event is not in EVENTS and
	// could not be published, so no change was written over it (seq N+1
	// is never stored while N's event is missing). Nothing was stored;
	// retry once EVENTS takes writes again.
	ErrUnannounced = errors.New("jobstore: the job's last change is not announced; nothing stored")
)

// Config configures a Store.
type Config struct {
	// Source is the CloudEvents source of the events this store publishes,
	// e.g. "/beamline/processor".
	Source string
	// Traceparent, when set, returns the W3C traceparent to put on an event
	// published under ctx.
	Traceparent func(ctx context.Context) string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Store reads and changes job snapshots.
type Store struct {
	kv  jetstream.KeyValue
	js  jetstream.JetStream
	cfg Config
	// kvPrefix is the subject prefix of kv's keys, "$KV.<bucket>.", for
	// writes that bypass kv (put). Beamline's services use no JetStream
	// domain or API prefix, so it is the bucket's own.
	kvPrefix string
	eventsCache
}

// New returns a Store on the job_status bucket kv.
func New(js jetstream.JetStream, kv jetstream.KeyValue, cfg Config) *Store {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Source == "" {
		cfg.Source = "/beamline"
	}
	return &Store{kv: kv, js: js, cfg: cfg, kvPrefix: "$KV." + kv.Bucket() + "."}
}

// Get returns a job's snapshot and its KV revision.
func (s *Store) Get(ctx context.Context, id string) (envelope.Snapshot, uint64, error) {
	e, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return envelope.Snapshot{}, 0, ErrNotFound
	}
	if err != nil {
		return envelope.Snapshot{}, 0, fmt.Errorf("jobstore: get %s: %w", id, err)
	}
	snap, err := envelope.DecodeSnapshot(e.Value())
	if err != nil {
		return envelope.Snapshot{}, 0, fmt.Errorf("jobstore: decode %s: %w", id, err)
	}
	return snap, e.Revision(), nil
}

// Create stores the queued snapshot (seq 0) of a job. Beamline's services
// never write one (a job's first change creates its snapshot, see
// RevAbsent); it is for tools and tests that put a job in a known state.
// It publishes no event. ErrExists means the job is already stored.
func (s *Store) Create(ctx context.Context, j envelope.Job) (envelope.Snapshot, error) {
	snap, _, err := s.CreateAt(ctx, j)
	return snap, err
}

// CreateAt is Create that also returns the KV revision of the stored
// snapshot, so the caller's next change can be an ApplyAt without a read.
func (s *Store) CreateAt(ctx context.Context, j envelope.Job) (envelope.Snapshot, uint64, error) {
	snap := envelope.NewSnapshot(j)
	b, err := snap.Marshal()
	if err != nil {
		return snap, 0, err
	}
	rev, err := s.kv.Create(ctx, j.ID, b)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return snap, 0, ErrExists
		}
		return snap, 0, fmt.Errorf("jobstore: create %s: %w", j.ID, err)
	}
	return snap, rev, nil
}

// Claim creates the snapshot of job j, which nobody has written yet, as
// `running` attempt attempt at seq 0: the job is taken, visibly (GET and
// joins say running), before its provider is called, and any later change
// — a cancel — is a compare-and-set after it. It has no event: it takes no
// seq, so the next change (the outcome, or running at seq 1 with its
// started event) is the job's first event. ErrExists means a snapshot is
// stored (a cancel came first, or another run): read it.
func (s *Store) Claim(ctx context.Context, j envelope.Job, attempt int) (envelope.Snapshot, uint64, error) {
	snap := envelope.NewSnapshot(j)
	snap.Status = envelope.StatusRunning
	snap.Attempt = attempt
	snap.UpdatedAt = s.cfg.Now().UTC()
	if err := snap.Validate(); err != nil {
		return snap, 0, err
	}
	b, err := snap.Marshal()
	if err != nil {
		return snap, 0, err
	}
	rev, err := s.create(ctx, j.ID, b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return snap, 0, ErrExists
	}
	if err != nil {
		return snap, 0, fmt.Errorf("jobstore: claim %s: %w", j.ID, err)
	}
	return snap, rev, nil
}

// Mutation changes a snapshot in place. Returning an error aborts the change.
type Mutation func(*envelope.Snapshot) error

// Apply loads the job's snapshot, applies mutate, bumps seq and updated_at,
// writes it back by compare-and-set (retrying on a concurrent write) and then
// publishes the event of type t. When the job has no snapshot and seed is
// not nil (the job's message, which nobody has written yet), the change is
// applied to seed's queued snapshot and creates the job's snapshot (as
// ApplyAt at RevAbsent). A stored terminal snapshot is
// returned unchanged with ErrTerminal. When the KV write succeeds but the
// publish fails, the stored snapshot is returned with a *NotPublishedError
// (ErrNotPublished): the change is made, only its event is missing.
//
// Apply costs one KV read per change; a caller that carries the snapshot and
// revision from one change to the next uses ApplyAt and saves it.
func (s *Store) Apply(ctx context.Context, id string, seed *envelope.Job, t envelope.Type, mutate Mutation) (envelope.Snapshot, error) {
	snap, _, err := s.applyLoop(ctx, id, seed, t, mutate)
	return snap, err
}

// ApplyAt is Apply for a caller that already holds the job's snapshot cur at
// KV revision rev (from Get, or from the previous ApplyAt): it applies mutate
// to cur and writes at rev without reading first. The caller vouches that
// cur's event is in EVENTS (it published it, or EnsurePublished confirmed
// it): whoever writes seq N+1 makes sure seq N's event exists, or N's event
// could be lost for good (the bucket keeps only the latest snapshot). The
// store makes sure of it itself for every snapshot it reads. Only when that
// compare-and-set loses (someone else wrote the job meanwhile: a cancel, a
// second processor) does it fall back to Apply's read-modify-write loop, so
// mutate must be written against whatever snapshot it is given, not against
// cur. It returns the snapshot and revision now stored. rev 0 means "not
// known" and goes straight to the loop; RevAbsent means "no snapshot stored"
// (cur is the job's queued snapshot from Lookup or envelope.NewSnapshot) and
// the change creates it. A terminal cur is returned with
// ErrTerminal (terminal states are final, so a cached one is authoritative).
//
// Round trips of a change: 1 KV write + 1 event publish; a lost
// compare-and-set adds 1 KV read and 1 KV write per retry.
func (s *Store) ApplyAt(ctx context.Context, cur envelope.Snapshot, rev uint64, t envelope.Type, mutate Mutation) (envelope.Snapshot, uint64, error) {
	if rev == 0 {
		return s.applyLoop(ctx, cur.ID, nil, t, mutate)
	}
	if cur.Status.Terminal() {
		return cur, rev, ErrTerminal
	}
	next, msg, b, err := s.prepare(ctx, cur, t, mutate)
	if err != nil {
		return cur, rev, err
	}
	newRev, err := s.write(ctx, cur.ID, b, rev)
	if isWrongRevision(err) {
		return s.applyLoop(ctx, cur.ID, nil, t, mutate)
	}
	if err != nil {
		return cur, rev, err
	}
	return next, newRev, s.announce(ctx, msg, next, newRev)
}

// write stores b as id's snapshot by compare-and-set at rev; at RevAbsent it
// creates the snapshot, and finding one already there is a lost
// compare-and-set (isWrongRevision).
func (s *Store) write(ctx context.Context, id string, b []byte, rev uint64) (uint64, error) {
	if rev == RevAbsent {
		newRev, err := s.create(ctx, id, b)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, errCreateLost
		}
		if err != nil {
			return 0, fmt.Errorf("jobstore: create %s: %w", id, err)
		}
		return newRev, nil
	}
	newRev, err := s.put(ctx, id, b, rev)
	if err != nil && !isWrongRevision(err) {
		return 0, fmt.Errorf("jobstore: update %s: %w", id, err)
	}
	return newRev, err
}

// create is kv.Create of a job's first snapshot. Its common outcome,
// stored, costs one publish read without encoding/json (natsx.Publish). A
// create refused because the key holds a message goes to nats.go's Create,
// which tells a key that exists (ErrKeyExists) from one whose delete
// marker may be written over.
func (s *Store) create(ctx context.Context, id string, b []byte) (uint64, error) {
	rev, err := s.put(ctx, id, b, 0)
	if isWrongRevision(err) {
		return s.kv.Create(ctx, id, b)
	}
	return rev, err
}

// put is kv.Update (at rev 0: a create that expects no message on the
// key) as one natsx.Publish: the same subject and header, the same
// errors (a lost compare-and-set is a *jetstream.APIError, isWrongRevision).
func (s *Store) put(ctx context.Context, id string, b []byte, rev uint64) (uint64, error) {
	m := &nats.Msg{Subject: s.kvPrefix + id, Header: nats.Header{}, Data: b}
	m.Header[jetstream.ExpectedLastSubjSeqHeader] = []string{strconv.FormatUint(rev, 10)}
	ack, err := natsx.Publish(ctx, s.js.Conn(), m)
	return ack.Sequence, err
}

// errCreateLost is a create at RevAbsent that found a snapshot: someone
// wrote the job first. It counts as a lost compare-and-set.
var errCreateLost = errors.New("jobstore: the snapshot was created meanwhile")

// applyLoop is the read-modify-write loop of Apply; it also returns the
// revision it stored (or read, on ErrTerminal and mutation errors).
func (s *Store) applyLoop(ctx context.Context, id string, seed *envelope.Job, t envelope.Type, mutate Mutation) (envelope.Snapshot, uint64, error) {
	conflicts := 0
	for range maxAttempts {
		if conflicts > 0 {
			if err := conflictPause(ctx, conflicts); err != nil {
				return envelope.Snapshot{}, 0, fmt.Errorf("jobstore: update %s: %w", id, err)
			}
		}
		cur, rev, err := s.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			// A direct get may come from a replica that lags (after a lost
			// create, the snapshot is known to exist): only the leader's
			// "not found" stands.
			cur, rev, err = s.getOnLeader(ctx, id)
		}
		if errors.Is(err, ErrNotFound) && seed != nil {
			// Never written: the change creates the snapshot, starting
			// from the queued state of the job's message.
			cur, rev, err = envelope.NewSnapshot(*seed), RevAbsent, nil
		}
		if err != nil {
			return envelope.Snapshot{}, 0, err
		}
		if cur.Status.Terminal() {
			return cur, rev, ErrTerminal
		}
		// Read here, so nobody vouches for its event: the writer that
		// stored it may have died, or lost the reply, before publishing.
		if err := s.ensureBefore(ctx, cur); err != nil {
			return cur, rev, err
		}
		next, msg, b, err := s.prepare(ctx, cur, t, mutate)
		if err != nil {
			return cur, rev, err
		}
		newRev, err := s.write(ctx, id, b, rev)
		if err != nil {
			if isWrongRevision(err) {
				conflicts++
				continue
			}
			return cur, rev, err
		}
		return next, newRev, s.announce(ctx, msg, next, newRev)
	}
	return envelope.Snapshot{}, 0, fmt.Errorf("%w: %s", ErrConflict, id)
}

// ensureBefore makes sure the event of cur, a stored snapshot about to be
// written over, is in EVENTS: ErrUnannounced when it is not and cannot be
// published. A gap older than cur (ErrSeqGap) cannot be mended by refusing
// the change, so the change goes on.
func (s *Store) ensureBefore(ctx context.Context, cur envelope.Snapshot) error {
	err := s.EnsurePublished(ctx, cur)
	if err == nil || errors.Is(err, ErrSeqGap) {
		return nil
	}
	return fmt.Errorf("%w: %s seq %d: %w", ErrUnannounced, cur.ID, cur.Seq, err)
}

// announce publishes the event of a change just stored at rev; a failure is
// a *NotPublishedError (ErrNotPublished).
func (s *Store) announce(ctx context.Context, msg *nats.Msg, snap envelope.Snapshot, rev uint64) error {
	if err := s.publish(ctx, msg, snap); err != nil {
		return &NotPublishedError{Snapshot: snap, Rev: rev, Err: err}
	}
	return nil
}

// prepare applies mutate to a copy of cur, bumps seq and updated_at, and
// builds the event and the KV value of the result.
func (s *Store) prepare(ctx context.Context, cur envelope.Snapshot, t envelope.Type, mutate Mutation) (envelope.Snapshot, *nats.Msg, []byte, error) {
	next := cur
	if err := mutate(&next); err != nil {
		return cur, nil, nil, err
	}
	next.Seq = cur.Seq + 1
	next.UpdatedAt = s.cfg.Now().UTC()
	// Build (and so validate) the event before the compare-and-set: a
	// snapshot that cannot be announced must not be stored either, or the
	// job would be left unreadable with no event for its seq.
	// The event's data is the snapshot as stored: encoded once for both.
	msg, b, err := envelope.EncodeEventMsg(t, next, s.cfg.Source, s.traceparent(ctx))
	if err != nil {
		return cur, nil, nil, err
	}
	return next, msg, b, nil
}

// maxAttempts bounds Apply's compare-and-set loop. Every lost attempt means
// another writer succeeded, so the loop always makes progress; the bound only
// stops a pathological pile-up.
const maxAttempts = 64

// conflictPause waits a short random time after a lost compare-and-set so
// that writers colliding on one job spread out instead of colliding again.
func conflictPause(ctx context.Context, conflicts int) error {
	ceiling := time.Millisecond << min(conflicts, 5) // 2ms .. 32ms
	return flow.Sleep(ctx, time.Duration(rand.Int64N(int64(ceiling))))
}

// Publish publishes the event of a stored snapshot. It is idempotent within
// the EVENTS duplicate window, which is what makes re-publishing the current
// snapshot after a crash safe.
func (s *Store) Publish(ctx context.Context, t envelope.Type, snap envelope.Snapshot) error {
	msg, err := s.eventMsg(ctx, t, snap)
	if err != nil {
		return err
	}
	return s.publish(ctx, msg, snap)
}

func (s *Store) eventMsg(ctx context.Context, t envelope.Type, snap envelope.Snapshot) (*nats.Msg, error) {
	return envelope.NewEventMsg(t, snap, s.cfg.Source, s.traceparent(ctx))
}

func (s *Store) traceparent(ctx context.Context) string {
	if s.cfg.Traceparent == nil {
		return ""
	}
	return s.cfg.Traceparent(ctx)
}

func (s *Store) publish(ctx context.Context, msg *nats.Msg, snap envelope.Snapshot) error {
	if _, err := natsx.Publish(ctx, s.js.Conn(), msg); err != nil {
		return fmt.Errorf("jobstore: publish %s seq %d: %w", snap.ID, snap.Seq, err)
	}
	return nil
}

// EventTypeOf is the event type that announces a stored snapshot: what to
// re-publish when the snapshot is all one has.
func EventTypeOf(snap envelope.Snapshot) envelope.Type {
	if snap.Status == envelope.StatusRunning && snap.Progress > 0 {
		return envelope.TypeProgress
	}
	return envelope.EventType(snap.Status)
}

// isWrongRevision reports a lost compare-and-set. A single server answers
// code 10071 (JSErrCodeStreamWrongLastSequence), a replicated stream 10164;
// nats.go wraps both with ErrKeyRevisionMismatch, which older versions lack,
// so the code is checked too.
func isWrongRevision(err error) bool {
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, errCreateLost) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant:
			return true
		}
	}
	return false
}
