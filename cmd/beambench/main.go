// Command beambench measures Beamline against raw NATS in the same run:
// ingest submissions against raw JetStream publishes, batches, scheduled jobs
// and job lists (jobctl) against raw JetStream, processing against raw
// consume+ack, WebSocket push latency against a raw core-NATS subscriber,
// notifier memory per connection, push against 2-second polling, and
// presence across two notifiers (a join/leave storm in one studio room).
//
// Each figure is printed as a JSON line
// {"scenario","figure","value","unit","baseline","ratio","params"} and all of
// them again as a Markdown table at the end. By default it starts devstack
// in-process (temporary folder, file storage); -ingest, -notifier and -nats
// point it at running binaries instead (token secret from
// $BEAMLINE_AUTH_SECRET). -short runs every scenario small enough for CI and
// fails unless each produced figures.
//
// "beambench push-clients" is the child process the push scenario spawns to
// hold thousands of WebSocket connections outside its own file limit;
// "beambench providers-processor" the processor whose memory the providers
// scenario measures, in a process of its own.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "beambench:", err)
		os.Exit(1)
	}
}

// scenarios in the order they run.
var scenarios = []string{"ingest", "pipeline", "push", "polling", "providers", "jobctl", "presence"}

// options are the sizes of every scenario; shortOptions and fullOptions
// are the two presets, flags override single values.
type options struct {
	short, verbose                  bool
	scenarios                       []string
	ingestURL, notifierURL, natsURL string
	procConcurrency                 int
	cpuProfile, pprofAddr           string
	memProfile                      string // allocation profile written at the end
	notifierBin                     string // run the notifier as a separate process (push memory)
	notifierProfile                 string // folder for the separate notifier's heap and CPU profiles
	clientProcs, connsPerProc       int

	ingestConc     []int
	ingestDur      time.Duration
	ingestClient   string
	ingestNoRaw    bool // ingest: HTTP submissions only (a profile of them alone)
	pipeJobs       int
	pipeFloor      bool
	pipeRaw        bool
	ingestFloor    bool
	pipeRate       int
	pipeDur        time.Duration
	pushClients    int // connected (memory figure)
	pushLatClients int // receiving events (latency figure)
	pushRate       int
	pushDur        time.Duration
	pushClient     string
	pollJobs       int
	pollDur        time.Duration
	pollInterval   time.Duration
	provWaiting    int           // providers: predictions awaited at once
	provOutputMB   int           // providers: size of the output served with Range
	provRangeReqs  int           // providers: Range requests per measurement
	provProfile    string        // providers: folder for heap and goroutine profiles while the waits are held
	provPushJobs   int           // providers: webhooks timed to the browser's push, one at a time
	deadline       time.Duration // whole run

	jcBatchSizes []int // jobctl: POST /v1/jobs/batch sizes
	jcBatchJobs  int   // jobctl: jobs per batch size
	jcSchedJobs  int   // jobctl: scheduled jobs due within one second
	jcListJobs   int   // jobctl: the listed user's jobs
	jcListReqs   int   // jobctl: GET /v1/jobs requests
	jcListBundle int   // jobctl: the listed user's jobs per index entry (1: single entries; a batch bundles up to 100)

	presMembers int    // presence: members of the room, half on each notifier
	presChanges int    // presence: joins and leaves of the storm
	presRate    int    // presence: changes per second
	presChurn   int    // presence: connections making the changes
	presClient  string // presence: the members' WebSocket client, lean or std
}

func fullOptions() options {
	return options{
		procConcurrency: 64, connsPerProc: 5000,
		ingestConc: []int{1, 16, 64}, ingestDur: 5 * time.Second, ingestClient: "lean",
		pipeJobs: 50000, pipeRate: 200, pipeDur: 10 * time.Second,
		pushClients: 15000, pushLatClients: 5000, pushRate: 2000, pushDur: 10 * time.Second,
		pollJobs: 50, pollDur: 60 * time.Second, pollInterval: 2 * time.Second,
		provWaiting: 10000, provOutputMB: 20, provRangeReqs: 40, provPushJobs: 200,
		jcBatchSizes: []int{100, 1000}, jcBatchJobs: 60000, jcSchedJobs: 10000, jcListJobs: 100000, jcListReqs: 300, jcListBundle: 1,
		presMembers: 1000, presChanges: 1000, presRate: 100, presChurn: 20, presClient: "lean", pushClient: "lean",
		deadline: 20 * time.Minute,
	}
}

func shortOptions() options {
	return options{
		short: true, procConcurrency: 32, connsPerProc: 5000,
		ingestConc: []int{1, 8}, ingestDur: 700 * time.Millisecond, ingestClient: "lean",
		pipeJobs: 500, pipeRate: 100, pipeDur: 1500 * time.Millisecond,
		pushClients: 100, pushLatClients: 50, pushRate: 200, pushDur: 1500 * time.Millisecond,
		pollJobs: 5, pollDur: 5 * time.Second, pollInterval: 2 * time.Second,
		provWaiting: 200, provOutputMB: 2, provRangeReqs: 8, provPushJobs: 10,
		jcBatchSizes: []int{100, 1000}, jcBatchJobs: 1000, jcSchedJobs: 200, jcListJobs: 2000, jcListReqs: 15, jcListBundle: 1,
		presMembers: 100, presChanges: 100, presRate: 100, presChurn: 10, presClient: "lean", pushClient: "lean",
		deadline: 60 * time.Second,
	}
}

func parse(args []string, stderr io.Writer) (options, error) {
	short := false
	for _, a := range args {
		if a == "-short" || a == "--short" || a == "-short=true" {
			short = true
		}
	}
	o := fullOptions()
	if short {
		o = shortOptions()
	}
	fs := flag.NewFlagSet("beambench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.short, "short", o.short, "run every scenario small enough for CI; fail unless each produced figures")
	fs.BoolVar(&o.verbose, "v", false, "log the services' output")
	list := fs.String("scenarios", strings.Join(scenarios, ","), "comma-separated scenarios to run: "+strings.Join(scenarios, ", "))
	fs.StringVar(&o.ingestURL, "ingest", "", "ingest base URL of running binaries (default: start devstack in-process)")
	fs.StringVar(&o.notifierURL, "notifier", "", "notifier base URL of running binaries")
	fs.StringVar(&o.natsURL, "nats", "", "NATS URL of running binaries")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (and in-process devstack) to `file`")
	fs.StringVar(&o.memProfile, "memprofile", "", "write the allocation profile of this process (and in-process devstack) at the end of the run to `file` (go tool pprof -sample_index=alloc_space)")
	fs.StringVar(&o.pprofAddr, "pprof", "", "serve net/http/pprof of this process (and in-process devstack) on `addr`, e.g. 127.0.0.1:6060")
	fs.StringVar(&o.notifierBin, "notifier-bin", "", "path of a built cmd/notifier: push runs it as a separate process on devstack's NATS and reads its RSS and Go heap")
	fs.StringVar(&o.notifierProfile, "notifier-profile", "", "with -notifier-bin: push writes the notifier process's heap and goroutine profiles (idle clients) and CPU profile (latency run) into `dir`; presence writes each notifier's CPU profile over the storm (presence-cpu-0/1.pb.gz)")
	fs.IntVar(&o.clientProcs, "client-procs", 0, "push: child processes holding the WebSocket clients (0: in this process when ≤ 2,000 clients, else ⌈clients/conns-per-proc⌉)")
	fs.IntVar(&o.connsPerProc, "conns-per-proc", o.connsPerProc, "push: most WebSocket connections per child process")
	fs.IntVar(&o.procConcurrency, "proc-concurrency", o.procConcurrency, "in-process processor concurrency (also its MaxPerUser)")
	fs.IntVar(&o.pipeJobs, "pipeline-jobs", o.pipeJobs, "pipeline: no-op jobs published beforehand")
	fs.BoolVar(&o.pipeRaw, "pipeline-raw", true, "pipeline: also measure the raw consume+ack baseline (false: the processor's rate alone, e.g. for a CPU profile of its consume only; implies -pipeline-floor=false)")
	fs.BoolVar(&o.pipeFloor, "pipeline-floor", true, "pipeline: also measure the write floors (a consumer like the processor's whose workers make 2, then 3, awaited durable compare-and-set writes per message before the ack, nothing else)")
	fs.IntVar(&o.pipeRate, "pipeline-rate", o.pipeRate, "pipeline: HTTP submissions per second for the latency run")
	fs.DurationVar(&o.pipeDur, "pipeline-duration", o.pipeDur, "pipeline: length of the latency run")
	fs.IntVar(&o.pushClients, "push-clients", o.pushClients, "push: idle WebSocket clients connected (memory figure)")
	fs.IntVar(&o.pushLatClients, "push-latency-clients", o.pushLatClients, "push: clients receiving events (latency figure)")
	fs.IntVar(&o.pushRate, "push-rate", o.pushRate, "push: events per second")
	fs.DurationVar(&o.pushDur, "push-duration", o.pushDur, "push: length of the latency run")
	fs.IntVar(&o.pollJobs, "polling-jobs", o.pollJobs, "polling: jobs watched")
	fs.DurationVar(&o.pollDur, "polling-duration", o.pollDur, "polling: how long they are watched")
	fs.IntVar(&o.provWaiting, "providers-waiting", o.provWaiting, "providers: jobs awaiting held predictions at once on one processor (0: skip that half)")
	fs.IntVar(&o.provOutputMB, "providers-output-mb", o.provOutputMB, "providers: MiB of the output served with Range (0: skip that half)")
	fs.IntVar(&o.provPushJobs, "providers-push", o.provPushJobs, "providers: webhooks timed from the provider to the browser's push, one at a time (0: skip)")
	fs.IntVar(&o.provRangeReqs, "providers-range-requests", o.provRangeReqs, "providers: Range requests (4 MiB windows) per measurement")
	fs.StringVar(&o.provProfile, "providers-profile", "", "providers: write the measured processor process's heap and goroutine profiles (idle, and while the waits are held) into `dir`")
	fs.IntVar(&o.jcBatchJobs, "jobctl-batch-jobs", o.jcBatchJobs, "jobctl: jobs submitted per batch size (batches of 100 and 1,000)")
	fs.IntVar(&o.jcSchedJobs, "jobctl-scheduled", o.jcSchedJobs, "jobctl: scheduled jobs due within the same second")
	fs.IntVar(&o.jcListJobs, "jobctl-list-jobs", o.jcListJobs, "jobctl: jobs of the user whose list is read")
	fs.IntVar(&o.jcListReqs, "jobctl-list-requests", o.jcListReqs, "jobctl: GET /v1/jobs requests measured")
	fs.IntVar(&o.jcListBundle, "jobctl-list-bundle", o.jcListBundle, "jobctl: the listed user's jobs per JOBINDEX entry, 1 (single entries, as single submissions write them) to 100 (bundles, as a batch writes them)")
	fs.IntVar(&o.presMembers, "presence-members", o.presMembers, "presence: members of the one studio room, half on each of two notifiers")
	fs.IntVar(&o.presChanges, "presence-changes", o.presChanges, "presence: joins and leaves of the storm")
	fs.IntVar(&o.presRate, "presence-rate", o.presRate, "presence: changes per second")
	fs.IntVar(&o.presChurn, "presence-churn", o.presChurn, "presence: connections making the changes (alternately joining and leaving)")
	fs.StringVar(&o.pushClient, "push-client", o.pushClient, "push: the WebSocket clients: lean (read the frames themselves, find a job push's updated_at by a byte search, skip every other frame) or std (phoenixtest, gorilla/websocket, every frame decoded)")
	fs.StringVar(&o.presClient, "presence-client", o.presClient, "presence: the members' WebSocket client: lean (reads the frames itself, finds a presence_diff's changes by a byte search, skips every other frame without copying it) or std (phoenixtest, gorilla/websocket, every frame decoded)")
	fs.DurationVar(&o.ingestDur, "ingest-duration", o.ingestDur, "ingest: length of each concurrency level")
	fs.StringVar(&o.ingestClient, "ingest-client", o.ingestClient, "ingest: HTTP load generator: lean (one keep-alive connection per worker writing a prebuilt request and parsing the answer with net/http.ReadResponse, as wrk does) or std (net/http.Client)")
	fs.BoolVar(&o.ingestFloor, "ingest-floor", true, "ingest: also measure the write floor (the job and its index entry published and awaited one after the other, no HTTP) at each concurrency")
	fs.BoolVar(&o.ingestNoRaw, "ingest-no-raw", false, "ingest: skip the raw-publish baseline (no baseline nor ratio then), e.g. for a -cpuprofile or -memprofile of the HTTP submissions alone")
	conc := fs.String("ingest-concurrency", "", "ingest: comma-separated concurrency levels (default 1,16,64; -short 1,8)")
	fs.DurationVar(&o.deadline, "deadline", o.deadline, "bound on the whole run")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: beambench [flags]\n       beambench push-clients [flags]   (child process of the push scenario)\n       beambench providers-processor [flags]   (child process of the providers scenario)\n\nMeasures Beamline against raw NATS in the same run; prints JSON lines and a Markdown table.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.ingestClient != "lean" && o.ingestClient != "std" {
		return o, fmt.Errorf("-ingest-client: %q is neither lean nor std", o.ingestClient)
	}
	if o.pushClient != "lean" && o.pushClient != "std" {
		return o, fmt.Errorf("-push-client: %q is neither lean nor std", o.pushClient)
	}
	if o.presClient != "lean" && o.presClient != "std" {
		return o, fmt.Errorf("-presence-client: %q is neither lean nor std", o.presClient)
	}
	if *conc != "" {
		o.ingestConc = nil
		for _, c := range strings.Split(*conc, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(c))
			if err != nil || n <= 0 {
				return o, fmt.Errorf("-ingest-concurrency: bad level %q", c)
			}
			o.ingestConc = append(o.ingestConc, n)
		}
	}
	o.scenarios = nil
	for _, s := range strings.Split(*list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		known := false
		for _, k := range scenarios {
			known = known || k == s
		}
		if !known {
			return o, fmt.Errorf("unknown scenario %q", s)
		}
		o.scenarios = append(o.scenarios, s)
	}
	if o.pushLatClients > o.pushClients {
		o.pushLatClients = o.pushClients
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "push-clients" {
		return runPushClients(ctx, args[1:], os.Stdin, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "providers-processor" {
		return runProvidersProcessor(ctx, args[1:], os.Stdin, stdout, stderr)
	}
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	if o.provProfile != "" {
		// Small allocations per waiting job show in the heap profile
		// only when sampled finely; set before anything allocates much.
		runtime.MemProfileRate = 512
	}
	return bench(ctx, &o, stdout, stderr)
}

// writeAllocs writes the allocation profile (every allocation since the
// start, sampled) to path.
func writeAllocs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// bench runs the chosen scenarios against a target and prints the table.
func bench(ctx context.Context, o *options, stdout, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	raiseFileLimit(log)
	ctx, cancel := context.WithTimeout(ctx, o.deadline)
	defer cancel()
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if o.memProfile != "" {
		defer func() {
			if err := writeAllocs(o.memProfile); err != nil {
				log.Warn("memprofile", "err", err)
			}
		}()
	}
	if o.pprofAddr != "" {
		runtime.SetMutexProfileFraction(100)
		runtime.SetBlockProfileRate(100000) // one sample per 100 µs blocked
		srv := &http.Server{Addr: o.pprofAddr, Handler: http.DefaultServeMux, ReadHeaderTimeout: 5 * time.Second}
		go srv.ListenAndServe()
		defer srv.Close()
	}
	t, err := startTarget(ctx, o, log)
	if err != nil {
		return fmt.Errorf("start target: %w", err)
	}
	defer t.close()
	rep := &reporter{w: stdout}
	var failed []string
	for _, s := range o.scenarios {
		start := time.Now()
		log.Info("scenario", "name", s)
		var err error
		switch s {
		case "ingest":
			err = runIngest(ctx, t, o, rep)
		case "pipeline":
			err = runPipeline(ctx, t, o, rep)
		case "push":
			err = runPush(ctx, t, o, rep)
		case "polling":
			err = runPolling(ctx, t, o, rep)
		case "providers":
			err = runProviders(ctx, t, o, rep)
		case "jobctl":
			err = runJobctl(ctx, t, o, rep)
		case "presence":
			err = runPresence(ctx, t, o, rep)
		}
		n := rep.count(s)
		log.Info("scenario done", "name", s, "figures", n, "took", time.Since(start).Round(time.Millisecond), "err", err)
		if err != nil || n == 0 {
			failed = append(failed, fmt.Sprintf("%s (figures %d, err %v)", s, n, err))
		}
		if ctx.Err() != nil {
			break
		}
	}
	fmt.Fprintln(stdout)
	rep.table(stdout)
	if len(failed) > 0 {
		return fmt.Errorf("scenarios failed: %s", strings.Join(failed, "; "))
	}
	return nil
}

// raiseFileLimit lifts the soft RLIMIT_NOFILE to the hard limit.
func raiseFileLimit(log *slog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil && log != nil {
			log.Warn("raise RLIMIT_NOFILE", "err", err)
		}
	}
}
