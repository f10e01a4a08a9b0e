package natsx

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PubBatch publishes messages to streams without waiting and collects
// their PubAcks together, as nats.go's PublishMsgAsync and
// PublishAsyncComplete do for a batch, with less per message: one reply
// subscription for the whole batch (each message's reply subject is
// <inbox>.<index>), no future, channel or map entry per message, and each
// PubAck read as Publish reads it (ParsePubAck: by hand for the server's
// usual answer). nats.go's per-message machinery and its encoding/json
// decode of every PubAck were about a tenth of the CPU of a batch
// submission (BENCHMARKS.md Run V).
//
// Errors are those of PublishMsgAsync's futures: a "no responders" answer
// (no stream, or its leader not elected yet) is
// jetstream.ErrNoStreamResponse, a refusal a *jetstream.APIError wrapped
// as "nats: …". There is no retry: the caller answers each message's
// outcome. A PubBatch is used by one goroutine.
type PubBatch struct {
	nc      *nats.Conn
	sub     *nats.Subscription
	ch      chan *nats.Msg
	prefix  string // <inbox>.
	max     int
	results []pubResult
	pending int // published, not answered
}

type pubResult struct {
	ack  PubAck
	err  error
	done bool
}

// ErrPubBatchFull is a Publish beyond the batch's size.
var ErrPubBatchFull = errors.New("natsx: publish batch full")

// NewPubBatch subscribes for the PubAcks of at most max messages.
func NewPubBatch(nc *nats.Conn, max int) (*PubBatch, error) {
	inbox := nc.NewInbox()
	// Room for every answer: a channel subscription that is full drops
	// messages (a slow consumer), and each message gets one answer.
	b := &PubBatch{nc: nc, ch: make(chan *nats.Msg, max+1), prefix: inbox + ".", max: max}
	sub, err := nc.ChanSubscribe(inbox+".*", b.ch)
	if err != nil {
		return nil, err
	}
	b.sub = sub
	return b, nil
}

// Publish sends m, whose reply subject it sets, and returns its index for
// Result. Headers go on m as for Publish (Nats-Expected-Stream, …).
func (b *PubBatch) Publish(m *nats.Msg) (int, error) {
	i := len(b.results)
	if i >= b.max {
		return -1, ErrPubBatchFull
	}
	m.Reply = b.prefix + strconv.Itoa(i)
	if err := b.nc.PublishMsg(m); err != nil {
		return -1, err
	}
	b.results = append(b.results, pubResult{})
	b.pending++
	return i, nil
}

// Wait reads PubAcks until every message published has one, or ctx ends
// (then the rest have none: Result returns ctx's error for them).
func (b *PubBatch) Wait(ctx context.Context) {
	for b.pending > 0 {
		select {
		case m := <-b.ch:
			b.take(m)
		case <-ctx.Done():
			return
		}
	}
}

// take records one answer.
func (b *PubBatch) take(m *nats.Msg) {
	i, err := strconv.Atoi(strings.TrimPrefix(m.Subject, b.prefix))
	if err != nil || i < 0 || i >= len(b.results) || b.results[i].done {
		return // not an answer to this batch's messages
	}
	r := &b.results[i]
	r.done = true
	b.pending--
	if len(m.Data) == 0 && m.Header != nil {
		switch st := m.Header.Get("Status"); st {
		case "":
		case "503":
			r.err = jetstream.ErrNoStreamResponse
			return
		default:
			r.err = fmt.Errorf("nats: publish answered status %s %s", st, m.Header.Get("Description"))
			return
		}
	}
	r.ack, r.err = ParsePubAck(m.Data)
}

// Result is message i's PubAck, or why there is none: its error, or
// ctx's error from Wait when no answer came in time.
func (b *PubBatch) Result(ctx context.Context, i int) (PubAck, error) {
	r := b.results[i]
	if !r.done {
		if err := ctx.Err(); err != nil {
			return PubAck{}, err
		}
		return PubAck{}, context.DeadlineExceeded
	}
	return r.ack, r.err
}

// Close unsubscribes; answers that come later are dropped.
func (b *PubBatch) Close() {
	if b.sub != nil {
		_ = b.sub.Unsubscribe()
	}
}
