package processor

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

// eventLog records the events of all jobs in the order they were published.
type eventLog struct {
	mu  sync.Mutex
	evs []envelope.Snapshot
	typ []envelope.Type
}

func (e *env) recordEvents() *eventLog {
	e.t.Helper()
	l := &eventLog{}
	sub, err := e.nc.Subscribe("events.>", func(m *nats.Msg) {
		ev, snap, err := envelope.DecodeEvent(m.Data)
		if err != nil {
			return
		}
		l.mu.Lock()
		l.evs = append(l.evs, snap)
		l.typ = append(l.typ, ev.Type)
		l.mu.Unlock()
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return l
}

// starts returns the job ids in the order they (first) started.
func (l *eventLog) starts() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	seen := map[string]bool{}
	for i, s := range l.evs {
		if l.typ[i] == envelope.TypeStarted && !seen[s.ID] {
			seen[s.ID] = true
			out = append(out, s.ID)
		}
	}
	return out
}

func TestHighJobOvertakesLowBacklogAndLowKeepsFlowing(t *testing.T) {
	e := newEnv(t)
	log := e.recordEvents()
	var lows []envelope.Job
	isLow := map[string]bool{}
	for i := range 40 {
		j := newJob("u"+string(rune('a'+i%20)), "image", envelope.PriorityLow, map[string]any{"duration_ms": 20})
		lows = append(lows, j)
		isLow[j.ID] = true
		e.submit(j)
	}
	cfg := baseConfig(t)
	cfg.Concurrency = 1
	cfg.Prefetch = 1
	e.start(cfg)
	testutil.WaitFor(t, 10*time.Second, func() bool { return len(log.starts()) >= 3 })
	high := newJob("vip", "image", envelope.PriorityHigh, map[string]any{"duration_ms": 20})
	e.submit(high)
	e.waitStatus(high.ID, envelope.StatusSucceeded, 10*time.Second)
	starts := log.starts()
	pos := strings.Index(" "+strings.Join(starts, " ")+" ", " "+high.ID+" ")
	before := strings.Count((" " + strings.Join(starts, " "))[:pos], " ")
	if before > 8 {
		t.Fatalf("high job started after %d low jobs of the backlog of 40", before)
	}

	// A flood of high jobs does not starve low: low keeps being picked.
	started := len(log.starts())
	var highs []envelope.Job
	for i := range 30 {
		j := newJob("h"+string(rune('a'+i%20)), "image", envelope.PriorityHigh, map[string]any{"duration_ms": 20})
		highs = append(highs, j)
		e.submit(j)
	}
	for _, j := range highs {
		e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	}
	lowDuring := 0
	for _, id := range log.starts()[started:] {
		if isLow[id] {
			lowDuring++
		}
	}
	if lowDuring < 2 {
		t.Fatalf("only %d low jobs started while 30 high jobs ran", lowDuring)
	}
	for _, j := range lows {
		e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	}
}

func TestOneUsersBulkDoesNotDelayAnother(t *testing.T) {
	e := newEnv(t)
	log := e.recordEvents()
	cfg := baseConfig(t)
	cfg.Concurrency = 8
	cfg.MaxPerUser = 4
	cfg.MaxDeliver = 50
	e.start(cfg)
	var bulk, few []envelope.Job
	for range 100 {
		j := newJob("bulk", "image", envelope.PriorityNormal, map[string]any{"duration_ms": 30})
		bulk = append(bulk, j)
		e.submit(j)
	}
	for range 5 {
		j := newJob("few", "image", envelope.PriorityNormal, map[string]any{"duration_ms": 30})
		few = append(few, j)
		e.submit(j)
	}
	for _, j := range few {
		e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	}
	bulkDone := 0
	for _, j := range bulk {
		if e.snapshot(j.ID).Status == envelope.StatusSucceeded {
			bulkDone++
		}
	}
	if bulkDone > 50 {
		t.Fatalf("the other user's 5 jobs finished only after %d of the bulk user's 100", bulkDone)
	}
	for _, j := range bulk {
		e.waitStatus(j.ID, envelope.StatusSucceeded, 60*time.Second)
	}
	// Never more than MaxPerUser of one user running at once.
	log.mu.Lock()
	defer log.mu.Unlock()
	running := map[string]map[string]bool{}
	for i, s := range log.evs {
		if running[s.User] == nil {
			running[s.User] = map[string]bool{}
		}
		switch log.typ[i] {
		case envelope.TypeStarted:
			running[s.User][s.ID] = true
		case envelope.TypeSucceeded, envelope.TypeRetrying, envelope.TypeFailed, envelope.TypeDead:
			delete(running[s.User], s.ID)
		}
		if len(running[s.User]) > cfg.MaxPerUser {
			t.Fatalf("user %s had %d jobs running at once", s.User, len(running[s.User]))
		}
	}
}
