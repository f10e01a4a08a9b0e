package processor

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/beamline/beamline/pkg/flow"
)

// fairness keeps one user from taking every worker: at most MaxPerUser jobs
// of a user run at once (a flow.KeyedLimiter). A job whose user is at the
// limit is parked in a bounded waiting room — it holds no worker, so other
// users' jobs go on — and is run by the worker that finishes one of that
// user's jobs, which hands its slot over instead of releasing it. Parked
// messages get InProgress heartbeats like every held message.
//
// admit and done take the user's shard lock around the limiter, so a job
// cannot be parked just after the last running job of its user looked for
// a successor (no stranded jobs).
type fairness struct {
	lim      *flow.KeyedLimiter
	seed     maphash.Seed
	capacity int64
	parked   atomic.Int64
	shards   [shardCount]roomShard
	closed   atomic.Bool
}

type roomShard struct {
	mu    sync.Mutex
	users map[string][]*delivery
}

func newFairness(perUser, capacity int) *fairness {
	f := &fairness{lim: flow.NewKeyedLimiter(perUser), seed: maphash.MakeSeed(), capacity: int64(capacity)}
	for i := range f.shards {
		f.shards[i].users = make(map[string][]*delivery)
	}
	return f
}

type admission int

const (
	admitRun    admission = iota // run it now: a slot of its user is held
	admitParked                  // parked: a finishing job of the user will run it
	admitFull                    // waiting room full: Nak it with a delay
	admitClosed                  // shutting down: Nak it
)

// admit decides what happens to d. A Nak'd job (admitFull) loses nothing:
// the consumers redeliver without limit and attempts are counted from the
// job's snapshot, so a full room never costs a job its last attempt.
func (f *fairness) admit(d *delivery) admission {
	user := d.job.User
	s := &f.shards[maphash.String(f.seed, user)%shardCount]
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.closed.Load() {
		return admitClosed
	}
	if f.lim.TryAcquire(user) {
		return admitRun
	}
	if f.parked.Load() >= f.capacity {
		return admitFull
	}
	s.users[user] = append(s.users[user], d)
	f.parked.Add(1)
	return admitParked
}

// done is called when a job of user ends. It returns the next parked job of
// that user, to be run by the caller with the slot it still holds, or nil
// after releasing the slot.
func (f *fairness) done(user string) *delivery {
	s := &f.shards[maphash.String(f.seed, user)%shardCount]
	s.mu.Lock()
	defer s.mu.Unlock()
	if q := s.users[user]; len(q) > 0 && !f.closed.Load() {
		d := q[0]
		q[0] = nil
		if len(q) == 1 {
			delete(s.users, user)
		} else {
			s.users[user] = q[1:]
		}
		f.parked.Add(-1)
		return d
	}
	f.lim.Release(user)
	return nil
}

// close stops admitting and returns every parked delivery (to be Nak'd).
func (f *fairness) close() []*delivery {
	f.closed.Store(true)
	var out []*delivery
	for i := range f.shards {
		s := &f.shards[i]
		s.mu.Lock()
		for u, q := range s.users {
			out = append(out, q...)
			delete(s.users, u)
		}
		s.mu.Unlock()
	}
	f.parked.Add(-int64(len(out)))
	return out
}
