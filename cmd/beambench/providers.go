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
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
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
//     on one in-process processor (polling every 10 minutes, so nothing but
//     the waits costs anything). Memory per waiting job is the growth of
//     this process's Go heap and stacks (after a GC) while the processor
//     holds the N waits, less the same-run baseline: the growth of the
//     same N predictions held by a second fake with no processor. What
//     remains is the processor's share, with the client side of its HTTP
//     connections and the embedded nats-server's bookkeeping of N un-acked
//     messages (an upper bound of the processor's own cost).
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

// memNow is the Go heap in use plus goroutine stacks, after GCs (a GC
// halves a stack that uses less than a quarter of it: a long wait sees
// many).
func memNow() (heapStack uint64, goroutines int) {
	for range 6 {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	memSplit = [2]uint64{ms.HeapInuse, ms.StackInuse}
	return ms.HeapInuse + ms.StackInuse, runtime.NumGoroutine()
}

// memSplit is the heap and the stacks of the last memNow.
var memSplit [2]uint64

// rssNow is this process's resident set, in bytes (0 when unknown).
func rssNow() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// heldFake is a Replicate fake whose predictions wait until release.
func heldFake(release <-chan struct{}) (*replicatefake.Server, *httptest.Server) {
	fake := replicatefake.New(replicatefake.Config{
		StartDelay: func(map[string]json.RawMessage) time.Duration { return 0 },
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
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	m0, g0 := memNow()
	split0 := memSplit
	// Baseline: the fake alone holding n predictions, created over HTTP.
	base, baseSrv := heldFake(release)
	defer baseSrv.Close()
	defer base.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	for i := range n {
		body := fmt.Sprintf(`{"input":{"prompt":"x","%s":"base-%d"}}`, replicatefake.InputJob, i)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseSrv.URL+"/v1/models/bench/held/predictions", strings.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+replicatefake.DefaultToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("baseline create: %d", resp.StatusCode)
		}
	}
	if err := waitUntil(ctx, time.Minute, func() bool { return base.Running() == n }); err != nil {
		return fmt.Errorf("baseline predictions running: %d of %d", base.Running(), n)
	}
	m1, g1 := memNow()
	split1 := memSplit
	if o.provProfile != "" {
		// The base of the profiles taken while the waits are held:
		// go tool pprof -base providers-before.heap.pprof providers-waiting.heap.pprof
		if err := writeProfiles(o.provProfile, "providers-before"); err != nil {
			return err
		}
	}

	// The processor under test, on devstack's NATS, serving its own kind.
	fake, srv := heldFake(release)
	defer srv.Close()
	defer fake.Close()
	prov, err := provider.NewReplicate(provider.ReplicateConfig{
		URL: srv.URL, Token: replicatefake.DefaultToken, Model: "bench/held",
		PollMin: 10 * time.Minute, PollMax: 10 * time.Minute,
		ExtraInput: func(req provider.Request) map[string]any {
			return map[string]any{replicatefake.InputJob: req.Job.ID}
		},
	})
	if err != nil {
		return err
	}
	reg, stopProc, err := benchProcessor(ctx, t, providersKind, prov, processor.Config{
		Concurrency: 32, MaxPerUser: 4, ProviderInflight: n,
	}, true) // as a SIGKILL would: no hand-back writes for n jobs
	if err != nil {
		return err
	}
	defer stopProc()

	start := time.Now()
	if err := publishJobs(ctx, t, n, func(i int) (string, string) {
		return fmt.Sprintf("pw%d", i), fmt.Sprintf("pw-%d-%d", start.UnixNano(), i)
	}, providersKind); err != nil {
		return err
	}
	if err := waitUntil(ctx, 3*time.Minute, func() bool {
		return fake.Running() == n && gathered(reg, "beamline_processor_detached") == float64(n)
	}); err != nil {
		return fmt.Errorf("%d predictions running, %v runs detached, want %d", fake.Running(), gathered(reg, "beamline_processor_detached"), n)
	}
	took := time.Since(start)
	rssWait := rssNow()
	m2, g2 := memNow()
	split2 := memSplit
	if o.provProfile != "" {
		if err := writeProfiles(o.provProfile, "providers-waiting"); err != nil {
			return err
		}
	}

	fakePer := float64(int64(m1)-int64(m0)) / float64(n)
	totalPer := float64(int64(m2)-int64(m1)) / float64(n)
	params := map[string]any{"jobs": n, "workers": 32, "poll": "10m", "fake_per_prediction_bytes": math.Round(fakePer),
		"goroutines_per_job": math.Round(float64(g2-g1)/float64(n)*10) / 10, "fake_goroutines_per_prediction": math.Round(float64(g1-g0)/float64(n)*10) / 10,
		"rss_mb":                          rssWait >> 20,
		"heap_per_job_bytes":              math.Round(float64(int64(split2[0])-int64(split1[0])) / float64(n)),
		"stack_per_job_bytes":             math.Round(float64(int64(split2[1])-int64(split1[1])) / float64(n)),
		"fake_stack_per_prediction_bytes": math.Round(float64(int64(split1[1])-int64(split0[1])) / float64(n))}
	rep.addVs("providers", "memory per waiting job (Go heap + stacks, processor's share)", (totalPer-fakePer)/1024, "KB/job",
		fakePer/1024, params)
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
		map[string]any{"size_mb": o.provOutputMB, "range_kb": window >> 10, "requests": len(offsets), "baseline": "http.ServeContent of a local file"})
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
