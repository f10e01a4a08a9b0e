package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/phoenix/phoenixtest"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// pipelineUsers spreads the no-op jobs over users so the per-user limit is
// not what is measured.
const pipelineUsers = 256

func runPipeline(ctx context.Context, t *target, o *options, rep *reporter) error {
	if err := pipelineRate(ctx, t, o, rep); err != nil {
		return err
	}
	return pipelineLatency(ctx, t, o, rep)
}

// tally counts the terminal events of one run and when they came.
type tally struct {
	mu          sync.Mutex
	n, want     int
	first, last time.Time
	at99        time.Time // when 99 % of want had come
	redelivered int       // messages delivered more than once (consumeJobs)
	done        chan struct{}
}

func (t *tally) hit(at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		t.first = at
	}
	t.n++
	t.last = at
	if t.n == (t.want*99+99)/100 {
		t.at99 = at
	}
	if t.n == t.want {
		close(t.done)
	}
}

// tail is how long the last 1 % took, and the redeliveries counted: a rate
// that collapses with a long tail and redeliveries is messages that waited
// for ack_wait, not a slower stream.
func (t *tally) tail() (time.Duration, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.at99.IsZero() {
		return 0, t.redelivered
	}
	return t.last.Sub(t.at99), t.redelivered
}

func (t *tally) snapshot() (int, time.Time, time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n, t.first, t.last
}

// pipelineRate publishes N no-op jobs straight to JOBS while the processor
// is stopped, starts it, and times the terminal events; the baseline is a
// consumer with the processor's own settings that only acks.
func pipelineRate(ctx context.Context, t *target, o *options, rep *reporter) error {
	n := o.pipeJobs
	run := fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffff)
	tl := &tally{want: n, done: make(chan struct{})}
	sub, err := t.nc.Subscribe(envelope.EventSubject("*", "*"), func(m *nats.Msg) {
		user, _, err := envelope.ParseEventSubject(m.Subject)
		if err == nil && strings.HasPrefix(user, "pa") && isTerminalType(m.Header.Get(envelope.HeaderType)) {
			tl.hit(time.Now())
		}
	})
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	sub.SetPendingLimits(-1, -1)
	t.nc.Flush()

	resume, paused := t.pauseProcessor()
	pubStart := time.Now()
	err = publishJobs(ctx, t, n, func(i int) (string, string) {
		return fmt.Sprintf("pa%d", i%pipelineUsers), fmt.Sprintf("pa%s-%d", run, i)
	}, "image")
	pubTook := time.Since(pubStart)
	start, cpu0 := time.Now(), cpuTime()
	if rerr := resume(ctx); rerr != nil && err == nil {
		err = rerr
	}
	if err != nil {
		return err
	}
	limit := 30*time.Second + time.Duration(n)*time.Millisecond
	select {
	case <-tl.done:
	case <-time.After(limit):
	case <-ctx.Done():
	}
	got, first, last := tl.snapshot()
	cores := (cpuTime() - cpu0).Seconds() / time.Since(start).Seconds()
	if got < 2 {
		return fmt.Errorf("pipeline: %d of %d jobs reached a terminal state within %s", got, n, limit)
	}
	rate := float64(got-1) / last.Sub(first).Seconds()
	tail, _ := tl.tail()
	p := map[string]any{"jobs": n, "finished": got, "processor_paused_while_publishing": paused,
		"concurrency": o.procConcurrency, "users": pipelineUsers, "publish_s": round(pubTook.Seconds()),
		"start_to_last_s": round(last.Sub(start).Seconds()), "last_1pct_s": round(tail.Seconds())}
	if t.stack != nil {
		p["cpu_cores_used_in_process"] = round(cores)
	}
	if !o.pipeRaw {
		rep.add("pipeline", "processing rate (no-op jobs)", rate, "jobs/s", p)
		return nil
	}

	raw, rawTally, err := rawConsumeAck(ctx, t, n)
	if err != nil {
		return err
	}
	rawTail, rawRedelivered := rawTally.tail()
	p["raw_last_1pct_s"], p["raw_redelivered"] = round(rawTail.Seconds()), rawRedelivered
	rep.addVs("pipeline", "processing rate (no-op jobs)", rate, "jobs/s", raw, p)
	if o.pipeFloor {
		// What any design pays for its durable writes per job, measured
		// beside the processor: one (an outcome, no claim), the claim and
		// the outcome, and today's three with the event.
		for _, w := range []int{1, 2, 3} {
			f, ftl, err := rawFloor(ctx, t, n, w, o.procConcurrency)
			if err != nil {
				return err
			}
			ftail, fre := ftl.tail()
			rep.addVs("pipeline", fmt.Sprintf("write floor: consume, %d awaited durable write(s), ack", w), f, "jobs/s", raw,
				map[string]any{"jobs": n, "workers": o.procConcurrency, "processor_rate_ratio": round(rate / f),
					"last_1pct_s": round(ftail.Seconds()), "redelivered": fre})
		}
	}
	return nil
}

func isTerminalType(t string) bool {
	switch envelope.Type(t) {
	case envelope.TypeSucceeded, envelope.TypeFailed, envelope.TypeDead, envelope.TypeCancelled:
		return true
	}
	return false
}

// publishJobs publishes n no-op normal-priority jobs of kind, each on its
// job subject (as pkg/envelope and ingest publish), with async publishes,
// and waits for every PubAck.
func publishJobs(ctx context.Context, t *target, n int, name func(i int) (user, id string), kind string) error {
	for i := range n {
		user, id := name(i)
		j := envelope.Job{ID: id, User: user, Kind: kind, Priority: envelope.PriorityNormal, Input: []byte(`{}`), CreatedAt: time.Now().UTC()}
		m, err := envelope.NewJobMsg(j, "/beamline/beambench", "")
		if err != nil {
			return err
		}
		if err := publishAsync(ctx, t, m); err != nil {
			return fmt.Errorf("publish job %d: %w", i, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	select {
	case <-t.js.PublishAsyncComplete():
		return nil
	case <-time.After(time.Minute):
		return fmt.Errorf("publish: PubAcks missing after a minute (%d pending)", t.js.PublishAsyncPending())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// rawConsumeAck publishes n jobs to a subject nobody serves and consumes
// them with a consumer configured like the processor's (explicit ack, the
// same max_ack_pending), acking each at once. It returns acks per second,
// first delivery to last ack.
func rawConsumeAck(ctx context.Context, t *target, n int) (float64, *tally, error) {
	defer t.purge(context.WithoutCancel(ctx), rawSubjects)
	run := fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffff)
	if err := publishJobs(ctx, t, n, func(i int) (string, string) {
		return fmt.Sprintf("pr%d", i%pipelineUsers), fmt.Sprintf("pr%s-%d", run, i)
	}, rawKind); err != nil {
		return 0, nil, err
	}
	tl := &tally{want: n, done: make(chan struct{})}
	rate, got, err := consumeJobs(ctx, t, "beambench-raw", tl, time.Minute+time.Duration(n)*100*time.Microsecond, func(m jetstream.Msg) {
		m.Ack()
		tl.hit(time.Now())
	})
	if err == nil && got < 2 {
		err = fmt.Errorf("raw consume: %d of %d acked", got, n)
	}
	return rate, tl, err
}

// consumeJobs consumes the rawKind jobs with a durable consumer configured
// like the processor's (its settings and filters) named name, handing each
// message to handle, until tl has counted all it wants, limit passes or
// ctx ends. It returns the rate of tl's hits, first to last, and their
// number (the rate is 0 below two).
func consumeJobs(ctx context.Context, t *target, name string, tl *tally, limit time.Duration, handle func(jetstream.Msg)) (float64, int, error) {
	cfg, err := jsm.Consumer(envelope.PriorityNormal, rawKind)
	if err != nil {
		return 0, 0, err
	}
	cfg.Durable, cfg.Name, cfg.Description = name, name, "beambench: "+name
	cons, err := t.js.CreateOrUpdateConsumer(ctx, streams.Jobs, cfg)
	if err != nil {
		return 0, 0, err
	}
	defer t.js.DeleteConsumer(context.WithoutCancel(ctx), streams.Jobs, cfg.Durable)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if md, err := m.Metadata(); err == nil && md.NumDelivered > 1 {
			tl.mu.Lock()
			tl.redelivered++
			tl.mu.Unlock()
		}
		handle(m)
	}, jetstream.PullMaxMessages(cfg.MaxAckPending))
	if err != nil {
		return 0, 0, err
	}
	defer cc.Stop()
	select {
	case <-tl.done:
	case <-time.After(limit):
	case <-ctx.Done():
	}
	got, first, last := tl.snapshot()
	if got < 2 {
		return 0, got, nil
	}
	return float64(got-1) / last.Sub(first).Seconds(), got, nil
}

// pipelineLatency submits no-op jobs over HTTP at a fixed rate and times
// each from just before its POST to its terminal push on a WebSocket joined
// to the user's topic. It also splits each job's time into stages by the
// timestamps the pushes carry (every part runs on this machine's clock), and
// reports them for the slowest 1 % beside all jobs: where the tail is.
func pipelineLatency(ctx context.Context, t *target, o *options, rep *reporter) error {
	user := fmt.Sprintf("pl%x", time.Now().UnixNano()&0xffffff)
	tok := t.token(user)
	var mu sync.Mutex
	jobs := map[string]*jobTimes{}
	var done []*jobTimes
	lat := newLatencies(1 << 20)
	get := func(id string) *jobTimes { // mu held
		j := jobs[id]
		if j == nil {
			j = &jobTimes{}
			jobs[id] = j
		}
		return j
	}
	match := func(id string, j *jobTimes) { // mu held
		if !j.sent.IsZero() && !j.read.IsZero() {
			lat.add(j.read.Sub(j.sent))
			done = append(done, j)
			delete(jobs, id)
		}
	}
	ws, err := dialWS(ctx, t.notifierURL, tok, nil, func(f *phoenixtest.Frame, at time.Time) {
		p, ok := decodeJobPush(f)
		if !ok {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		j := get(p.Job.ID)
		if p.Job.Status.Terminal() {
			j.id, j.streamSeq = p.Job.ID, p.StreamSeq
			j.created, j.terminal, j.read = p.Job.CreatedAt, p.Job.UpdatedAt, at
			match(p.Job.ID, j)
		}
	})
	if err != nil {
		return err
	}
	defer ws.Close()
	if err := joinWS(ctx, ws, "user:"+user); err != nil {
		return err
	}
	total := int(float64(o.pipeRate) * o.pipeDur.Seconds())
	interval := time.Second / time.Duration(o.pipeRate)
	var failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range total {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := time.Now()
			id, err := submit(ctx, t, tok, noopBody)
			if err != nil {
				failed.Add(1)
				return
			}
			accepted := time.Now()
			mu.Lock()
			j := get(id)
			j.sent, j.accepted = s, accepted
			match(id, j)
			mu.Unlock()
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(15 * time.Second)
	for lat.len() < total-int(failed.Load()) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	if lat.len() == 0 {
		return fmt.Errorf("pipeline latency: %w (failed submissions %d)", errNoFigures, failed.Load())
	}
	p := map[string]any{"rate_per_s": o.pipeRate, "jobs": total, "measured": lat.len(), "failed": failed.Load(), "path": "POST /v1/jobs → terminal push on user:<id>"}
	rep.add("pipeline", "submit→terminal push p50", lat.quantile(0.50), "ms", p)
	rep.add("pipeline", "submit→terminal push p99", lat.quantile(0.99), "ms", p)
	rep.add("pipeline", "submit→terminal push p99.9", lat.quantile(0.999), "ms", p)
	mu.Lock()
	defer mu.Unlock()
	reportStages(ctx, t, rep, done, start)
	return nil
}

// processStart is about when the process started (package init), to set a
// slow job beside the runtime's GC trace.
var processStart = time.Now()

// jobTimes is one latency job's timeline: sent, accepted and read by the
// bench; created and terminal stamped by ingest and the processor. (A no-op
// job's running is not pushed: the processor defers a start, and skips it
// when the run ends first, docs/design.md.)
type jobTimes struct {
	id                   string
	streamSeq            uint64 // the terminal event's EVENTS sequence
	sent, accepted, read time.Time
	created, terminal    time.Time
}

// stages splits a job's submit → terminal push into its parts; ok is false
// when a stamp is missing.
func (j *jobTimes) stages() (s [4]time.Duration, ok bool) {
	if j.created.IsZero() || j.terminal.IsZero() {
		return s, false
	}
	return [4]time.Duration{
		j.created.Sub(j.sent),     // the request reaching ingest's handler
		j.terminal.Sub(j.created), // stored, delivered, claimed and run
		j.read.Sub(j.terminal),    // outcome and event stored, pushed and read
		j.accepted.Sub(j.sent),    // the 202, for comparison
	}, true
}

var stageNames = [4]string{
	"POST → ingest stamps created_at",
	"created_at → processor stamps the outcome (stored, delivered, claimed, run)",
	"outcome stamped → push read (outcome and event stored, pushed)",
	"POST → 202 read",
}

// reportStages reports each stage's median over the slowest 0.2 % of done
// (at least two jobs: the samples that make the p99.9) beside its median and
// p99 over all of them, and the slowest jobs' stages with the times their
// terminal snapshot and event were stored (JetStream's own stamps, read
// back after the run).
func reportStages(ctx context.Context, t *target, rep *reporter, done []*jobTimes, start time.Time) {
	type row struct {
		total time.Duration
		s     [4]time.Duration
		j     *jobTimes
	}
	var rows []row
	for _, j := range done {
		if s, ok := j.stages(); ok {
			rows = append(rows, row{j.read.Sub(j.sent), s, j})
		}
	}
	if len(rows) < 100 {
		return
	}
	slices.SortFunc(rows, func(a, b row) int { return cmp.Compare(b.total, a.total) })
	tail := max(2, len(rows)/500)
	for i, name := range stageNames {
		all := make([]time.Duration, len(rows))
		for k, r := range rows {
			all[k] = r.s[i]
		}
		slow := slices.Clone(all[:tail])
		rep.add("pipeline", "p99.9 tail stage: "+name, quantileMS(slow, 0.5), "ms", map[string]any{
			"jobs":              tail,
			"of":                len(rows),
			"tail_total_p50_ms": round(float64(rows[tail/2].total) / 1e6),
			"all_p50_ms":        round(quantileMS(all, 0.5)),
			"all_p99_ms":        round(quantileMS(all, 0.99)),
		})
	}
	events, err := t.js.Stream(ctx, streams.Events)
	if err != nil {
		t.log.Warn("reading the slowest jobs' store times", "err", err)
	}
	for k, r := range rows[:min(3, len(rows))] {
		p := map[string]any{"job": r.j.id, "sent_at_s": round(r.j.sent.Sub(start).Seconds()),
			// Beside GODEBUG=gctrace=1's @<seconds since the process started>.
			"sent_since_process_start_s": round(r.j.sent.Sub(processStart).Seconds())}
		for i, name := range stageNames {
			p[name] = round(ms(r.s[i]))
		}
		// Where "outcome stamped → push read" went: the outcome's KV write,
		// the event's store, and the re-publish → notifier → socket → read.
		if e, err := t.kv.Get(ctx, r.j.id); err == nil {
			p["outcome stamped → snapshot stored (KV)"] = round(ms(e.Created().Sub(r.j.terminal)))
			if events != nil {
				if m, err := events.GetMsg(ctx, r.j.streamSeq); err == nil {
					p["snapshot stored → event stored (EVENTS)"] = round(ms(m.Time.Sub(e.Created())))
					p["event stored → push read"] = round(ms(r.j.read.Sub(m.Time)))
				}
			}
		}
		rep.add("pipeline", fmt.Sprintf("slowest job %d: submit→terminal push", k+1), ms(r.total), "ms", p)
	}
}

// submit posts one job and returns its id.
func submit(ctx context.Context, t *target, tok, body string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, t.ingestURL+"/v1/jobs", bytes.NewReader([]byte(body)))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("POST /v1/jobs: %s: %s", resp.Status, b)
	}
	var s envelope.Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return "", err
	}
	return s.ID, nil
}

// publishAsync publishes m asynchronously, waiting while too many PubAcks
// are outstanding (bounded by ctx and a minute).
func publishAsync(ctx context.Context, t *target, m *nats.Msg) error {
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := t.js.PublishMsgAsync(m)
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(2 * time.Millisecond)
	}
}
