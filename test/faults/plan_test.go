package faults

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"
)

// The schedule is drawn from the seed before anything runs, so a seed names
// one schedule: the same jobs (users, priorities, sim outcomes, cancel
// moments) and the same faults at the same offsets. What it cannot fix is
// the interleaving of real processes, so a failing seed reproduces the
// conditions, and usually the failure, not every byte.

// Job outcomes, as asked of the sim provider through input.sim.
const (
	outOK        = "ok"        // succeeds after a short duration
	outLong      = "long"      // succeeds after 1–4 s with progress steps
	outTransient = "transient" // fail_times 1–2, then succeeds
	outPanic     = "panic"     // panic_times 1, then succeeds
	outHang      = "hang"      // hang_times 1 (until -job-timeout), then succeeds
	outTerminal  = "terminal"  // fail "terminal": ends failed
	outDies      = "dies"      // fails more often than -max-deliver allows: ends dead, in DLQ
)

// Fault kinds.
const (
	faultProcKill     = "processor_kill"    // SIGKILL one processor, start it again after a pause
	faultNotifier     = "notifier_restart"  // SIGKILL the notifier, start it again
	faultEventsOutage = "events_outage"     // EVENTS max_msg_size 1 (refuses every event), then restored
	faultKVOutage     = "kv_outage"         // KV_job_status max_msg_size 1 (refuses every write), then restored
	faultNATSRestart  = "nats_restart"      // SIGTERM nats-server, start it again (same store, same port)
	faultNATSKill     = "nats_kill"         // SIGKILL nats-server, start it again
	faultClientDrop   = "client_disconnect" // a WebSocket client closes its connection and resumes
)

var users = []string{"fu1", "fu2", "fu3"}

// jobPlan is one submission of the schedule.
type jobPlan struct {
	N        int
	At       time.Duration // offset of the POST from the start of the schedule
	User     string
	Kind     string
	Priority string
	Outcome  string
	Sim      map[string]any
	// CancelAfter, when >= 0, is how long after the 202 a DELETE is sent
	// (0: at once, on the same connection).
	CancelAfter time.Duration
	// Watch: a job: client joins the job's topic WatchAfter after the 202,
	// with last_seq 0 (WatchFresh false) or without (true: it starts from
	// the join reply's snapshot).
	Watch      bool
	WatchAfter time.Duration
	WatchFresh bool
}

// faultPlan is one fault of the schedule.
type faultPlan struct {
	At     time.Duration
	Kind   string
	Target int           // which processor, or which WebSocket client
	For    time.Duration // outage length, or downtime before the restart
}

func (f faultPlan) String() string {
	return fmt.Sprintf("%s %s target=%d for=%s", f.At.Round(time.Millisecond), f.Kind, f.Target, f.For.Round(time.Millisecond))
}

type schedule struct {
	Seed   uint64
	Jobs   []jobPlan
	Faults []faultPlan
}

// Knobs of the processors that the plan relies on.
const (
	maxDeliver = 4
	jobTimeout = 6 * time.Second // ends a hang; longer than the longest sim duration
	processors = 2
	jobsPerSec = 6
)

// makeSchedule draws the schedule of d from seed.
func makeSchedule(seed uint64, d time.Duration, clients int) schedule {
	rnd := rand.New(rand.NewPCG(seed, 0x6661756c7473)) // "faults"
	s := schedule{Seed: seed}
	for at, n := time.Duration(0), 0; ; n++ {
		at += time.Duration(rnd.ExpFloat64() * float64(time.Second) / jobsPerSec)
		if at >= d {
			break
		}
		s.Jobs = append(s.Jobs, drawJob(rnd, n, at))
	}
	// Each fault kind has its own timeline (so faults of different kinds
	// overlap); gaps and lengths are in milliseconds.
	for _, k := range []struct {
		kind           string
		gapMin, gapMax int
		lenMin, lenMax int
		targets        int
	}{
		{faultProcKill, 2000, 9000, 0, 2000, processors},
		{faultNotifier, 12000, 30000, 0, 1000, 1},
		{faultEventsOutage, 8000, 25000, 500, 6000, 1},
		{faultKVOutage, 8000, 25000, 500, 4000, 1},
		{faultNATSRestart, 20000, 45000, 0, 1000, 1},
		{faultNATSKill, 25000, 60000, 0, 1000, 1},
		{faultClientDrop, 3000, 10000, 0, 500, clients},
	} {
		at := time.Duration(0)
		for {
			at += time.Duration(k.gapMin+rnd.IntN(k.gapMax-k.gapMin+1)) * time.Millisecond
			if at >= d {
				break
			}
			f := faultPlan{At: at, Kind: k.kind, Target: rnd.IntN(k.targets),
				For: time.Duration(k.lenMin+rnd.IntN(k.lenMax-k.lenMin+1)) * time.Millisecond}
			s.Faults = append(s.Faults, f)
			at += f.For
		}
	}
	sort.SliceStable(s.Faults, func(i, j int) bool { return s.Faults[i].At < s.Faults[j].At })
	return s
}

func drawJob(rnd *rand.Rand, n int, at time.Duration) jobPlan {
	j := jobPlan{N: n, At: at, User: users[rnd.IntN(len(users))], CancelAfter: -1,
		Kind: []string{"image", "video"}[rnd.IntN(2)], Priority: []string{"high", "normal", "low"}[rnd.IntN(3)]}
	sim := map[string]any{"duration_ms": rnd.IntN(200)}
	// The mix keeps the provider's failure ratio below the breaker's 0.5
	// (the processors run its defaults), so the breaker opens only now and
	// then, as a fault of its own.
	switch p := rnd.IntN(100); {
	case p < 50:
		j.Outcome = outOK
		if rnd.IntN(4) == 0 {
			sim["steps"] = 1 + rnd.IntN(3)
		}
	case p < 60:
		j.Outcome = outLong
		sim["duration_ms"], sim["steps"] = 1000+rnd.IntN(3000), 2+rnd.IntN(3)
	case p < 75:
		j.Outcome = outTransient
		sim["fail_times"] = 1 + rnd.IntN(2)
	case p < 82:
		j.Outcome = outPanic
		sim["panic_times"] = 1
	case p < 87:
		j.Outcome = outHang
		sim["hang_times"] = 1
	case p < 97:
		j.Outcome = outTerminal
		sim["fail"] = "terminal"
	default:
		j.Outcome = outDies
		sim["fail_times"] = maxDeliver + 2
	}
	j.Sim = sim
	if rnd.IntN(100) < 30 {
		switch rnd.IntN(3) {
		case 0:
			j.CancelAfter = 0
		case 1:
			j.CancelAfter = time.Duration(rnd.IntN(30)) * time.Millisecond
		default:
			j.CancelAfter = time.Duration(30+rnd.IntN(3000)) * time.Millisecond
		}
	}
	if rnd.IntN(100) < 20 {
		j.Watch = true
		j.WatchFresh = rnd.IntN(2) == 0
		if rnd.IntN(2) == 0 {
			j.WatchAfter = time.Duration(rnd.IntN(1500)) * time.Millisecond
		}
	}
	return j
}

// summary is a short description of the schedule for the log.
func (s schedule) summary() string {
	outcomes, faults := map[string]int{}, map[string]int{}
	cancels := 0
	for _, j := range s.Jobs {
		outcomes[j.Outcome]++
		if j.CancelAfter >= 0 {
			cancels++
		}
	}
	for _, f := range s.Faults {
		faults[f.Kind]++
	}
	return fmt.Sprintf("%d jobs %s, %d cancels, faults %s", len(s.Jobs), countList(outcomes), cancels, countList(faults))
}

func countList(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, ",")
}
