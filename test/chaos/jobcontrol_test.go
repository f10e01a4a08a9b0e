package chaos

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
	"github.com/beamline/beamline/test/chaos/kit"
)

// The job-control chaos run (issue 14): with batched, scheduled (run_at)
// and cron jobs in flight, the processors are SIGKILLed a few times and
// nats-server is restarted once on the same store folder. Every batched
// and scheduled job must end succeeded exactly once (one succeeded event
// in EVENTS), no scheduled job may start before its run_at, and the cron
// schedule must make exactly one job per firing time from its first
// firing to its last: no firing missed, none doubled.
const (
	jcBatched    = 200
	jcScheduled  = 200
	jcSpread     = 20 * time.Second // run_at spread of the scheduled jobs
	jcPeriod     = 2 * time.Second  // the cron's period
	jcCron       = "*/2 * * * * *"
	jcSchedule   = "tick"
	jcUser       = "jobchaos"
	jcProcessors = 2
	jcKills      = 4
)

// jcItem is one answer item of POST /v1/jobs/batch.
type jcItem struct {
	Status int                `json:"status"`
	Job    *envelope.Snapshot `json:"job"`
	Error  *struct {
		Code string `json:"code"`
	} `json:"error"`
}

// jcPost posts body as JSON to base+path and decodes a 2xx answer into out.
func jcPost(ctx context.Context, hc *http.Client, method, url, token string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	if out != nil {
		return resp.StatusCode, json.Unmarshal(b, out)
	}
	return resp.StatusCode, nil
}

// submitBatches posts items in batches of 100, each item with its own
// idempotency key, and posts the refused ones again (same keys: a retry
// never makes a second job) until every item is accepted or ctx ends. It
// returns the job id per item.
func submitBatches(ctx context.Context, t *testing.T, hc *http.Client, base, token string, items []map[string]any) []string {
	t.Helper()
	ids := make([]string, len(items))
	for attempt := 0; ; attempt++ {
		var todo []int
		for i := range items {
			if ids[i] == "" {
				todo = append(todo, i)
			}
		}
		if len(todo) == 0 {
			return ids
		}
		if ctx.Err() != nil {
			t.Fatalf("%d batch items never accepted", len(todo))
		}
		if attempt > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		for len(todo) > 0 {
			n := min(100, len(todo))
			part := todo[:n]
			todo = todo[n:]
			jobs := make([]map[string]any, len(part))
			for k, i := range part {
				jobs[k] = items[i]
			}
			var ans struct {
				Jobs []jcItem `json:"jobs"`
			}
			if _, err := jcPost(ctx, hc, http.MethodPost, base+"/v1/jobs/batch", token, map[string]any{"jobs": jobs}, &ans); err != nil {
				t.Logf("batch refused whole (retried): %v", err)
				continue
			}
			if len(ans.Jobs) != len(part) {
				t.Fatalf("batch of %d answered %d items", len(part), len(ans.Jobs))
			}
			for k, it := range ans.Jobs {
				switch {
				case it.Status == http.StatusAccepted && it.Job != nil:
					ids[part[k]] = it.Job.ID
				case it.Status == http.StatusServiceUnavailable || it.Status == http.StatusTooManyRequests:
				default:
					t.Fatalf("batch item %d: unexpected %d %+v", part[k], it.Status, it.Error)
				}
			}
		}
	}
}

// cronJobID is the id ingest gives the job of a schedule firing:
// keyedJobID(user, "beamline-schedule-v2\x00" + name + "\x00" + the
// schedule's created_at + "\x00next " + the firing's Nats-Schedule-Next),
// docs/design.md#repeating-schedules. Written out here so the test checks
// the contract instead of calling the code under test.
func cronJobID(user, name string, created time.Time, next string) string {
	key := "beamline-schedule-v2\x00" + name + "\x00" + created.UTC().Format(time.RFC3339Nano) + "\x00next " + next
	h := sha256.New()
	h.Write([]byte("beamline-idempotency-v1\x00" + user + "\x00" + key))
	enc := base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
	return enc.EncodeToString(h.Sum(nil))[:26]
}

// jcEvents is what EVENTS holds for one job.
type jcEvents struct {
	kind      string
	succeeded int
	terminal  int
	first     time.Time // the stored time of the job's first event
	attempt   int
}

// readAll reads every message of stream on filter with an ordered
// consumer, within ctx.
func readAll(ctx context.Context, t *testing.T, js jetstream.JetStream, stream, filter string, fn func(jetstream.Msg)) {
	t.Helper()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		t.Fatal(err)
	}
	for ctx.Err() == nil {
		batch, err := c.Fetch(500, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		var pending uint64
		for m := range batch.Messages() {
			n++
			if meta, err := m.Metadata(); err == nil {
				pending = meta.NumPending
			}
			fn(m)
		}
		if n == 0 || pending == 0 {
			return
		}
	}
	t.Fatalf("reading %s %s: %v", stream, filter, ctx.Err())
}

func TestChaosJobControl(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test: real processes, a NATS restart")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 110*time.Second)
	defer cancel()

	bin := kit.Build(t, "nats-server", "ingest", "processor")
	logs := kit.LogDir(t, "CHAOS_LOG_DIR")
	natsPort, monPort := kit.FreePort(t), kit.FreePort(t)
	conf, err := filepath.Abs(filepath.Join("..", "..", "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	// The store folder outlives the nats-server restart, as devstack's
	// data folder does.
	ns := kit.NewProc(t, logs, "nats-server", filepath.Join(bin, "nats-server"), passwords.ServerEnv("jobchaos", t.TempDir()),
		"-c", conf, "-a", "127.0.0.1", "-p", strconv.Itoa(natsPort), "-m", strconv.Itoa(monPort))
	natsHealth := fmt.Sprintf("http://127.0.0.1:%d/healthz?js-enabled-only=true", monPort)
	ns.Start(t)
	ns.WaitHTTP(t, natsHealth, 20*time.Second)
	svc := func(name, binary string, args ...string) *kit.Proc {
		env := []string{"NATS_URL=" + passwords.URL(natsPort, binary), "BEAMLINE_AUTH_SECRET=" + secret}
		return kit.NewProc(t, logs, name, filepath.Join(bin, binary), env,
			append(args, "-log-format", "json", "-kinds", "image,video")...)
	}
	var procs []*kit.Proc
	for i := range jcProcessors {
		pp := kit.FreePort(t)
		p := svc("processor-"+strconv.Itoa(i+1), "processor", "-addr", kit.Addr(pp), "-provider", "sim",
			"-concurrency", "16", "-max-per-user", "64", "-ack-wait", "2s", "-max-deliver", "8",
			"-grace", "1s", "-started-delay", "0")
		p.Start(t)
		p.WaitHTTP(t, "http://"+kit.Addr(pp)+"/readyz", 30*time.Second)
		procs = append(procs, p)
	}
	ip := kit.FreePort(t)
	base := "http://" + kit.Addr(ip)
	ing := svc("ingest", "ingest", "-addr", kit.Addr(ip))
	ing.Start(t)
	ing.WaitHTTP(t, base+"/readyz", 30*time.Second)
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range append([]*kit.Proc{ns, ing}, procs...) {
				t.Logf("---- %s log tail:\n%s", p.Name, p.Tail(3000))
			}
		}
	})
	nc, err := nats.Connect(passwords.URL(natsPort, "admin"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	token, err := auth.Issue([]byte(secret), jcUser, false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 15 * time.Second}

	// The cron first, so that its firings span the whole run.
	sched := map[string]any{"name": jcSchedule, "cron": jcCron,
		"job": map[string]any{"kind": "video", "input": map[string]any{"sim": map[string]any{"duration_ms": 30}}}}
	if _, err := jcPost(ctx, hc, http.MethodPost, base+"/v1/schedules", token, sched, nil); err != nil {
		t.Fatal(err)
	}

	// 200 batched jobs and 200 due over the next 20 s, all through
	// POST /v1/jobs/batch; a tenth fail once (sim), so attempts vary.
	rnd := rand.New(rand.NewPCG(14, 2))
	simOf := func() map[string]any {
		sim := map[string]any{"duration_ms": 20 + rnd.IntN(200)}
		if rnd.IntN(10) == 0 {
			sim["fail_times"] = 1
		}
		return map[string]any{"sim": sim}
	}
	t0 := time.Now()
	batched := make([]map[string]any, jcBatched)
	for i := range batched {
		batched[i] = map[string]any{"kind": "image", "idempotency_key": "jc-b-" + strconv.Itoa(i), "input": simOf()}
	}
	runAts := make([]time.Time, jcScheduled)
	scheduled := make([]map[string]any, jcScheduled)
	for i := range scheduled {
		runAts[i] = t0.Add(2*time.Second + time.Duration(i)*jcSpread/jcScheduled).UTC()
		scheduled[i] = map[string]any{"kind": "image", "idempotency_key": "jc-s-" + strconv.Itoa(i),
			"run_at": runAts[i].Format(time.RFC3339Nano), "input": simOf()}
	}
	batchIDs := submitBatches(ctx, t, hc, base, token, batched)
	schedIDs := submitBatches(ctx, t, hc, base, token, scheduled)
	t.Logf("submitted %d batched and %d scheduled jobs (%s)", len(batchIDs), len(schedIDs), time.Since(t0).Round(time.Millisecond))

	// Chaos over the scheduled jobs' 20 s: SIGKILL a processor every few
	// seconds (restarted at once), and restart nats-server once, in the
	// middle, on the same store.
	seed := time.Now().UnixNano()
	t.Logf("chaos seed %d", seed)
	crng := rand.New(rand.NewPCG(uint64(seed), 14))
	var natsDown, natsUp time.Time
	for k := range jcKills {
		select {
		case <-time.After(time.Duration(2500+crng.IntN(2500)) * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("deadline during chaos")
		}
		p := procs[crng.IntN(len(procs))]
		p.Signal(syscall.SIGKILL)
		t.Logf("SIGKILL %s (%s)", p.Name, time.Since(start).Round(time.Millisecond))
		if k == jcKills/2 {
			natsDown = time.Now()
			ns.Signal(syscall.SIGKILL)
			// Down for longer than a cron period, so a cron time falls
			// in the outage.
			time.Sleep(jcPeriod + time.Duration(crng.IntN(1000))*time.Millisecond)
			ns.Start(t)
			ns.WaitHTTP(t, natsHealth, 30*time.Second)
			natsUp = time.Now()
			t.Logf("nats-server SIGKILLed and restarted on its store: down %s (%s)", natsUp.Sub(natsDown).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		}
		p.Start(t)
	}
	// Let the cron fire a few times more after the last scheduled job is
	// due, then delete it.
	select {
	case <-time.After(time.Until(runAts[len(runAts)-1].Add(3 * time.Second))):
	case <-ctx.Done():
		t.Fatal("deadline before the schedule's end")
	}
	if _, err := jcPost(ctx, hc, http.MethodDelete, base+"/v1/schedules/"+jcSchedule, token, nil, nil); err != nil {
		t.Fatal(err)
	}

	// Every batched and scheduled job ends terminal in job_status.
	kv, err := js.KeyValue(ctx, streams.JobStatus)
	if err != nil {
		t.Fatal(err)
	}
	// waitTerminal polls job_status until every job of ids is terminal or
	// timeout passes; it returns the terminal snapshots and the rest.
	waitTerminal := func(ids []string, timeout time.Duration) (map[string]envelope.Snapshot, []string) {
		final := map[string]envelope.Snapshot{}
		deadline := time.Now().Add(timeout)
		pending := ids
		for len(pending) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
			var still []string
			for _, id := range pending {
				e, err := kv.Get(ctx, id)
				if err != nil {
					still = append(still, id)
					continue
				}
				snap, err := envelope.DecodeSnapshot(e.Value())
				if err != nil {
					t.Fatalf("job %s: %v", id, err)
				}
				if !snap.Status.Terminal() {
					still = append(still, id)
					continue
				}
				final[id] = snap
			}
			if pending = still; len(pending) > 0 {
				time.Sleep(250 * time.Millisecond)
			}
		}
		return final, pending
	}
	all := append(slices.Clone(batchIDs), schedIDs...)
	final, pending := waitTerminal(all, time.Minute)
	if len(pending) > 0 {
		t.Fatalf("%d jobs never ended (lost), e.g. %v", len(pending), pending[:min(5, len(pending))])
	}
	// Every firing was turned into its job and acked: nothing pending on
	// ingest's cron consumer (a firing whose ack was lost in the restart
	// is redelivered after the consumer's ack wait, and must make no
	// second job).
	kit.WaitFor(t, 45*time.Second, "every schedule firing acked", func() bool {
		c, err := js.Consumer(ctx, streams.Scheduled, "ingest-cron")
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})

	// The server's firings of the schedule, from SCHEDULED.
	type firing struct {
		stored  time.Time // when the server stored it (the fire time)
		nominal time.Time // the cron time it stands for: its Nats-Schedule-Next less a period
		next    string    // its Nats-Schedule-Next as stored
		created time.Time // its schedule's created_at (the firing's body is the schedule)
	}
	var firings []firing
	readAll(ctx, t, js, streams.Scheduled, envelope.CronFireSubject(jcUser, jcSchedule), func(m jetstream.Msg) {
		meta, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		raw := m.Headers().Get("Nats-Schedule-Next")
		next, err := time.Parse(time.RFC3339Nano, raw)
		if err != nil {
			t.Fatalf("firing without Nats-Schedule-Next: %v", err)
		}
		var sched struct {
			CreatedAt time.Time `json:"created_at"`
		}
		if err := json.Unmarshal(m.Data(), &sched); err != nil {
			t.Fatalf("firing body: %v", err)
		}
		firings = append(firings, firing{stored: meta.Timestamp, nominal: next.Add(-jcPeriod), next: raw, created: sched.CreatedAt})
	})
	if len(firings) < 5 {
		t.Fatalf("the schedule fired %d times", len(firings))
	}
	// The firings' jobs end too (the last may still run); a firing that
	// made no job is reported below.
	var cronIDs []string
	for _, f := range firings {
		cronIDs = append(cronIDs, cronJobID(jcUser, jcSchedule, f.created, f.next))
	}
	waitTerminal(cronIDs, 15*time.Second)

	// Every job's events.
	evs := map[string]*jcEvents{}
	readAll(ctx, t, js, streams.Events, envelope.EventSubject(jcUser, "*"), func(m jetstream.Msg) {
		meta, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		_, snap, err := envelope.DecodeEvent(m.Data())
		if err != nil {
			t.Fatalf("event %s: %v", m.Subject(), err)
		}
		e := evs[snap.ID]
		if e == nil {
			e = &jcEvents{kind: snap.Kind, first: meta.Timestamp}
			evs[snap.ID] = e
		}
		if snap.Status == envelope.StatusSucceeded {
			e.succeeded++
		}
		if snap.Status.Terminal() {
			e.terminal++
		}
		e.attempt = max(e.attempt, snap.Attempt)
	})

	// Batched and scheduled: succeeded, one succeeded event and no other
	// terminal one; a scheduled job's first event not before its run_at.
	retried := 0
	var delays []time.Duration
	for i, id := range all {
		e := evs[id]
		switch {
		case final[id].Status != envelope.StatusSucceeded:
			t.Errorf("job %s ended %s: %s", id, final[id].Status, final[id].Error)
		case e == nil:
			t.Errorf("job %s has no events", id)
		case e.succeeded != 1 || e.terminal != 1:
			t.Errorf("job %s: %d succeeded events, %d terminal (want one, run once)", id, e.succeeded, e.terminal)
		}
		if e != nil && e.attempt > 1 {
			retried++
		}
		if i >= len(batchIDs) && e != nil {
			runAt := runAts[i-len(batchIDs)]
			if e.first.Before(runAt) {
				t.Errorf("scheduled job %s started %s before its run_at %s", id, runAt.Sub(e.first), runAt.Format(time.RFC3339Nano))
			}
			delays = append(delays, e.first.Sub(runAt))
		}
	}

	// Cron: the firings' cron times are every period from the first to the
	// last, each once. While nats-server is down nothing fires, and on its
	// return it does not fire what it missed: it computes the next time
	// from the clock rounded to the second, so a cron time within the
	// outage (or half a second after it) is skipped by NATS itself
	// (docs/design.md#repeating-schedules), as is one being fired when the
	// server was killed. Only those may be absent.
	slices.SortFunc(firings, func(a, b firing) int { return a.stored.Compare(b.stored) })
	seen := map[time.Time]int{}
	var fired []string
	for _, f := range firings {
		seen[f.nominal]++
		fired = append(fired, f.nominal.UTC().Format("15:04:05")+"@"+f.stored.UTC().Format("05.000"))
	}
	t.Logf("firings (cron time@stored): %v", fired)
	// A firing is stored a little after its cron time (lag); one whose
	// time came just before the SIGKILL but was not stored yet dies with
	// the server too, so the outage starts, for the cron, that much early.
	var lag time.Duration
	for _, f := range firings {
		lag = max(lag, f.stored.Sub(f.nominal))
	}
	outageFrom := natsDown.Add(-lag - 100*time.Millisecond)
	skipped := 0
	first, last := firings[0].nominal, firings[len(firings)-1].nominal
	for at := first; !at.After(last); at = at.Add(jcPeriod) {
		switch n := seen[at]; {
		case n > 1:
			t.Errorf("cron time %s fired %d times", at.Format(time.RFC3339), n)
		case n == 0 && at.After(outageFrom) && at.Before(natsUp.Add(time.Second)):
			skipped++
			t.Logf("cron time %s skipped by nats-server's restart (down %s–%s)", at.Format(time.RFC3339),
				natsDown.UTC().Format("15:04:05.000"), natsUp.UTC().Format("15:04:05.000"))
		case n == 0:
			t.Errorf("cron time %s never fired (nats-server was down %s–%s)", at.Format(time.RFC3339),
				natsDown.UTC().Format("15:04:05.000"), natsUp.UTC().Format("15:04:05.000"))
		}
	}
	// Each firing made its own job, which succeeded once; no other job of
	// the schedule's kind exists.
	cronJobs := map[string]int{}
	for _, f := range firings {
		id := cronJobID(jcUser, jcSchedule, f.created, f.next)
		cronJobs[id]++
		e := evs[id]
		switch {
		case cronJobs[id] > 1:
			t.Errorf("the firing stored at %s made no job of its own: its job %s is another firing's", f.stored.UTC().Format("15:04:05.000"), id)
		case e == nil:
			t.Errorf("the firing stored at %s (cron time %s) made no job %s", f.stored.UTC().Format("15:04:05.000"), f.nominal.Format(time.RFC3339), id)
		case e.succeeded != 1 || e.terminal != 1:
			t.Errorf("cron job %s: %d succeeded events, %d terminal", id, e.succeeded, e.terminal)
		}
	}
	videos := 0
	for id, e := range evs {
		if e.kind != "video" {
			continue
		}
		videos++
		if cronJobs[id] == 0 {
			t.Errorf("cron job %s belongs to no firing (a doubled firing)", id)
		}
	}

	slices.Sort(delays)
	pct := func(p float64) time.Duration {
		if len(delays) == 0 {
			return 0
		}
		return delays[min(len(delays)-1, int(p*float64(len(delays))))].Round(time.Millisecond)
	}
	kit.Figures(t, fmt.Sprintf("jobchaos: batched=%d scheduled=%d terminal=%d retried=%d cron_firings=%d cron_jobs=%d "+
		"cron_skipped_in_outage=%d processor_kills=%d nats_restarts=1 nats_down=%s sched_start_delay_p50=%s p99=%s max=%s elapsed=%s",
		len(batchIDs), len(schedIDs), len(final), retried, len(firings), videos, skipped, jcKills,
		natsUp.Sub(natsDown).Round(time.Millisecond), pct(0.5), pct(0.99), pct(1), time.Since(start).Round(time.Second)))
}
