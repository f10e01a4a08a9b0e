package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beamline/beamline/pkg/envelope"
)

// noopBody is what every ingest submission sends: a sim job of duration 0.
const noopBody = `{"kind":"image","input":{}}`

// rawKind is the kind raw baselines publish as: inside JOBS, on the same
// subject shape as a real job (jobs.normal.benchraw.<id>), but a kind no
// processor serves, so nothing consumes what lands there.
const rawKind = "benchraw"

// Subjects the scenarios leave messages on, for purging.
var (
	rawSubjects   = envelope.JobSubject(envelope.PriorityNormal, rawKind) + ".*"
	imageSubjects = envelope.JobSubject(envelope.PriorityNormal, "image") + ".*"
)

// runIngest measures HTTP submissions per second at each concurrency beside
// synchronous JetStream publishes (PubAck awaited) of the same envelope at
// the same concurrency. The in-process processor is stopped meanwhile so
// both share the machine with the same load.
func runIngest(ctx context.Context, t *target, o *options, rep *reporter) error {
	resume, paused := t.pauseProcessor()
	defer func() {
		t.purge(context.WithoutCancel(ctx), imageSubjects)
		t.purge(context.WithoutCancel(ctx), rawSubjects)
		if err := resume(context.WithoutCancel(ctx)); err != nil {
			t.log.Warn("restart processor", "err", err)
		}
	}()
	tok := t.token("ingestbench")
	for _, c := range o.ingestConc {
		cpu0 := cpuTime()
		httpRate, rejected, err := ingestHTTP(ctx, t, tok, c, o.ingestDur)
		if err != nil {
			return err
		}
		cpu1 := cpuTime()
		rawRate, err := ingestRaw(ctx, t, c, o.ingestDur)
		if err != nil {
			return err
		}
		cpu2 := cpuTime()
		p := map[string]any{"concurrency": c, "duration_s": o.ingestDur.Seconds(), "processor_paused": paused, "rejected_429": rejected}
		if t.stack != nil {
			// CPU of this process (load generator + in-process devstack:
			// nats-server, ingest) per operation: unlike the rates it does
			// not depend on what else the machine runs.
			p["cpu_us_per_job"] = perOp(cpu1-cpu0, httpRate, o.ingestDur)
			p["cpu_us_per_raw_publish"] = perOp(cpu2-cpu1, rawRate, o.ingestDur)
		}
		rep.addVs("ingest", fmt.Sprintf("submissions/s c=%d", c), httpRate, "jobs/s", rawRate, p)
	}
	return nil
}

// ingestHTTP posts no-op jobs from c workers for d and returns accepted/s.
func ingestHTTP(ctx context.Context, t *target, tok string, c int, d time.Duration) (float64, int64, error) {
	var ok, rejected, failed atomic.Int64
	var firstErr atomic.Value
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, t.ingestURL+"/v1/jobs", bytes.NewReader([]byte(noopBody)))
				req.Header.Set("Authorization", "Bearer "+tok)
				req.Header.Set("Content-Type", "application/json")
				resp, err := t.http.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusAccepted:
					ok.Add(1)
				case http.StatusTooManyRequests:
					rejected.Add(1)
				default:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Errorf("POST /v1/jobs: %s", resp.Status))
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if ok.Load() == 0 {
		return 0, 0, fmt.Errorf("ingest: no job accepted (failed %d, first error %v)", failed.Load(), firstErr.Load())
	}
	return float64(ok.Load()) / el.Seconds(), rejected.Load(), nil
}

// ingestRaw publishes the envelope ingest would publish from c workers, each
// waiting for its PubAck, for d, and returns publishes/s.
func ingestRaw(ctx context.Context, t *target, c int, d time.Duration) (float64, error) {
	var ok, seq atomic.Int64
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	now := time.Now()
	start := now
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				n := seq.Add(1)
				j := envelope.Job{ID: fmt.Sprintf("raw%d-%d", now.UnixNano(), n), User: "ingestbench", Kind: rawKind,
					Priority: envelope.PriorityNormal, Input: []byte(`{}`), CreatedAt: time.Now().UTC()}
				m, err := envelope.NewJobMsg(j, "/beamline/ingest", "")
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				if _, err := t.js.PublishMsg(ctx, m); err != nil {
					if ctx.Err() == nil {
						firstErr.CompareAndSwap(nil, err)
					}
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() == 0 {
		return 0, fmt.Errorf("raw publish: none acknowledged: %v", firstErr.Load())
	}
	return float64(ok.Load()) / time.Since(start).Seconds(), nil
}

// perOp is CPU microseconds per operation of a phase that ran for about d at
// rate operations per second.
func perOp(cpu time.Duration, rate float64, d time.Duration) float64 {
	n := rate * d.Seconds()
	if n <= 0 {
		return 0
	}
	return float64(int(float64(cpu.Microseconds())/n*10)) / 10
}
