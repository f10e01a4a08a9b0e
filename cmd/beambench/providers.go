package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/outputs"
	"github.com/beamline/beamline/internal/processor"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/provider/replicatefake"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// The providers scenario (issue 13 §7):
//
//   - waiting: N jobs of a Replicate model whose predictions the fake holds,
//     on one processor run as a process of its own ("beambench
//     providers-processor", providers_proc.go) on devstack's NATS, polling
//     every 10 minutes and waiting on webhooks (the fake sends each
//     prediction's start webhook through ingest). Memory per waiting job is
//     the growth of that process's resident set (after GCs, free pages
//     returned to the OS) from the same process idle before the jobs (the
//     same-run baseline) to the N waits held, over N; its Go heap and
//     stacks likewise. The embedded nats-server, the fake and ingest are
//     in beambench's process, not in the figure.
//   - output: a 20 MB output served with Range (4 MiB windows at spread
//     offsets, as a video player seeks) through ingest's
//     GET /v1/jobs/{id}/outputs/{name} from the Object Store, against
//     http.ServeContent of the same bytes in a local file, in the same run.

const (
	providersKind   = "provbench"
	providersOutput = "outbench"
)

func runProviders(ctx context.Context, t *target, o *options, rep *reporter) error {
	if t.stack == nil {
		return errors.New("providers needs the in-process devstack (its NATS for an in-process processor)")
	}
	if o.provWaiting > 0 {
		if err := providersWaiting(ctx, t, o, rep); err != nil {
			return fmt.Errorf("waiting: %w", err)
		}
	}
	if err := providersWebhookPush(ctx, t, o, rep); err != nil {
		return fmt.Errorf("webhook push: %w", err)
	}
	if o.provOutputMB <= 0 {
		return nil
	}
	return providersOutputRange(ctx, t, o, rep)
}

// heldFake is a Replicate fake whose predictions wait until release; with
// a webhook secret it sends the webhooks a prediction asks for.
func heldFake(release <-chan struct{}, webhookSecret string) (*replicatefake.Server, *httptest.Server) {
	fake := replicatefake.New(replicatefake.Config{
		StartDelay:    func(map[string]json.RawMessage) time.Duration { return 0 },
		WebhookSecret: webhookSecret,
		Predict: func(ctx context.Context, r *replicatefake.Run) (json.RawMessage, error) {
			select {
			case <-release:
				return json.RawMessage(`"done"`), nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
	})
	return fake, httptest.NewServer(fake)
}

func providersWaiting(ctx context.Context, t *target, o *options, rep *reporter) error {
	n := o.provWaiting
	release := make(chan struct{})
	defer close(release)
	fake, srv := heldFake(release, replicatefake.DefaultWebhookSecret)
	defer srv.Close()
	defer fake.Close()

	// The processor under test, a process of its own on devstack's NATS.
	child, err := startProcChild(t, srv.URL, n, o)
	if err != nil {
		return err
	}
	defer func() {
		child.stop()
		for _, prio := range envelope.Priorities {
			_ = t.js.DeleteConsumer(context.Background(), streams.Jobs, jsm.ConsumerName(prio, providersKind))
		}
		t.purge(context.Background(), "jobs.*."+providersKind+".>")
	}()
	// Baseline: the same process, started and idle (its pullers polling),
	// before any job.
	time.Sleep(2 * time.Second)
	idle, err := child.ask(ctx, "measure providers-idle")
	if err != nil {
		return err
	}

	start := time.Now()
	if err := publishJobs(ctx, t, n, func(i int) (string, string) {
		return fmt.Sprintf("pw%d", i), fmt.Sprintf("pw-%d-%d", start.UnixNano(), i)
	}, providersKind); err != nil {
		return err
	}
	var detached int
	if err := waitUntil(ctx, 3*time.Minute, func() bool {
		m, err := child.ask(ctx, "detached")
		detached = m.Detached
		return err == nil && fake.Running() == n && detached == n
	}); err != nil {
		return fmt.Errorf("%d predictions running, %d runs detached, want %d", fake.Running(), detached, n)
	}
	took := time.Since(start)
	// The start webhooks (one per prediction) reach the waits: let them
	// land before measuring.
	time.Sleep(3 * time.Second)
	wait, err := child.ask(ctx, "measure providers-waiting")
	if err != nil {
		return err
	}

	per := func(a, b uint64) float64 { return float64(int64(b)-int64(a)) / float64(n) / 1024 }
	params := map[string]any{"jobs": n, "workers": 32, "poll": "10m", "webhooks": true, "process": "beambench providers-processor (own process)",
		"rss_idle_mb": idle.RSSSettled >> 20, "rss_waiting_mb": wait.RSSSettled >> 20, "rss_waiting_unsettled_mb": wait.RSS >> 20,
		"heap_per_job_kb":    math.Round(per(idle.Heap, wait.Heap)*100) / 100,
		"stack_per_job_kb":   math.Round(per(idle.Stack, wait.Stack)*100) / 100,
		"goroutines_per_job": math.Round(float64(wait.Goroutines-idle.Goroutines)/float64(n)*10) / 10}
	params["baseline"] = fmt.Sprintf("the same process idle before the jobs (RSS %.1f MiB, heap+stacks %.1f MiB), subtracted",
		float64(idle.RSSSettled)/(1<<20), float64(idle.Heap+idle.Stack)/(1<<20))
	rep.add("providers", "processor RSS per waiting job (own process, after GC)", per(idle.RSSSettled, wait.RSSSettled), "KB/job", params)
	rep.add("providers", "processor Go heap + stacks per waiting job", per(idle.Heap+idle.Stack, wait.Heap+wait.Stack), "KB/job", params)
	rep.add("providers", "processor RSS per waiting job (own process, as found)", per(idle.RSS, wait.RSS), "KB/job", params)
	rep.add("providers", "all waits started", took.Seconds(), "s", map[string]any{"jobs": n, "workers": 32})
	return nil
}

// writeProfiles writes this process's heap (after a GC) and goroutine
// profiles into dir, named after what is measured.
func writeProfiles(dir, name string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, prof := range []string{"heap", "goroutine"} {
		f, err := os.Create(filepath.Join(dir, name+"."+prof+".pprof"))
		if err != nil {
			return err
		}
		err = pprof.Lookup(prof).WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// gathered is the value of a gauge or counter (summed over labels).
func gathered(g prometheus.Gatherer, name string) float64 {
	mfs, err := g.Gather()
	if err != nil {
		return math.NaN()
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return sum
}

func waitUntil(ctx context.Context, limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// providersOutputRange serves one stored output with Range through ingest
// and the same bytes with http.ServeContent from a local file.
func providersOutputRange(ctx context.Context, t *target, o *options, rep *reporter) error {
	size := o.provOutputMB << 20
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		return err
	}
	st, err := outputs.CreateStore(ctx, t.js, outputs.StoreConfig{MaxBytes: int64(size) + 1})
	if err != nil {
		return err
	}
	user := "outbench"
	id := fmt.Sprintf("ob-%d", time.Now().UnixNano())
	if err := publishJobs(ctx, t, 1, func(int) (string, string) { return user, id }, providersOutput); err != nil {
		return err
	}
	defer t.purge(context.Background(), "jobs.*."+providersOutput+".>")
	name := "0.mp4"
	if _, err := st.Put(ctx, outputs.Key(id, name), "video/mp4", bytes.NewReader(data)); err != nil {
		return err
	}
	// Baseline: the same bytes in a local file, http.ServeContent.
	dir, err := os.MkdirTemp("", "beambench-output-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	local := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "video/mp4")
		http.ServeContent(w, r, name, fi.ModTime(), f)
	})}
	go local.Serve(ln)
	defer local.Close()

	tok := t.token(user)
	window := min(4<<20, size)
	fetch := func(base string, auth bool, off int) (int64, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base, nil)
		if err != nil {
			return 0, err
		}
		if auth {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+window-1))
		resp, err := t.http.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		got, err := io.Copy(io.Discard, resp.Body)
		if err == nil && (resp.StatusCode != http.StatusPartialContent || got != int64(window)) {
			err = fmt.Errorf("%s: %d with %d bytes, want 206 with %d", base, resp.StatusCode, got, window)
		}
		return got, err
	}
	// Offsets spread over the file, the same for both.
	offsets := make([]int, o.provRangeReqs)
	for i := range offsets {
		offsets[i] = (i * 7919 * 4096) % (size - window + 1)
	}
	measure := func(base string, auth bool) (float64, error) {
		if _, err := fetch(base, auth, 0); err != nil { // warm up
			return 0, err
		}
		var total int64
		start := time.Now()
		for _, off := range offsets {
			n, err := fetch(base, auth, off)
			if err != nil {
				return 0, err
			}
			total += n
		}
		return float64(total) / (1 << 20) / time.Since(start).Seconds(), nil
	}
	ingestURL := t.ingestURL + outputs.Path(id, name)
	localURL := "http://" + ln.Addr().String() + "/" + name
	// Interleaved, best of three, so neither side gets the quieter moment.
	var bestIngest, bestLocal float64
	for range 3 {
		v, err := measure(ingestURL, true)
		if err != nil {
			return err
		}
		bestIngest = max(bestIngest, v)
		b, err := measure(localURL, false)
		if err != nil {
			return err
		}
		bestLocal = max(bestLocal, b)
	}
	rep.addVs("providers", "output served with Range (ingest, Object Store)", bestIngest, "MiB/s", bestLocal,
		map[string]any{"size_mb": o.provOutputMB, "range_kb": window >> 10, "requests": len(offsets), "baseline": "http.ServeContent of a local file",
			"reads": "the same object again and again (warm: ingest's chunk cache holds it when it fits)"})

	// Cold: a fresh object (its chunks in no cache) read once, in
	// disjoint windows from its start, against the same windows of the
	// local file.
	cold := "1.mp4"
	if _, err := st.Put(ctx, outputs.Key(id, cold), "video/mp4", bytes.NewReader(data)); err != nil {
		return err
	}
	offsets = offsets[:0]
	for off := 0; off+window <= size; off += window {
		offsets = append(offsets, off)
	}
	coldIngest, err := measure(t.ingestURL+outputs.Path(id, cold), true)
	if err != nil {
		return err
	}
	coldLocal, err := measure(localURL, false)
	if err != nil {
		return err
	}
	rep.addVs("providers", "output served with Range, first read (ingest, Object Store)", coldIngest, "MiB/s", coldLocal,
		map[string]any{"size_mb": o.provOutputMB, "range_kb": window >> 10, "requests": len(offsets), "baseline": "http.ServeContent of a local file",
			"reads": "a fresh object read once in disjoint windows (after a warm-up read of its first window)"})
	return nil
}

// benchProcessor runs an in-process processor on the target's NATS serving
// kind with prov (cfg gives the rest: concurrency, limits, webhooks), and
// returns its registry and how to stop it: then the kind's consumers and
// jobs are removed. killed stops it as a SIGKILL would (its connection
// closed first: no hand-back writes).
func benchProcessor(ctx context.Context, t *target, kind string, prov provider.Provider, cfg processor.Config, killed bool) (*prometheus.Registry, func(), error) {
	nc, err := nats.Connect(t.natsURL, nats.Name("beambench-processor-"+kind))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	cfg.Addr = "127.0.0.1:0"
	cfg.Kinds = []config.Kind{{Name: kind, Provider: prov.Name()}}
	cfg.Providers = map[string]provider.Provider{prov.Name(): prov}
	cfg.DefaultProvider = prov.Name()
	cfg.PollWait = 200 * time.Millisecond
	reg := prometheus.NewRegistry()
	p, err := processor.New(cfg, nc, js, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	return reg, func() {
		if killed {
			nc.Close()
		}
		stop()
		<-done
		nc.Close()
		for _, prio := range envelope.Priorities {
			_ = t.js.DeleteConsumer(context.Background(), streams.Jobs, jsm.ConsumerName(prio, kind))
		}
		t.purge(context.Background(), "jobs.*."+kind+".>")
	}, nil
}
