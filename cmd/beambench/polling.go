package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beamline/beamline/internal/phoenix/phoenixtest"
	"github.com/beamline/beamline/pkg/envelope"
)

// runPolling watches J jobs of one user for T seconds two ways at once: a
// client that GETs every unfinished job every 2 s (stopping at its terminal
// state), and a client with one WebSocket joined to the user's topic. It
// compares HTTP requests, bytes on the wire, and the delay between a status
// change (the snapshot's updated_at) and the client seeing it.
func runPolling(ctx context.Context, t *target, o *options, rep *reporter) error {
	user := fmt.Sprintf("po%x", time.Now().UnixNano()&0xffffff)
	tok := t.token(user)
	jobDur := o.pollDur * 5 / 10
	steps := 5
	if o.short {
		steps = 2
	}
	body := fmt.Sprintf(`{"kind":"image","input":{"sim":{"duration_ms":%d,"steps":%d}}}`, jobDur.Milliseconds(), steps)

	// The push client connects first, as a page would before submitting.
	var pushBytes byteCounter
	var pushMu sync.Mutex
	pushDelay := newLatencies(1 << 20)
	pushChanges, pushTerminal := 0, map[string]bool{}
	var watchFrom atomic.Int64
	ws, err := dialWS(ctx, t.notifierURL, tok, &pushBytes, func(f *phoenixtest.Frame, at time.Time) {
		p, ok := decodeJobPush(f)
		if !ok || p.Job.UpdatedAt.UnixNano() < watchFrom.Load() {
			return
		}
		pushMu.Lock()
		defer pushMu.Unlock()
		pushChanges++
		pushDelay.add(at.Sub(p.Job.UpdatedAt))
		if p.Job.Status.Terminal() {
			pushTerminal[p.Job.ID] = true
		}
	})
	if err != nil {
		return err
	}
	defer ws.Close()
	if err := joinWS(ctx, ws, "user:"+user); err != nil {
		return err
	}

	ids := make([]string, 0, o.pollJobs)
	for range o.pollJobs {
		id, err := submit(ctx, t, tok, body)
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	start := time.Now()
	watchFrom.Store(start.UnixNano())
	end := start.Add(o.pollDur)

	var pollBytes byteCounter
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: countingDial(&pollBytes), MaxIdleConnsPerHost: 8}}
	defer client.CloseIdleConnections()
	pollDelay := newLatencies(1 << 20)
	requests, pollChanges := 0, 0
	last := map[string]uint64{}
	done := map[string]bool{}
	hb := time.Now()
	// Each job is polled every interval, the jobs' phases spread evenly over
	// it (browsers do not poll in step), so the delay is not an artefact of
	// progress steps landing just before a poll.
	slot := o.pollInterval / time.Duration(len(ids))
	for i, tick := 0, start; time.Now().Before(end) && len(done) < len(ids) && ctx.Err() == nil; i, tick = i+1, tick.Add(slot) {
		if d := time.Until(tick); d > 0 {
			time.Sleep(d)
		}
		id := ids[i%len(ids)]
		if done[id] {
			continue
		}
		snap, err := getJob(ctx, client, t.ingestURL, tok, id)
		requests++
		seen := time.Now()
		if err != nil {
			return err
		}
		if snap.Seq > last[id] && !snap.UpdatedAt.Before(start) {
			pollChanges++
			pollDelay.add(seen.Sub(snap.UpdatedAt))
		}
		last[id] = snap.Seq
		if snap.Status.Terminal() {
			done[id] = true
		}
		if time.Since(hb) >= 30*time.Second { // the push client's heartbeat, as phoenix.js sends it
			ws.Heartbeat()
			hb = time.Now()
		}
	}
	// The push client watches until its jobs are done too (same bound).
	for time.Now().Before(end) && ctx.Err() == nil {
		pushMu.Lock()
		n := len(pushTerminal)
		pushMu.Unlock()
		if n >= len(ids) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if pollDelay.len() == 0 || pushDelay.len() == 0 {
		return fmt.Errorf("polling: %w (poll changes %d, push changes %d)", errNoFigures, pollChanges, pushChanges)
	}
	pushMu.Lock()
	pc := pushChanges
	pushMu.Unlock()
	p := map[string]any{"jobs": len(ids), "watch_s": o.pollDur.Seconds(), "poll_interval_s": o.pollInterval.Seconds(),
		"job_duration_s": jobDur.Seconds(), "progress_steps": steps, "finished_polling": len(done)}
	rep.addVs("polling", "HTTP requests (push vs polling)", 1, "requests", float64(requests), p)
	rep.add("polling", "fewer requests with push", 100*(1-1/float64(requests)), "%", p)
	rep.addVs("polling", "bytes on the wire (push vs polling)", float64(pushBytes.total()), "bytes", float64(pollBytes.total()), p)
	rep.addVs("polling", "status changes seen (push vs polling)", float64(pc), "changes", float64(pollChanges), p)
	rep.addVs("polling", "mean change→seen delay (push vs polling)", pushDelay.mean(), "ms", pollDelay.mean(), p)
	return nil
}

func getJob(ctx context.Context, c *http.Client, base, tok, id string) (envelope.Snapshot, error) {
	var s envelope.Snapshot
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/jobs/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := c.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("GET /v1/jobs/%s: %s", id, resp.Status)
	}
	return s, json.Unmarshal(b, &s)
}
