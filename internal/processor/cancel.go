package processor

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go"
)

// CancelSubject is what the cancel subscriber listens on: ingest publishes
// cancel.<user>.<job> (core NATS, not stored) after cancelling the job in
// the KV.
const CancelSubject = "cancel.*.*"

// runCancels is a supervised child: it cancels the context of a running job
// when its cancel message arrives. The job's stored state is already
// cancelled, so the worker then just acks it; a cancelled job delivered
// later is never started (jobstore.Apply answers ErrTerminal).
func (p *Processor) runCancels(ctx context.Context) error {
	sub, err := p.nc.Subscribe(p.cancelSubject, func(m *nats.Msg) {
		parts := strings.Split(m.Subject, ".")
		if len(parts) != 3 {
			return
		}
		if p.deliveries.cancelJob(parts[2]) {
			p.log.Info("cancelling running job", "job", parts[2], "user", parts[1])
		}
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	return sub.Unsubscribe()
}
