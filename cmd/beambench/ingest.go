package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
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
	tok := t.token(ingestBenchUser)
	for _, c := range o.ingestConc {
		cpu0 := cpuTime()
		httpRate, rejected, err := ingestHTTP(ctx, t, tok, c, o.ingestDur, o.ingestClient)
		if err != nil {
			return err
		}
		cpu1 := cpuTime()
		var rawRate float64
		if !o.ingestNoRaw {
			if rawRate, err = ingestRaw(ctx, t, c, o.ingestDur, 1); err != nil {
				return err
			}
		}
		cpu2 := cpuTime()
		p := map[string]any{"concurrency": c, "duration_s": o.ingestDur.Seconds(), "processor_paused": paused, "rejected_429": rejected, "http_client": o.ingestClient}
		if t.stack != nil {
			// CPU of this process (load generator + in-process devstack:
			// nats-server, ingest) per operation: unlike the rates it does
			// not depend on what else the machine runs.
			p["cpu_us_per_job"] = perOp(cpu1-cpu0, httpRate, o.ingestDur)
			p["cpu_us_per_raw_publish"] = perOp(cpu2-cpu1, rawRate, o.ingestDur)
		}
		rep.addVs("ingest", fmt.Sprintf("submissions/s c=%d", c), httpRate, "jobs/s", rawRate, p)
		if o.ingestFloor && !o.ingestNoRaw {
			// The two writes a submission makes, and nothing else.
			floor, err := ingestRaw(ctx, t, c, o.ingestDur, 2)
			if err != nil {
				return err
			}
			rep.addVs("ingest", fmt.Sprintf("write floor c=%d: the job and its index entry, 2 awaited publishes", c), floor, "jobs/s", rawRate,
				map[string]any{"concurrency": c, "duration_s": o.ingestDur.Seconds(), "submissions_ratio": round(httpRate / floor)})
		}
	}
	if o.ingestFloor && !o.ingestNoRaw {
		s, err := t.js.Stream(ctx, streams.JobIndex)
		if err == nil {
			err = s.Purge(context.WithoutCancel(ctx), jetstream.WithPurgeSubject(envelope.IndexSubject(ingestBenchUser, rawKind)))
		}
		if err != nil {
			t.log.Warn("purge", "stream", streams.JobIndex, "err", err)
		}
	}
	return nil
}

// ingestBenchUser is the user of the ingest scenario's jobs.
const ingestBenchUser = "ingestbench"

// ingestHTTP posts no-op jobs from c workers for d and returns accepted/s.
// Each worker is one keep-alive connection with one request in flight.
func ingestHTTP(ctx context.Context, t *target, tok string, c int, d time.Duration, client string) (float64, int64, error) {
	var ok, rejected, failed atomic.Int64
	var firstErr atomic.Value
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	post := stdPost(t, tok)
	if client == "lean" {
		post = leanPost(t, tok)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn leanConn
			defer conn.close()
			for ctx.Err() == nil {
				status, err := post(ctx, &conn)
				switch {
				case err != nil:
					if ctx.Err() == nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
					}
				case status == http.StatusAccepted:
					ok.Add(1)
				case status == http.StatusTooManyRequests:
					rejected.Add(1)
				default:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Errorf("POST /v1/jobs: %d", status))
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

// A poster sends one submission and returns the answer's status.
type poster func(ctx context.Context, conn *leanConn) (int, error)

// stdPost submits with net/http's client (its Transport keeps the
// connections; conn is unused).
func stdPost(t *target, tok string) poster {
	return func(ctx context.Context, _ *leanConn) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, t.ingestURL+"/v1/jobs", bytes.NewReader([]byte(noopBody)))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := t.http.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
}

// leanConn is one worker's keep-alive connection for leanPost.
type leanConn struct {
	c net.Conn
	r *bufio.Reader
}

func (l *leanConn) close() {
	if l.c != nil {
		l.c.Close()
		l.c, l.r = nil, nil
	}
}

// leanPost submits the way a dedicated load generator (wrk) does: a
// request prebuilt once and written on the worker's own keep-alive
// connection, the answer parsed with net/http.ReadResponse. It leaves out
// net/http's Transport (a connection pool, and two goroutines and channel
// hand-offs per request), which on a 2-core machine shared with the
// server took CPU from the ingest being measured.
func leanPost(t *target, tok string) poster {
	u, err := url.Parse(t.ingestURL)
	if err != nil {
		return func(context.Context, *leanConn) (int, error) { return 0, err }
	}
	req := []byte("POST /v1/jobs HTTP/1.1\r\nHost: " + u.Host + "\r\nAuthorization: Bearer " + tok +
		"\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(noopBody)) + "\r\n\r\n" + noopBody)
	return func(ctx context.Context, l *leanConn) (int, error) {
		if l.c == nil {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", u.Host)
			if err != nil {
				return 0, err
			}
			l.c, l.r = c, bufio.NewReader(c)
		}
		// The run's end interrupts a request in flight.
		if dl, ok := ctx.Deadline(); ok {
			l.c.SetDeadline(dl)
		}
		if _, err := l.c.Write(req); err != nil {
			l.close()
			return 0, err
		}
		resp, err := http.ReadResponse(l.r, nil)
		if err != nil {
			l.close()
			return 0, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.Close {
			l.close()
		}
		return resp.StatusCode, err
	}
}

// ingestRaw publishes, from c workers each waiting for its PubAck, the
// message ingest publishes for a no-op job — its envelope encoded once per
// worker, then sent with a fresh job subject and Nats-Msg-Id each time, as
// ingest's are — for d, and returns publishes/s. Encoding the envelope is
// ingest's work, not NATS's, so the baseline does not repeat it. With
// writes = 2 each job's index entry follows, awaited too, as ingest writes
// it (the write floor of a submission), and the rate is of jobs.
func ingestRaw(ctx context.Context, t *target, c int, d time.Duration, writes int) (float64, error) {
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
			j := envelope.Job{ID: fmt.Sprintf("raw%d", now.UnixNano()), User: ingestBenchUser, Kind: rawKind,
				Priority: envelope.PriorityNormal, Input: []byte(`{}`), CreatedAt: time.Now().UTC()}
			tmpl, err := envelope.NewJobMsg(j, "/beamline/ingest", "")
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
				return
			}
			for ctx.Err() == nil {
				id := fmt.Sprintf("raw%d-%d", now.UnixNano(), seq.Add(1))
				m := &nats.Msg{Subject: envelope.JobMsgSubject(j.Priority, j.Kind, id), Data: tmpl.Data, Header: nats.Header{}}
				m.Header.Set(envelope.HeaderMsgID, id)
				m.Header.Set(envelope.HeaderType, string(envelope.TypeSubmitted))
				if _, err := t.js.PublishMsg(ctx, m); err != nil {
					if ctx.Err() == nil {
						firstErr.CompareAndSwap(nil, err)
					}
					continue
				}
				if writes >= 2 {
					ix := &nats.Msg{Subject: envelope.IndexSubject(j.User, j.Kind), Data: tmpl.Data, Header: nats.Header{}}
					ix.Header.Set(envelope.HeaderMsgID, id)
					if _, err := t.js.PublishMsg(ctx, ix); err != nil {
						if ctx.Err() == nil {
							firstErr.CompareAndSwap(nil, err)
						}
						continue
					}
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
