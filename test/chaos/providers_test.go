package chaos

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/provider/cogfake"
	"github.com/beamline/beamline/internal/provider/replicatefake"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/test/chaos/kit"
)

// The providers chaos run (issue 13 §7): jobs on a Cog farm and on
// Replicate, both fakes following their documented APIs, with webhooks
// delivered through ingest; the processors are SIGKILLed while predictions
// run. Every job must succeed, Cog must run exactly one prediction per job
// however often its processor died (PUT /predictions/{id} is idempotent and
// the handle is stored before the wait), Replicate at most one more per kill
// (its create is not idempotent: a kill between the create's answer and the
// handle's write costs one), and every kept output must be byte-identical to
// what the fake produced.
const (
	provJobsEach   = 200
	provKills      = 3
	provProcessors = 2
	provModel      = "acme/painter"
)

// outputBytes is what the fakes produce for a job's tag: a PNG signature
// and bytes derived from the tag, so each job's output is its own.
func outputBytes(tag string) []byte {
	sum := sha256.Sum256([]byte("chaos-output\x00" + tag))
	b := append([]byte("\x89PNG\r\n\x1a\n"), sum[:]...)
	for range 40 {
		b = append(b, sum[:]...)
	}
	return b
}

// fakeListener serves h on 127.0.0.1 (httptest picks the address).
func fakeServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Listener = ln
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func TestChaosProviders(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test: real processes and provider fakes")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Webhooks reach ingest; its address is chosen before the fakes start.
	ip := kit.FreePort(t)
	ingestURL := "http://" + kit.Addr(ip)

	// Two Cog servers (a small farm) with a few slots each, and Replicate.
	predict := func(ctx context.Context, dur time.Duration) error {
		select {
		case <-time.After(dur):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	durationOf := func(input map[string]json.RawMessage) time.Duration {
		var ms int
		_ = json.Unmarshal(input["duration_ms"], &ms)
		return time.Duration(ms) * time.Millisecond
	}
	tagOf := func(input map[string]json.RawMessage) string {
		var tag string
		_ = json.Unmarshal(input["tag"], &tag)
		return tag
	}
	var cogs []*cogfake.Server
	var cogURLs []string
	for range 2 {
		f := cogfake.New(cogfake.Config{
			Slots:    24,
			Validate: func(map[string]json.RawMessage, map[string]string) error { return nil },
			Predict: func(ctx context.Context, r *cogfake.Run) (json.RawMessage, error) {
				if err := predict(ctx, durationOf(r.Input)); err != nil {
					return nil, err
				}
				return json.Marshal("data:image/png;base64," + base64.StdEncoding.EncodeToString(outputBytes(tagOf(r.Input))))
			},
		})
		t.Cleanup(f.Close)
		cogs = append(cogs, f)
		cogURLs = append(cogURLs, fakeServer(t, f).URL)
	}
	rep := replicatefake.New(replicatefake.Config{
		Validate:   func(map[string]json.RawMessage) error { return nil },
		Key:        tagOf,
		StartDelay: func(map[string]json.RawMessage) time.Duration { return 200 * time.Millisecond },
		Predict: func(ctx context.Context, r *replicatefake.Run) (json.RawMessage, error) {
			if err := predict(ctx, durationOf(r.Input)); err != nil {
				return nil, err
			}
			return json.Marshal(r.File("out.png", "image/png", outputBytes(tagOf(r.Input))))
		},
	})
	t.Cleanup(rep.Close)
	repURL := fakeServer(t, rep).URL

	bin := kit.BuildBinaries(t)
	logs := kit.LogDir(t, "CHAOS_LOG_DIR")
	natsPort, httpPort := kit.FreePort(t), kit.FreePort(t)
	conf, err := filepath.Abs(filepath.Join("..", "..", "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	ns := kit.NewProc(t, logs, "nats-server", filepath.Join(bin, "nats-server"), passwords.ServerEnv("provchaos", t.TempDir()),
		"-c", conf, "-a", "127.0.0.1", "-p", strconv.Itoa(natsPort), "-m", strconv.Itoa(httpPort))
	ns.Start(t)
	ns.WaitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/healthz?js-enabled-only=true", httpPort), 20*time.Second)
	env := func(user string) []string {
		return []string{
			"NATS_URL=" + passwords.URL(natsPort, user), "BEAMLINE_AUTH_SECRET=" + secret,
			"BEAMLINE_REPLICATE_WEBHOOK_SECRET=" + replicatefake.DefaultWebhookSecret,
			"REPLICATE_API_TOKEN=" + replicatefake.DefaultToken,
		}
	}
	kinds := "video=cog,image=replicate:" + provModel
	var procs []*kit.Proc
	for i := range provProcessors {
		pp := kit.FreePort(t)
		p := kit.NewProc(t, logs, "processor-"+strconv.Itoa(i+1), filepath.Join(bin, "processor"), env("processor"),
			"-log-format", "json", "-addr", kit.Addr(pp), "-kinds", kinds,
			"-cog-url", strings.Join(cogURLs, ","), "-replicate-url", repURL,
			"-webhook-url", ingestURL, "-outputs-allow-private",
			"-concurrency", "16", "-max-per-user", "400", "-ack-wait", "3s", "-grace", "1s")
		p.Start(t)
		p.WaitHTTP(t, "http://"+kit.Addr(pp)+"/readyz", 30*time.Second)
		procs = append(procs, p)
	}
	ing := kit.NewProc(t, logs, "ingest", filepath.Join(bin, "ingest"), env("ingest"),
		"-log-format", "json", "-addr", kit.Addr(ip), "-kinds", "image,video")
	ing.Start(t)
	ing.WaitHTTP(t, ingestURL+"/readyz", 30*time.Second)
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range append([]*kit.Proc{ns, ing}, procs...) {
				t.Logf("---- %s log tail:\n%s", p.Name, p.Tail(3000))
			}
		}
	})

	token, err := auth.Issue([]byte(secret), "provchaos", false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 15 * time.Second}

	// Submit 200 Cog (video) and 200 Replicate (image) jobs, each running
	// 1–4 s at the provider, so the kills fall while predictions run.
	type job struct {
		id, tag, kind string
	}
	var (
		mu   sync.Mutex
		jobs []job
	)
	rnd := rand.New(rand.NewPCG(7, 13))
	durs := make([]int, 2*provJobsEach)
	for i := range durs {
		durs[i] = 1000 + rnd.IntN(3000)
	}
	var swg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		swg.Add(1)
		go func() {
			defer swg.Done()
			for i := range next {
				kind, tag := "video", "c-"+strconv.Itoa(i)
				if i%2 == 1 {
					kind, tag = "image", "r-"+strconv.Itoa(i)
				}
				body := map[string]any{"kind": kind, "input": map[string]any{"tag": tag, "duration_ms": durs[i]}}
				for attempt := 0; ctx.Err() == nil; attempt++ {
					sub, err := kit.Submit(ctx, hc, ingestURL, token, "provchaos-"+tag, body)
					if err == nil && sub.Status == http.StatusAccepted {
						mu.Lock()
						jobs = append(jobs, job{sub.Snapshot.ID, tag, kind})
						mu.Unlock()
						break
					}
					if err == nil && sub.Status != http.StatusTooManyRequests && sub.Status != http.StatusServiceUnavailable {
						t.Errorf("job %s: unexpected %d %s", tag, sub.Status, sub.Body)
						break
					}
					time.Sleep(time.Duration(50*(attempt+1)) * time.Millisecond)
				}
			}
		}()
	}
	go func() {
		for i := range 2 * provJobsEach {
			select {
			case next <- i:
			case <-ctx.Done():
			}
		}
		close(next)
	}()

	// Meanwhile, bad webhooks: none may be accepted.
	forged := forgeWebhooks(t, ctx, hc, ingestURL)

	// SIGKILL a processor three times while predictions run; restart it.
	crng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	for k := range provKills {
		select {
		case <-time.After(time.Duration(1500+crng.IntN(2500)) * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("deadline during chaos")
		}
		p := procs[(k+crng.IntN(2))%len(procs)]
		p.Signal(syscall.SIGKILL)
		t.Logf("SIGKILL %s (%s; cog in flight %d+%d)", p.Name, time.Since(start).Round(time.Millisecond),
			cogs[0].InFlight(), cogs[1].InFlight())
		p.Start(t)
	}
	swg.Wait()
	if len(jobs) != 2*provJobsEach {
		t.Fatalf("accepted %d of %d jobs", len(jobs), 2*provJobsEach)
	}

	// Every job ends succeeded.
	final := map[string]envelope.Snapshot{}
	kit.WaitFor(t, 3*time.Minute, "every job terminal", func() bool {
		for _, j := range jobs {
			if _, ok := final[j.id]; ok {
				continue
			}
			code, snap, err := kit.Get(ctx, hc, ingestURL, token, j.id)
			if err != nil || code != http.StatusOK || !snap.Status.Terminal() {
				return false
			}
			final[j.id] = snap
		}
		return true
	})

	cogStarts, repCreates, repExtra, badOutputs := 0, 0, 0, 0
	for _, j := range jobs {
		snap := final[j.id]
		if snap.Status != envelope.StatusSucceeded {
			t.Errorf("job %s (%s) ended %s: %s", j.id, j.tag, snap.Status, snap.Error)
			continue
		}
		switch j.kind {
		case "video":
			n := 0
			for pred := 1; pred <= provKills+2; pred++ {
				id := provider.CogPredictionID(j.id, pred)
				n += cogs[0].Started(id) + cogs[1].Started(id)
			}
			cogStarts += n
			if n != 1 {
				t.Errorf("job %s: %d Cog predictions, want exactly 1", j.id, n)
			}
		case "image":
			n := rep.Created(j.tag)
			repCreates += n
			repExtra += n - 1
			if n < 1 || n > 1+provKills {
				t.Errorf("job %s: %d Replicate predictions, want 1..%d", j.id, n, 1+provKills)
			}
		}
		if !outputMatches(t, ctx, hc, ingestURL, token, j.id, snap.Result, outputBytes(j.tag)) {
			badOutputs++
		}
	}
	if repExtra > provKills*16 {
		t.Errorf("%d extra Replicate predictions for %d kills", repExtra, provKills)
	}
	if badOutputs > 0 {
		t.Errorf("%d jobs' outputs differ from what the fake produced", badOutputs)
	}
	if n := forged.Load(); n > 0 {
		t.Errorf("%d forged webhooks were accepted", n)
	}
	kit.Figures(t, fmt.Sprintf("providers chaos: jobs=%d kills=%d cog_predictions=%d replicate_predictions=%d "+
		"replicate_extra=%d bad_outputs=%d forged_accepted=%d elapsed=%s",
		len(jobs), provKills, cogStarts, repCreates, repExtra, badOutputs, forged.Load(), time.Since(start).Round(time.Second)))
}

// outputMatches downloads the single output the result names through
// ingest and compares it with want.
func outputMatches(t *testing.T, ctx context.Context, hc *http.Client, base, token, id string, result json.RawMessage, want []byte) bool {
	t.Helper()
	var out struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(result, &out); err != nil || out.URL == "" {
		t.Errorf("job %s: result names no stored output: %s", id, result)
		return false
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+out.URL, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Errorf("job %s: output: %v", id, err)
		return false
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, want) {
		t.Errorf("job %s: output %s answered %d with %d bytes, want %d bytes as produced", id, out.URL, resp.StatusCode, len(got), len(want))
		return false
	}
	return true
}

// forgeWebhooks sends, while the run goes on, webhooks that must be refused:
// a Replicate delivery with a wrong signature, one with a timestamp ten
// minutes old, and a Cog delivery with a wrong token. It counts the ones
// answered 2xx.
func forgeWebhooks(t *testing.T, ctx context.Context, hc *http.Client, base string) *atomic.Int64 {
	t.Helper()
	var accepted atomic.Int64
	body := []byte(`{"id":"forged","status":"succeeded","output":"https://evil.example/x.png"}`)
	send := func(url string, hdr map[string]string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return
		}
		_ = resp.Body.Close()
		if resp.StatusCode < 300 {
			accepted.Add(1)
			t.Errorf("forged webhook to %s accepted with %d", url, resp.StatusCode)
		}
	}
	now := strconv.FormatInt(time.Now().Unix(), 10)
	old := strconv.FormatInt(time.Now().Add(-10*time.Minute).Unix(), 10)
	send(base+"/v1/webhooks/replicate", map[string]string{
		"webhook-id": "msg_forged1", "webhook-timestamp": now, "webhook-signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	})
	// Signed with the right secret, but ten minutes old: a replay.
	send(base+"/v1/webhooks/replicate", map[string]string{
		"webhook-id": "msg_forged2", "webhook-timestamp": old,
		"webhook-signature": signWebhook(t, replicatefake.DefaultWebhookSecret, "msg_forged2", old, body),
	})
	send(base+"/v1/webhooks/cog/forgedjob/1?token=00000000000000000000000000000000", nil)
	return &accepted
}

// signWebhook signs a delivery as Standard Webhooks (and Replicate) do:
// v1,base64(HMAC-SHA256(key, id.timestamp.body)) with the key from the
// whsec_ secret.
func signWebhook(t *testing.T, secret, id, ts string, body []byte) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}
