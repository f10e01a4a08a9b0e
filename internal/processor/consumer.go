package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// maxAckPending sizes the max_ack_pending of every consumer. One process can
// hold, from a single consumer, at most
//
//	Concurrency (running) + WaitingRoom (parked by per-user fairness)
//	+ Prefetch (pulled, not yet picked)
//	+ ProviderInflight (awaiting remote work without a worker, inflight.go)
//
// messages (the pullers of a resuming provider's kinds stop while its
// in-flight slots are all taken, so only prefetched messages wait for one). Messages Nak'd with a delay still count against max_ack_pending
// until they are redelivered, and several processors share one durable
// consumer, so the rule leaves the same again as headroom:
//
//	max_ack_pending = 2 × (Concurrency + WaitingRoom + Prefetch + ProviderInflight)
//
// (32 workers with the defaults: 2 × (32 + 128 + 16 + 100) = 552). When it is
// reached, JetStream stops delivering from that consumer: backpressure, not
// loss.
func maxAckPending(c Config) int {
	return 2 * (c.Concurrency + c.WaitingRoom + c.Prefetch + c.ProviderInflight)
}

// consumerConfig is the mutation applied to the committed definition.
func (p *Processor) consumerConfig(cc *jetstream.ConsumerConfig) {
	cc.AckWait = p.cfg.AckWait
	// Unlimited redelivery: the attempt limit is the processor's
	// (Config.MaxDeliver, attempts.go). JetStream drops a message that
	// exhausted max_deliver without telling anyone, and a job whose last
	// delivery died with its process would never reach a terminal state.
	cc.MaxDeliver = -1
	cc.MaxAckPending = maxAckPending(p.cfg)
	if cc.MaxWaiting < 16 {
		cc.MaxWaiting = 16
	}
	cc.Description = fmt.Sprintf("%s; max_ack_pending = 2 x (workers + waiting room + prefetch + provider inflight)", cc.Description)
}

// puller pulls one consumer (kind × priority) into its priority's ready
// queue. It pulls only while it has credit and while its provider's breaker
// is not open: an open breaker stops the pulling, so no deliveries are burnt
// while the provider is down.
type puller struct {
	p       *Processor
	prio    envelope.Priority
	kind    string
	breaker *flow.Breaker
	credits *credits
	queue   chan *delivery
	log     *slog.Logger
}

func (u *puller) name() string { return jsm.ConsumerName(u.prio, u.kind) }

// run is a supervised child. It (re)applies its consumer first, so a
// restart after the consumer was deleted recreates it.
func (u *puller) run(ctx context.Context) error {
	cons, err := jsm.ApplyConsumer(ctx, u.p.js, u.prio, u.kind, u.p.consumerConfig)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	u.p.setConsumer(u.name(), cons)
	if f := cons.CachedInfo().Config.FilterSubjects; len(f) > 1 {
		u.log.Warn("consumer also takes the queue subject: JOBS holds jobs stored under it before its subject transform; a processor restart after they ran narrows it to one filter",
			"consumer", u.name(), "filters", f)
	}
	failures := 0
	var failingSince time.Time
	for {
		if err := u.breaker.WaitAllowed(ctx); err != nil {
			return nil
		}
		if err := u.p.waitInflightRoom(ctx, u.kind); err != nil {
			return nil
		}
		if err := u.p.waitKindHealthy(ctx, u.kind); err != nil {
			return nil
		}
		n, err := u.credits.take(ctx)
		if err != nil {
			return nil
		}
		got, err := u.pull(ctx, cons, n)
		u.credits.release(n - got)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) {
				return fmt.Errorf("consumer %s: %w", u.name(), err) // restart re-applies it
			}
			if failures == 0 {
				failingSince = time.Now()
			}
			failures++
			u.log.Warn("pull failed", "consumer", u.name(), "err", err)
			if time.Since(failingSince) > pullFailingLimit {
				// Not a blip (an election ends well within this).
				// Pulls of a consumer that is gone may fail with no
				// responders and never report it deleted, so re-apply
				// it here. Only the server refusing that (JOBS
				// deleted, an incompatible definition) goes to the
				// supervisor; an outage keeps backing off in place, so
				// a long one never exhausts the restart intensity.
				again, aerr := jsm.ApplyConsumer(ctx, u.p.js, u.prio, u.kind, u.p.consumerConfig)
				switch {
				case aerr == nil:
					cons = again
					u.p.setConsumer(u.name(), cons)
				case errors.Is(aerr, jsm.ErrIncompatible):
					return fmt.Errorf("consumer %s: pulls failing for %s, and %w", u.name(), time.Since(failingSince).Round(time.Second), aerr)
				}
				failingSince = time.Now()
			}
			if flow.Sleep(ctx, flow.Backoff(failures, 50*time.Millisecond, 2*time.Second, 0.2, nil)) != nil {
				return nil
			}
			continue
		}
		failures = 0
	}
}

// pullFailingLimit is how long pulls may fail in a row before the puller
// returns its error to the supervisor.
const pullFailingLimit = 20 * time.Second

// pull issues one pull request for up to n messages and queues what
// arrives. Messages that arrive after ctx ended are Nak'd at once so another
// processor takes them.
func (u *puller) pull(ctx context.Context, cons jetstream.Consumer, n int) (int, error) {
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(u.p.cfg.PollWait))
	if err != nil {
		return 0, err
	}
	got := 0
	for msg := range batch.Messages() {
		got++
		if ctx.Err() != nil {
			if err := msg.Nak(); err != nil {
				u.log.Warn("nak on shutdown failed", "consumer", u.name(), "err", err)
			}
			u.credits.release(1)
			continue
		}
		d := &delivery{msg: msg, prio: u.prio, kind: u.kind, credits: u.credits}
		u.p.deliveries.hold(d)
		u.queue <- d
	}
	err = batch.Error()
	if errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages) {
		err = nil
	}
	return got, err
}
