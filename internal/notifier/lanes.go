package notifier

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/beamline/beamline/pkg/envelope"
)

// laneCount is how many goroutines hand live messages to their topics.
const laneCount = 16

// defaultLaneDepth is how many live messages one lane holds before the
// client library drops further ones (counted per subscription).
const defaultLaneDepth = 8192

// lane is one channel that the live subscriptions of a share of the
// topics deliver into, and the goroutine that hands each message to its
// topic. A nats.go callback subscription runs a goroutine per
// subscription — one per joined topic, 15,000 parked goroutines and their
// stacks at 15,000 idle connections; channel subscriptions run none. A
// topic always uses the same lane, so its messages stay in order.
//
// A full lane makes the client library drop the message and count it on
// the topic's subscription: the topic's next message notices the count
// and reads what it missed (onLive), and a dropped last event is read by
// the reconciliation sweep, which reads every topic the stream moved past.
type lane struct {
	ch   chan *nats.Msg
	mu   sync.Mutex
	subs map[*nats.Subscription]*topic
}

func (h *hub) lane(name string) *lane {
	return &h.lanes[int(h.hash(name)/shardCount)%laneCount]
}

// subscribeLive subscribes t to its live subject on its lane.
func (h *hub) subscribeLive(t *topic) (*nats.Subscription, error) {
	l := h.lane(t.name)
	// Registered before the lane can hand the first message over: the
	// lane looks topics up under the same lock.
	l.mu.Lock()
	defer l.mu.Unlock()
	nsub, err := h.nc.ChanSubscribe(envelope.LiveSubject(t.subject), l.ch)
	if err != nil {
		return nil, err
	}
	l.subs[nsub] = t
	return nsub, nil
}

// unsubscribeLive ends nsub; messages of it still in the lane are skipped.
func (h *hub) unsubscribeLive(t *topic, nsub *nats.Subscription) {
	_ = nsub.Unsubscribe()
	l := h.lane(t.name)
	l.mu.Lock()
	delete(l.subs, nsub)
	l.mu.Unlock()
}

// runLanes hands live messages to their topics until ctx is done.
func (h *hub) runLanes(ctx context.Context, wg *sync.WaitGroup) {
	for i := range h.lanes {
		l := &h.lanes[i]
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case m := <-l.ch:
					l.mu.Lock()
					t := l.subs[m.Sub]
					l.mu.Unlock()
					if t != nil {
						h.onLive(ctx, t, m)
					}
				}
			}
		})
	}
}
