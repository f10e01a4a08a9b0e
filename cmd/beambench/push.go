package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/beamline/beamline/pkg/envelope"
)

// inProcessClientLimit is the most WebSocket clients kept in this process
// when -client-procs is 0.
const inProcessClientLimit = 2000

// runPush connects K clients, each joined to its own job topic, measures the
// notifier's memory before and after, then publishes E events/s to the
// first K' jobs and compares publish→WebSocket receipt with publish→raw
// core-NATS subscriber receipt.
func runPush(ctx context.Context, t *target, o *options, rep *reporter) error {
	run := fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffff)
	user, prefix := "pb"+run, "pb"+run+"-"
	k, klat := o.pushClients, o.pushLatClients
	if err := createJobs(ctx, t, user, prefix, k); err != nil {
		return err
	}

	notifierURL, mem := t.notifierURL, memProbe(nil)
	var np *notifierProc
	where := "in-process devstack (includes this process's clients and services)"
	if t.stack == nil {
		where = ""
	}
	if o.notifierBin != "" {
		var err error
		if np, err = startNotifierProc(ctx, t, o); err != nil {
			return err
		}
		defer np.stop()
		notifierURL, mem, where = np.url, np.probe, fmt.Sprintf("separate process (pid %d)", np.cmd.Process.Pid)
	} else if t.stack != nil {
		mem = selfProbe
	}
	var before memSample
	if mem != nil {
		settleGC()
		before = mem()
	}

	tok := t.token(user)
	procs := o.clientProcs
	if procs == 0 && k > inProcessClientLimit {
		procs = (k + o.connsPerProc - 1) / o.connsPerProc
	}
	var clients pushClients
	var err error
	connStart := time.Now()
	if procs > 0 {
		clients, err = spawnClients(ctx, notifierURL, tok, prefix, k, procs, o.pushClient == "lean", t.log)
	} else {
		clients, err = localClients(ctx, notifierURL, tok, prefix, k, o.pushClient == "lean")
	}
	if err != nil {
		return err
	}
	defer clients.stop()
	connTook := time.Since(connStart)
	connected, failed := clients.counts()
	rep.add("push", "connected clients", float64(connected), "conns",
		map[string]any{"wanted": k, "failed": failed, "client_procs": procs, "connect_s": round(connTook.Seconds())})
	if connected == 0 {
		return fmt.Errorf("push: no client connected: %v", clients.err())
	}

	if mem != nil {
		settleGC()
		time.Sleep(settleTime(o))
		after := mem()
		p := map[string]any{"clients": connected, "notifier": where,
			"rss_before_mb": round(float64(before.rss) / 1e6), "rss_after_mb": round(float64(after.rss) / 1e6),
			"heap_before_mb": round(float64(before.heap) / 1e6), "heap_after_mb": round(float64(after.heap) / 1e6)}
		if after.goroutines > 0 {
			p["stack_after_mb"], p["goroutines_after"] = round(float64(after.stack)/1e6), after.goroutines
		}
		rep.add("push", "notifier RSS per idle connection", (float64(after.rss)-float64(before.rss))/float64(connected)/1024, "KiB", p)
		rep.add("push", "notifier Go heap per idle connection", (float64(after.heap)-float64(before.heap))/float64(connected)/1024, "KiB", p)
		// gc=1: the heap profile after a collection, which also settles
		// the allocation counts of the connecting phase, so that the
		// latency run's allocs profile below holds only its own.
		for name, query := range map[string]string{"heap": "gc=1", "goroutine": ""} {
			if err := np.profile(o.notifierProfile, name, query, name+".pb.gz"); err != nil {
				t.log.Warn("notifier profile", "err", err)
			}
		}
	}
	// The CPU profile, the allocations (a delta profile) and an execution
	// trace of the latency run, taken side by side (go tool trace
	// -pprof=sched trace.out: where the notifier's goroutines waited).
	var profiled sync.WaitGroup
	secs := fmt.Sprintf("seconds=%d", max(1, int(o.pushDur.Seconds())))
	for name, file := range map[string]string{"profile": "cpu.pb.gz", "allocs": "allocs.pb.gz", "trace": "trace.out"} {
		profiled.Go(func() {
			if err := np.profile(o.notifierProfile, name, secs, file); err != nil {
				t.log.Warn("notifier profile", "err", err)
			}
		})
	}
	defer profiled.Wait()

	raw := newLatencies(1 << 21)
	var rawN atomic.Int64
	sub, err := t.nc.Subscribe(envelope.UserEventsSubject(user), func(m *nats.Msg) {
		at := time.Now()
		if _, snap, err := envelope.DecodeEvent(m.Data); err == nil {
			rawN.Add(1)
			raw.add(at.Sub(snap.UpdatedAt))
		}
	})
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	sub.SetPendingLimits(-1, -1)
	// The same events as the notifier gets them: re-published by EVENTS
	// once stored. The core baseline above gets each as the server routes
	// the publish, before JetStream has stored it; this one shows what of
	// the push's latency is the store and the re-publish, not the notifier.
	live := newLatencies(1 << 21)
	lsub, err := t.nc.Subscribe(envelope.LiveSubject(envelope.UserEventsSubject(user)), func(m *nats.Msg) {
		at := time.Now()
		if _, snap, err := envelope.DecodeEvent(m.Data); err == nil {
			live.add(at.Sub(snap.UpdatedAt))
		}
	})
	if err != nil {
		return err
	}
	defer lsub.Unsubscribe()
	lsub.SetPendingLimits(-1, -1)
	t.nc.Flush()

	cpu0 := np.cpu()
	sent, err := publishEvents(ctx, t, user, prefix, klat, o.pushRate, o.pushDur)
	if err != nil {
		return err
	}
	cpu := np.cpu() - cpu0
	deadline := time.Now().Add(5 * time.Second)
	for rawN.Load() < int64(sent) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // let the last pushes land
	lat, received, err := clients.collect()
	if err != nil {
		return err
	}
	if lat.len() == 0 {
		return fmt.Errorf("push: %w: no client received an event (%d sent)", errNoFigures, sent)
	}
	p := map[string]any{"clients": connected, "receiving_clients": min(klat, connected), "events_per_s": o.pushRate,
		"duration_s": o.pushDur.Seconds(), "events": sent, "pushed": received, "raw_received": rawN.Load(), "notifier": where}
	rep.addVs("push", "publish→push p50", lat.quantile(0.50), "ms", raw.quantile(0.50), p)
	rep.addVs("push", "publish→push p99", lat.quantile(0.99), "ms", raw.quantile(0.99), p)
	rep.addVs("push", "publish→push p99.9", lat.quantile(0.999), "ms", raw.quantile(0.999), p)
	if live.len() > 0 {
		rep.addVs("push", "publish→re-published (raw live subscriber) p50", live.quantile(0.50), "ms", raw.quantile(0.50), p)
		rep.addVs("push", "publish→re-published (raw live subscriber) p99", live.quantile(0.99), "ms", raw.quantile(0.99), p)
		rep.addVs("push", "publish→re-published (raw live subscriber) p99.9", live.quantile(0.999), "ms", raw.quantile(0.999), p)
	}
	if np != nil && sent > 0 {
		// The notifier's user+system CPU while the events were published
		// (10 ms ticks), per event published.
		rep.add("push", "notifier CPU per event", float64(cpu.Microseconds())/float64(sent), "µs",
			map[string]any{"cpu_s": round(cpu.Seconds()), "events": sent, "notifier": where})
	}
	return nil
}

func settleTime(o *options) time.Duration {
	if o.short {
		return 300 * time.Millisecond
	}
	return 5 * time.Second
}

// createJobs writes the queued snapshots of n jobs so their topics can be
// joined, 32 at a time.
func createJobs(ctx context.Context, t *target, user, prefix string, n int) error {
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	now := time.Now().UTC()
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			j := envelope.Job{ID: fmt.Sprintf("%s%d", prefix, i), User: user, Kind: "image", Priority: envelope.PriorityNormal, CreatedAt: now}
			if _, err := t.store.Create(ctx, j); err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("create job %s: %w", j.ID, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// publishEvents publishes rate progress events per second for d, round-robin
// over jobs 0..n-1, each stamped with its publish time (updated_at).
func publishEvents(ctx context.Context, t *target, user, prefix string, n, rate int, d time.Duration) (int, error) {
	total := int(float64(rate) * d.Seconds())
	seqs := make([]uint64, n)
	created := time.Now().UTC()
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	sent := 0
	for sent < total {
		select {
		case <-ctx.Done():
			return sent, ctx.Err()
		case <-tick.C:
		}
		due := min(total, int(time.Since(start).Seconds()*float64(rate)))
		for ; sent < due; sent++ {
			i := sent % n
			seqs[i]++
			snap := envelope.Snapshot{ID: fmt.Sprintf("%s%d", prefix, i), User: user, Kind: "image", Priority: envelope.PriorityNormal,
				Status: envelope.StatusRunning, Progress: int(seqs[i] % 100), Attempt: 1, Seq: seqs[i], CreatedAt: created, UpdatedAt: time.Now().UTC()}
			m, err := envelope.NewEventMsg(envelope.TypeProgress, snap, "/beamline/beambench", "")
			if err != nil {
				return sent, err
			}
			if err := publishAsync(ctx, t, m); err != nil {
				return sent, err
			}
		}
	}
	select {
	case <-t.js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		return sent, fmt.Errorf("push: %d PubAcks missing", t.js.PublishAsyncPending())
	}
	return sent, nil
}
