package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// floorStream is the scratch stream of the write floors, created for the
// measurement and deleted after it: file storage and one message per
// subject, as the job_status KV bucket is.
const floorStream = "BEAMBENCH_FLOOR"

// rawFloor measures what a processor that makes `writes` durable writes
// per job the way ours does (nats.go's awaited publishes) cannot beat: a
// consumer configured as the processor's, whose workers (conc of them, the
// processor's concurrency) take each message and write, each awaited: a
// claim by compare-and-set ("no message on the job's subject yet"); with
// writes ≥ 2 the outcome by compare-and-set on the claim's sequence; with
// writes = 3 an event with a Nats-Msg-Id; then ack. No decoding, no
// provider, no bookkeeping: the cost of the writes alone. It returns jobs
// per second, first to last ack.
func rawFloor(ctx context.Context, t *target, n, writes, conc int) (float64, *tally, error) {
	defer t.purge(context.WithoutCancel(ctx), rawSubjects)
	_, err := t.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: floorStream, Subjects: []string{"beambench.floor.>"}, Storage: jetstream.FileStorage,
		MaxMsgsPerSubject: 1, Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return 0, nil, fmt.Errorf("floor stream: %w", err)
	}
	defer t.js.DeleteStream(context.WithoutCancel(ctx), floorStream)
	run := fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffff)
	if err := publishJobs(ctx, t, n, func(i int) (string, string) {
		return fmt.Sprintf("pf%d", i%pipelineUsers), fmt.Sprintf("pf%s-%d", run, i)
	}, rawKind); err != nil {
		return 0, nil, err
	}
	tl := &tally{want: n, done: make(chan struct{})}
	work := make(chan jetstream.Msg, 4*conc)
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErr error
	for range conc {
		wg.Go(func() {
			for {
				select {
				case <-wctx.Done():
					return
				case m := <-work:
					if err := floorJob(wctx, t, m, writes); err != nil {
						errMu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						errMu.Unlock()
						continue
					}
					tl.hit(time.Now())
				}
			}
		})
	}
	defer func() { stop(); wg.Wait() }()
	rate, got, err := consumeJobs(ctx, t, "beambench-floor", tl, time.Minute+time.Duration(n)*200*time.Microsecond, func(m jetstream.Msg) {
		select {
		case work <- m:
		case <-wctx.Done():
		}
	})
	if err == nil && got < 2 {
		errMu.Lock()
		defer errMu.Unlock()
		err = fmt.Errorf("floor (%d writes): %d of %d done; first error: %v", writes, got, n, firstErr)
	}
	return rate, tl, err
}

// floorJob is one job of rawFloor: its writes in order, each awaited, then
// the ack (not awaited, as the processor's).
func floorJob(ctx context.Context, t *target, m jetstream.Msg, writes int) error {
	id := m.Subject()[strings.LastIndexByte(m.Subject(), '.')+1:]
	subj := "beambench.floor.state." + id
	// With writes = 1 the one write stands for an outcome stored without a claim.
	claim := &nats.Msg{Subject: subj, Data: m.Data(), Header: nats.Header{}}
	claim.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
	ack, err := t.js.PublishMsg(ctx, claim)
	if err != nil {
		return fmt.Errorf("claim: %w", err)
	}
	if writes >= 2 {
		out := &nats.Msg{Subject: subj, Data: m.Data(), Header: nats.Header{}}
		out.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(ack.Sequence, 10))
		if _, err := t.js.PublishMsg(ctx, out); err != nil {
			return fmt.Errorf("outcome: %w", err)
		}
	}
	if writes >= 3 {
		ev := &nats.Msg{Subject: "beambench.floor.event." + id, Data: m.Data(), Header: nats.Header{}}
		ev.Header.Set(jetstream.MsgIDHeader, id+":1")
		if _, err := t.js.PublishMsg(ctx, ev); err != nil {
			return fmt.Errorf("event: %w", err)
		}
	}
	return m.Ack()
}
