package processor

import (
	"context"
	"sync"

	"github.com/beamline/beamline/pkg/envelope"
)

// Scheduling, in short: every consumer (kind × priority) has a puller that
// keeps at most Prefetch messages pulled-but-unpicked (its credits). Pulled
// messages go into one ready queue per priority. Concurrency workers take
// from the ready queues by smooth weighted round robin (6:3:1 by default):
// each worker's next pick prefers the priority its round-robin turn names and
// falls back to the others in priority order, so high goes first when it has
// work, and low still gets its share while high and normal are busy. Since a
// message is only pulled when its consumer has credit, and credit returns as
// soon as a worker picks a message, nothing piles up in this process beyond
// Prefetch per consumer, and priority is decided at pick time, not by who
// pulled first.

// prioIndex maps a priority to its index in ready queues and weights.
func prioIndex(p envelope.Priority) int {
	switch p {
	case envelope.PriorityHigh:
		return 0
	case envelope.PriorityNormal:
		return 1
	default:
		return 2
	}
}

// credits is a puller's budget of pulled-but-unpicked messages. The puller
// takes all free credit (once at least half its budget is free, so pulls
// are batched) and returns what a pull did not use; workers return one
// credit per message picked.
type credits struct {
	mu     sync.Mutex
	free   int
	budget int
	wake   chan struct{} // 1-buffered: a release happened
}

func newCredits(n int) *credits {
	return &credits{free: n, budget: n, wake: make(chan struct{}, 1)}
}

// take waits until at least half the budget (or all of it, when it is 1) is
// free, then takes all free credit.
func (c *credits) take(ctx context.Context) (int, error) {
	want := max(1, c.budget/2)
	for {
		c.mu.Lock()
		if c.free >= want {
			n := c.free
			c.free = 0
			c.mu.Unlock()
			return n, nil
		}
		c.mu.Unlock()
		select {
		case <-c.wake:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

func (c *credits) release(n int) {
	if n <= 0 {
		return
	}
	c.mu.Lock()
	c.free += n
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// wrr is a smooth weighted round robin over the three priorities (nginx's
// algorithm): over sum(weights) picks each priority is named weight times,
// evenly spread. Each worker has its own, so it needs no lock.
type wrr struct {
	weights [3]int
	current [3]int
	total   int
}

func newWRR(w [3]int) *wrr { return &wrr{weights: w, total: w[0] + w[1] + w[2]} }

func (r *wrr) next() int {
	best := 0
	for i := range r.current {
		r.current[i] += r.weights[i]
		if r.current[i] > r.current[best] {
			best = i
		}
	}
	r.current[best] -= r.total
	return best
}

// readyQueues holds pulled messages per priority. Capacity is the sum of the
// credits of the priority's pullers, so a puller never blocks on a push.
type readyQueues [3]chan *delivery

// pick returns the next delivery for a worker, or a runner that rejoins
// after a detached wait (inflight.go; those come first: they finish work
// already begun), or neither once stop or done is closed.
func (q *readyQueues) pick(r *wrr, rj *rejoinQueue, stop, done <-chan struct{}) (*delivery, *rejoin) {
	for {
		if w := rj.pop(); w != nil {
			return nil, w
		}
		d, again := q.pickReady(r, rj.wake, stop, done)
		if !again {
			return d, nil
		}
	}
}

// pickReady is pick from the ready queues; again when woken by a rejoin.
func (q *readyQueues) pickReady(r *wrr, wake, stop, done <-chan struct{}) (d *delivery, again bool) {
	first := r.next()
	if d := q.try(first); d != nil {
		return d, false
	}
	for i := range q {
		if i != first {
			if d := q.try(i); d != nil {
				return d, false
			}
		}
	}
	select {
	case <-stop:
		return nil, false
	case <-done:
		return nil, false
	default:
	}
	// Nothing ready: wait for whichever priority delivers first.
	select {
	case d := <-q[0]:
		return d, false
	case d := <-q[1]:
		return d, false
	case d := <-q[2]:
		return d, false
	case <-wake:
		return nil, true
	case <-stop:
		return nil, false
	case <-done:
		return nil, false
	}
}

func (q *readyQueues) try(i int) *delivery {
	select {
	case d := <-q[i]:
		return d
	default:
		return nil
	}
}

// drain empties the queues (after the pullers and workers stopped).
func (q *readyQueues) drain() []*delivery {
	var out []*delivery
	for i := range q {
		for {
			d := q.try(i)
			if d == nil {
				break
			}
			out = append(out, d)
		}
	}
	return out
}
