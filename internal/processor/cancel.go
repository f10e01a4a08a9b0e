package processor

import (
	"context"

	"github.com/nats-io/nats.go"

	"github.com/beamline/beamline/pkg/envelope"
)

// runCancels is a supervised child: it cancels the context of a running job
// when its cancel message arrives. The job's stored state is already
// cancelled, so the worker then just acks it; a cancelled job delivered
// later is never started (jobstore.Apply answers ErrTerminal).
func (p *Processor) runCancels(ctx context.Context) error {
	sub, err := p.nc.Subscribe(p.cancelSubject, func(m *nats.Msg) {
		user, job, err := envelope.ParseCancelSubject(m.Subject)
		if err != nil {
			return
		}
		if p.deliveries.cancelJob(job) {
			p.log.Info("cancelling running job", "job", job, "user", user)
		}
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	return sub.Unsubscribe()
}
