package flow

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// MailboxConfig configures a Mailbox. Zero values are documented defaults.
type MailboxConfig struct {
	// QueueSize bounds the messages waiting per key. 0 → 64.
	QueueSize int
	// IdleTimeout is how long a key's goroutine waits for a message before it
	// exits and the key is forgotten. 0 → 30s.
	IdleTimeout time.Duration
	// OnPanic, if set, is called with the key and the recovered panic when a
	// message panics. The key's goroutine survives and goes on with the next
	// message. It is called on the key's goroutine, so calls for different
	// keys may run concurrently. (The key is typed any because MailboxConfig
	// is not generic; it holds a K.)
	OnPanic func(key any, p *PanicError)
}

const (
	defaultQueueSize   = 64
	defaultIdleTimeout = 30 * time.Second
)

// Mailbox serialises work per key, like one GenServer per key: the messages
// sent for one key run one at a time in the order they were sent, messages
// for different keys run in parallel. Each active key has one goroutine and
// one bounded queue; a key with no messages for IdleTimeout is dropped, so
// memory follows the number of busy keys, not the number ever seen.
//
// Lifecycle: Send may be called before Run (messages wait in their queue
// until Run starts), while Run runs, but not after Run has returned
// (ErrMailboxClosed). A Mailbox runs once.
//
// Every accepted message is run exactly once: when Run's context is
// cancelled, the messages already queued are still run, with that cancelled
// context, so they can give their work back (for example Nak a NATS message)
// instead of being dropped silently. Run returns when all have run.
//
// All keys share one mutex, held only for a map access and a non-blocking
// channel send per Send — not worth sharding until a profile says so.
type Mailbox[K comparable] struct {
	queueSize   int
	idleTimeout time.Duration
	onPanic     func(key any, p *PanicError)

	mu    sync.Mutex
	state mailboxState
	ctx   context.Context // Run's context, for goroutines started by Send
	keys  map[K]*mailboxKey
	wg    sync.WaitGroup // one per key goroutine
}

type mailboxState int

const (
	mailboxIdle mailboxState = iota
	mailboxRunning
	mailboxClosed
)

type mailboxKey struct {
	queue   chan func(ctx context.Context)
	started bool
}

// NewMailbox returns a Mailbox; start it with Run. Negative sizes or
// durations in cfg are treated as zero (the default).
func NewMailbox[K comparable](cfg MailboxConfig) *Mailbox[K] {
	m := &Mailbox[K]{
		queueSize:   cfg.QueueSize,
		idleTimeout: cfg.IdleTimeout,
		onPanic:     cfg.OnPanic,
		keys:        make(map[K]*mailboxKey),
	}
	if m.queueSize <= 0 {
		m.queueSize = defaultQueueSize
	}
	if m.idleTimeout <= 0 {
		m.idleTimeout = defaultIdleTimeout
	}
	return m
}

// Send queues msg for key and returns without waiting for it to run. It
// returns ErrMailboxFull at once if the key's queue is full — the caller
// learns about overload instead of blocking — ErrMailboxClosed once Run has
// returned (or is returning), and ctx.Err() if ctx is already done.
//
// msg receives Run's context.
func (m *Mailbox[K]) Send(ctx context.Context, key K, msg func(ctx context.Context)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state == mailboxClosed {
		return ErrMailboxClosed
	}
	k, ok := m.keys[key]
	if !ok {
		k = &mailboxKey{queue: make(chan func(context.Context), m.queueSize)}
		m.keys[key] = k
	}
	select {
	case k.queue <- msg:
	default:
		return fmt.Errorf("%w: key %v: %d messages queued", ErrMailboxFull, key, m.queueSize)
	}
	if m.state == mailboxRunning && !k.started {
		m.start(key, k)
	}
	return nil
}

// start launches key's goroutine; m.mu must be held and the mailbox running.
func (m *Mailbox[K]) start(key K, k *mailboxKey) {
	k.started = true
	m.wg.Go(func() { m.serve(m.ctx, key, k) })
}

// Run starts the key goroutines and serves until ctx is done, then runs what
// is still queued (with ctx) and returns nil once every key goroutine has
// returned. It returns ErrAlreadyRunning or ErrMailboxClosed if the mailbox
// is running or has run.
func (m *Mailbox[K]) Run(ctx context.Context) error {
	m.mu.Lock()
	switch m.state {
	case mailboxRunning:
		m.mu.Unlock()
		return ErrAlreadyRunning
	case mailboxClosed:
		m.mu.Unlock()
		return ErrMailboxClosed
	}
	m.state = mailboxRunning
	m.ctx = ctx
	for key, k := range m.keys {
		m.start(key, k)
	}
	m.mu.Unlock()

	<-ctx.Done()

	m.mu.Lock()
	m.state = mailboxClosed // no goroutine is started after this
	m.mu.Unlock()
	m.wg.Wait()
	return nil
}

// Len returns the number of active keys: keys with a goroutine or with
// queued messages.
func (m *Mailbox[K]) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.keys)
}

// serve is the goroutine of one key.
func (m *Mailbox[K]) serve(ctx context.Context, key K, k *mailboxKey) {
	idle := time.NewTimer(m.idleTimeout)
	defer idle.Stop()
	for {
		select {
		case msg := <-k.queue:
			m.deliver(ctx, key, msg)
			idle.Reset(m.idleTimeout)
		case <-idle.C:
			if m.retire(key, k) {
				return
			}
			idle.Reset(m.idleTimeout)
		case <-ctx.Done():
			for {
				select {
				case msg := <-k.queue:
					m.deliver(ctx, key, msg)
				default:
					if m.retire(key, k) {
						return
					}
				}
			}
		}
	}
}

// retire forgets key if nothing is queued for it. Send enqueues under the
// same lock, so a message is never left behind in a retired queue.
func (m *Mailbox[K]) retire(key K, k *mailboxKey) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(k.queue) > 0 {
		return false
	}
	delete(m.keys, key)
	return true
}

func (m *Mailbox[K]) deliver(ctx context.Context, key K, msg func(context.Context)) {
	defer func() {
		if r := recover(); r != nil && m.onPanic != nil {
			m.onPanic(key, newPanicError(r))
		}
	}()
	msg(ctx)
}
