package notifier

import (
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestPresenceFigures measures presence on two notifiers (not a timed
// test: it only logs). Run with
//
//	BEAMLINE_FIGURES=1 go test -run TestPresenceFigures -v ./internal/notifier/
//
// MEMBERS (default 200) listen on one room, half on each notifier; CHANGES
// (default 100) join/leave changes are made at about 100 a second on
// notifier A; it logs the p50/p99 from a change to every member having
// its diff, the NATS messages per change, and the heap per presence.
// Each change waits for the last to reach every member, so diffs never
// merge here; the storm itself (changes overlapping, two notifier
// processes) is beambench's presence scenario (BENCHMARKS.md run Q).
func TestPresenceFigures(t *testing.T) {
	if os.Getenv("BEAMLINE_FIGURES") != "1" {
		t.Skip("set BEAMLINE_FIGURES=1 to measure")
	}
	members, changes := envInt("MEMBERS", 200), envInt("CHANGES", 100)
	w := newWorld(t)
	a := startNotifier(t, w, Config{SendQueue: 4096})
	b := startNotifier(t, w, Config{SendQueue: 4096})

	var mu sync.Mutex
	seen := map[string][]time.Time{} // "join:<key>" / "leave:<key>" → arrival per member
	var wg sync.WaitGroup
	done := make(chan struct{})
	for i := range members {
		n := a
		if i%2 == 1 {
			n = b
		}
		c := dial(t, n, roomToken(t, "m"+strconv.Itoa(i), "lab"))
		c.joinPresence("studio:lab", nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case f, ok := <-c.pc.Frames():
					if !ok {
						return
					}
					if f.Event != "presence_diff" {
						continue
					}
					now := time.Now()
					var d presDiffT
					if json.Unmarshal(f.Payload, &d) != nil {
						continue
					}
					mu.Lock()
					for k := range d.Joins {
						seen["join:"+k] = append(seen["join:"+k], now)
					}
					for k := range d.Leaves {
						seen["leave:"+k] = append(seen["leave:"+k], now)
					}
					mu.Unlock()
				case <-done:
					return
				}
			}
		}()
	}
	// Let every member's join reach every other member first.
	time.Sleep(2 * time.Second)
	v0, _ := w.srv.Varz(nil)
	churn := dial(t, a, roomToken(t, "churn", "*"))
	var lat []time.Duration
	var joinRef string
	tick := time.NewTicker(10 * time.Millisecond)
	for i := range changes {
		<-tick.C
		what, event := "join:churn", "phx_join"
		if i%2 == 1 {
			what, event = "leave:churn", "phx_leave"
		}
		mu.Lock()
		delete(seen, what)
		mu.Unlock()
		start := time.Now()
		ref := churn.nextRef()
		if event == "phx_join" {
			joinRef = ref
		}
		churn.send(&joinRef, ref, "studio:lab", event, map[string]any{})
		churn.reply(ref)
		waitAll(t, &mu, seen, what, members)
		mu.Lock()
		last := slices.MaxFunc(seen[what], func(a, b time.Time) int { return a.Compare(b) })
		mu.Unlock()
		lat = append(lat, last.Sub(start))
	}
	tick.Stop()
	v1, _ := w.srv.Varz(nil)
	close(done)
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
	t.Logf("%d members on 2 notifiers, %d changes: change → every member's diff p50 %v, p99 %v, max %v",
		members, changes, p(0.5), p(0.99), lat[len(lat)-1])
	t.Logf("NATS messages into the server per change: %.2f (diffs and the heartbeats of the run)", float64(v1.InMsgs-v0.InMsgs)/float64(changes))
	wg.Wait()
}

func waitAll(t *testing.T, mu *sync.Mutex, seen map[string][]time.Time, key string, n int) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		got := len(seen[key])
		mu.Unlock()
		if got >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%s reached %d members, want %d", key, len(seen[key]), n)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
