package flow

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
)

// Limiter bounds concurrency: at most n holders at a time. It is a counting
// semaphore; the zero value is not usable, use NewLimiter.
//
// Waiters are not served in FIFO order. Acquire never waits beyond its
// context, so a caller that must not queue can use TryAcquire and refuse the
// work (HTTP 429, Nak) instead.
type Limiter struct {
	sem chan struct{}
}

// NewLimiter returns a Limiter with n slots. It panics if n < 1, like make
// with a negative size: the bound is a programming constant, not input.
func NewLimiter(n int) *Limiter {
	if n < 1 {
		panic(fmt.Sprintf("flow: NewLimiter(%d): n must be >= 1", n))
	}
	return &Limiter{sem: make(chan struct{}, n)}
}

// Acquire takes a slot, waiting until one is free or ctx is done (then it
// returns ctx.Err() and holds nothing). Every successful Acquire must be
// paired with one Release.
func (l *Limiter) Acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case l.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TryAcquire takes a slot if one is free right now and reports whether it
// did.
func (l *Limiter) TryAcquire() bool {
	select {
	case l.sem <- struct{}{}:
		return true
	default:
		return false
	}
}

// Release returns a slot. It panics if no slot is held, which is always a
// bug in the caller.
func (l *Limiter) Release() {
	select {
	case <-l.sem:
	default:
		panic("flow: Limiter.Release without Acquire")
	}
}

// InUse returns the number of slots currently held.
func (l *Limiter) InUse() int { return len(l.sem) }

// Cap returns n, the number of slots.
func (l *Limiter) Cap() int { return cap(l.sem) }

// keyedShards is the number of independently locked shards of a KeyedLimiter:
// per-key acquisition sits on the hot path of every job, so unrelated keys
// should not contend on one mutex.
const keyedShards = 32

// KeyedLimiter bounds concurrency per key (per user, per tenant): at most
// perKey holders for each key at a time, any number of keys in parallel.
// Memory is proportional to the keys in use: a key's entry is removed as soon
// as it has no holders and no waiters.
type KeyedLimiter struct {
	perKey int
	seed   maphash.Seed
	shards [keyedShards]keyedShard
}

type keyedShard struct {
	mu   sync.Mutex
	keys map[string]*keyedEntry
}

type keyedEntry struct {
	sem  chan struct{}
	refs int // holders + waiters; the entry is deleted when it drops to 0
}

// NewKeyedLimiter returns a KeyedLimiter allowing perKey holders per key. It
// panics if perKey < 1.
func NewKeyedLimiter(perKey int) *KeyedLimiter {
	if perKey < 1 {
		panic(fmt.Sprintf("flow: NewKeyedLimiter(%d): perKey must be >= 1", perKey))
	}
	k := &KeyedLimiter{perKey: perKey, seed: maphash.MakeSeed()}
	for i := range k.shards {
		k.shards[i].keys = make(map[string]*keyedEntry)
	}
	return k
}

func (k *KeyedLimiter) shard(key string) *keyedShard {
	return &k.shards[maphash.String(k.seed, key)%keyedShards]
}

// ref returns key's entry, creating it, and counts the caller in.
func (s *keyedShard) ref(key string, perKey int) *keyedEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.keys[key]
	if !ok {
		e = &keyedEntry{sem: make(chan struct{}, perKey)}
		s.keys[key] = e
	}
	e.refs++
	return e
}

// unref counts the caller out and removes the entry when nobody uses it.
// s.mu must be held.
func (s *keyedShard) unref(key string, e *keyedEntry) {
	e.refs--
	if e.refs == 0 {
		delete(s.keys, key)
	}
}

// Acquire takes a slot for key, waiting until one is free or ctx is done
// (then it returns ctx.Err() and holds nothing). Every successful Acquire
// must be paired with one Release(key).
func (k *KeyedLimiter) Acquire(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s := k.shard(key)
	e := s.ref(key, k.perKey)
	select {
	case e.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		defer s.mu.Unlock()
		s.unref(key, e)
		return ctx.Err()
	}
}

// TryAcquire takes a slot for key if one is free right now and reports
// whether it did.
func (k *KeyedLimiter) TryAcquire(key string) bool {
	s := k.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.keys[key]
	if !ok {
		e = &keyedEntry{sem: make(chan struct{}, k.perKey)}
	}
	select {
	case e.sem <- struct{}{}:
		e.refs++
		s.keys[key] = e
		return true
	default:
		return false
	}
}

// Release returns a slot for key. It panics if key holds no slot.
func (k *KeyedLimiter) Release(key string) {
	s := k.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.keys[key]
	if ok {
		select {
		case <-e.sem:
			s.unref(key, e)
			return
		default:
		}
	}
	panic(fmt.Sprintf("flow: KeyedLimiter.Release(%q) without Acquire", key))
}

// InUse returns the number of slots currently held for key.
func (k *KeyedLimiter) InUse(key string) int {
	s := k.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.keys[key]; ok {
		return len(e.sem)
	}
	return 0
}

// Keys returns the number of keys with holders or waiters — the size of the
// limiter's bookkeeping.
func (k *KeyedLimiter) Keys() int {
	n := 0
	for i := range k.shards {
		s := &k.shards[i]
		s.mu.Lock()
		n += len(s.keys)
		s.mu.Unlock()
	}
	return n
}
