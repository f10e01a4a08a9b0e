package processor

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/beamline/beamline/pkg/envelope"
)

// maxReason keeps a reason header readable (and well under header limits).
const maxReason = 1024

// ensureDeadLettered copies a dead job's original envelope to dlq.<kind>
// unless its copy is recorded already (jobstore.DeadLettered: the marker
// written after the copy's PubAck), so a dead job redelivered long after it
// died gets no second DLQ entry. Nats-Msg-Id dead:<job> makes a copy
// repeated after a crash between the copy and the marker a duplicate within
// the DLQ duplicate window (2m, well above the ack_wait that redelivers it).
func (p *Processor) ensureDeadLettered(ctx context.Context, d *delivery, reason string) error {
	done, err := p.store.DeadLettered(ctx, d.job.ID)
	if err != nil || done {
		return err
	}
	seq, err := p.publishDLQ(ctx, d, "dead:"+d.job.ID, reason)
	if err != nil {
		return err
	}
	return p.store.MarkDeadLettered(ctx, d.job.ID, seq)
}

// invalid dead-letters a message that is not a valid job envelope and
// terminates it: it can never succeed, so it is never retried.
func (p *Processor) invalid(d *delivery, streamSeq uint64, cause error) {
	p.log.Warn("invalid job message: dead-lettered and terminated",
		"subject", d.msg.Subject(), "stream_seq", streamSeq, "reason", cause.Error())
	ctx := context.Background()
	if _, err := p.publishDLQ(ctx, d, fmt.Sprintf("invalid:%s:%d", d.kind, streamSeq), "invalid envelope: "+cause.Error()); err != nil {
		// Not stored: leave it for redelivery rather than lose the evidence.
		p.log.Error("DLQ copy of invalid message not stored; will retry", "subject", d.msg.Subject(), "err", err)
		p.nak(d, p.backoff(d.delivered, nil))
		return
	}
	p.count(d, outcomeInvalid)
	p.term(d)
}

// publishDLQ stores a copy of d's message on dlq.<kind> and returns its DLQ
// stream sequence.
func (p *Processor) publishDLQ(ctx context.Context, d *delivery, msgID, reason string) (uint64, error) {
	m := nats.NewMsg(envelope.DLQSubject(d.kind))
	m.Data = d.msg.Data()
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	m.Header.Set(envelope.HeaderDeadReason, strings.ToValidUTF8(strings.ReplaceAll(reason, "\n", " "), "?"))
	m.Header.Set(envelope.HeaderAttempts, strconv.Itoa(d.attempt))
	m.Header.Set(envelope.HeaderOriginalSubject, envelope.PublishedJobSubject(d.msg.Subject()))
	m.Header.Set(envelope.HeaderMsgID, msgID)
	if tp := d.msg.Headers().Get(envelope.HeaderTraceparent); tp != "" {
		m.Header.Set(envelope.HeaderTraceparent, tp)
	}
	ack, err := p.js.PublishMsg(ctx, m)
	if err != nil {
		return 0, fmt.Errorf("publish %s: %w", m.Subject, err)
	}
	return ack.Sequence, nil
}
