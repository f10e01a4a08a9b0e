package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/processor"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/provider/replicatefake"
)

// "beambench providers-processor" is the processor the providers scenario
// measures, run as a process of its own: its RSS and Go heap are the
// processor's alone — not the embedded nats-server's, the fake's or
// beambench's. It runs the same processor.New as cmd/processor, with the
// Replicate provider configured as the scenario needs (polls every 10
// minutes, the job id in the prediction's input for the fake), on the
// devstack's NATS, and answers the lines its parent writes on stdin:
//
//	detached         → {"detached": <runs detached>}
//	measure <name>   → a procMem after GCs; with -profile, heap and
//	                   goroutine profiles <dir>/<name>.*.pprof
//	stop             → exits as a SIGKILL would (its connection closed first)

// envProcWebhookKey passes the Cog/Replicate webhook key to the child (never
// a flag, as the push children's token), hex-encoded.
const envProcWebhookKey = "BEAMBENCH_WEBHOOK_KEY"

// procMem is one measurement of the child processor.
type procMem struct {
	// RSS is the resident set when the line was read, before any GC;
	// RSSSettled after GCs and debug.FreeOSMemory (free pages returned).
	RSS        uint64 `json:"rss"`
	RSSSettled uint64 `json:"rss_settled"`
	Heap       uint64 `json:"heap_inuse"`
	Stack      uint64 `json:"stack_inuse"`
	Goroutines int    `json:"goroutines"`
	Detached   int    `json:"detached"`
	Err        string `json:"err,omitempty"`
}

func runProvidersProcessor(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("beambench providers-processor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats", "", "NATS URL")
	fakeURL := fs.String("fake", "", "Replicate fake base URL")
	webhookURL := fs.String("webhook-url", "", "ingest base URL (webhooks); empty: polls only")
	kind := fs.String("kind", providersKind, "job kind served")
	inflight := fs.Int("inflight", 10000, "-provider-inflight")
	profile := fs.String("profile", "", "folder for heap and goroutine profiles")
	limit := fs.Duration("max-life", 30*time.Minute, "exit after this long whatever happens")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *natsURL == "" || *fakeURL == "" {
		return errors.New("providers-processor needs -nats and -fake")
	}
	if *profile != "" {
		runtime.MemProfileRate = 512
	}
	ctx, cancel := context.WithTimeout(ctx, *limit)
	defer cancel()

	rcfg := provider.ReplicateConfig{
		URL: *fakeURL, Token: replicatefake.DefaultToken, Model: "bench/held",
		PollMin: 10 * time.Minute, PollMax: 10 * time.Minute, Quiet: 10 * time.Minute,
		ExtraInput: func(req provider.Request) map[string]any {
			return map[string]any{replicatefake.InputJob: req.Job.ID}
		},
	}
	pcfg := processor.Config{Concurrency: 32, MaxPerUser: 4, ProviderInflight: *inflight}
	if *webhookURL != "" {
		key, err := hex.DecodeString(os.Getenv(envProcWebhookKey))
		if err != nil {
			return fmt.Errorf("$%s: %w", envProcWebhookKey, err)
		}
		hooks, err := processor.NewWebhooks(*webhookURL, key)
		if err != nil {
			return err
		}
		rcfg.Webhooks, pcfg.Webhooks = hooks, hooks
	}
	prov, err := provider.NewReplicate(rcfg)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(*natsURL, nats.Name("beambench-providers-processor"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	pcfg.Addr = "127.0.0.1:0"
	pcfg.Kinds = []config.Kind{{Name: *kind, Provider: prov.Name()}}
	pcfg.Providers = map[string]provider.Provider{prov.Name(): prov}
	pcfg.DefaultProvider = prov.Name()
	pcfg.PollWait = 200 * time.Millisecond
	reg := prometheus.NewRegistry()
	p, err := processor.New(pcfg, nc, js, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError})), reg)
	if err != nil {
		return err
	}
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()

	enc := json.NewEncoder(stdout)
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		var m procMem
		m.Detached = int(gathered(reg, "beamline_processor_detached"))
		switch cmd {
		case "detached":
		case "measure":
			m.RSS = rssOf("self")
			for range 6 {
				runtime.GC()
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			m.Heap, m.Stack, m.Goroutines = ms.HeapInuse, ms.StackInuse, runtime.NumGoroutine()
			debug.FreeOSMemory()
			m.RSSSettled = rssOf("self")
			if *profile != "" {
				if err := writeProfiles(*profile, arg); err != nil {
					m.Err = err.Error()
				}
			}
		case "stop":
			nc.Close() // as a SIGKILL would: no hand-back writes
			stop()
			<-done
			return nil
		default:
			m.Err = "unknown command " + strconv.Quote(cmd)
		}
		if err := enc.Encode(m); err != nil {
			return err
		}
	}
	nc.Close()
	stop()
	<-done
	return nil
}

// procChild is a providers-processor child and its pipes.
type procChild struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func startProcChild(t *target, fakeURL string, n int, o *options) (*procChild, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"providers-processor", "-nats", t.natsURL, "-fake", fakeURL,
		"-inflight", strconv.Itoa(n), "-webhook-url", t.ingestURL}
	if o.provProfile != "" {
		args = append(args, "-profile", o.provProfile)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), envProcWebhookKey+"="+hex.EncodeToString(provider.DeriveWebhookKey(t.secret)))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &procChild{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}, nil
}

// ask writes one command line and reads the child's answer.
func (c *procChild) ask(ctx context.Context, line string) (procMem, error) {
	var m procMem
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		return m, err
	}
	b, err := readLine(ctx, c.out, 2*time.Minute)
	if err != nil {
		return m, fmt.Errorf("providers-processor child: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, err
	}
	if m.Err != "" {
		return m, errors.New(m.Err)
	}
	return m, nil
}

func (c *procChild) stop() {
	_, _ = io.WriteString(c.stdin, "stop\n")
	c.stdin.Close()
	waitOrKill(c.cmd, 15*time.Second)
}
