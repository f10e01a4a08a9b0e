package notifier

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/testutil"
	"github.com/gorilla/websocket"
)

// TestIdleConnMemory measures what one idle, joined WebSocket connection
// costs the notifier: the clients run in a child process (this test binary
// again, TestIdleClients), so only the server side is counted. It is a
// measurement, not an assertion: run with
//
//	BEAMLINE_MEASURE=1 go test -run TestIdleConnMemory -v ./internal/notifier/
//
// (BEAMLINE_MEASURE_N sets the number of connections, default 2000).
func TestIdleConnMemory(t *testing.T) {
	if os.Getenv("BEAMLINE_MEASURE") == "" {
		t.Skip("set BEAMLINE_MEASURE=1 to measure")
	}
	n := 2000
	if v, err := strconv.Atoi(os.Getenv("BEAMLINE_MEASURE_N")); err == nil && v > 0 {
		n = v
	}
	w := newWorld(t)
	r := startNotifier(t, w, Config{})
	tok := token(t, "alice", false)
	// Warm up: one topic subscription and the pools exist before the
	// baseline, as on a notifier that has been running.
	warm := dial(t, r, tok)
	warm.join("user:alice", nil)

	type sample struct {
		heap, stack uint64
		goroutines  int
	}
	measure := func() sample {
		for range 3 {
			runtime.GC() // stacks shrink a little at every GC
		}
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return sample{m.HeapInuse, m.StackInuse, runtime.NumGoroutine()}
	}
	before := measure()

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^TestIdleClients$")
	cmd.Env = append(os.Environ(), "BEAMLINE_IDLE_CLIENTS="+r.wsURL("token="+tok+"&vsn=2.0.0"), "BEAMLINE_MEASURE_N="+strconv.Itoa(n))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stdin.Close(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "ready") {
		t.Log("client:", sc.Text())
	}
	testutil.WaitFor(t, 10*time.Second, func() bool { return int(counterGauge(t, r, "beamline_notifier_connections")) >= n+1 })
	time.Sleep(500 * time.Millisecond) // let writers finish and park
	after := measure()
	if p := os.Getenv("BEAMLINE_MEASURE_HEAPPROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		_ = pprof.Lookup("heap").WriteTo(f, 0)
		_ = f.Close()
	}
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) / 1024 }
	t.Logf("%d idle joined connections, server side only: %.1f KB each (heap %.1f KB + stacks %.1f KB), %.2f goroutines each",
		n, per(after.heap+after.stack, before.heap+before.stack), per(after.heap, before.heap), per(after.stack, before.stack),
		float64(after.goroutines-before.goroutines)/float64(n))
	t.Logf("goroutines by stack (count ≥ %d):\n%s", n/10, goroutineGroups(n/10))
}

// goroutineGroups lists the goroutine stacks shared by at least min
// goroutines (where the per-connection goroutines are).
func goroutineGroups(min int) string {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
	var out []string
	for _, block := range strings.Split(buf.String(), "\n\n") {
		block = strings.TrimPrefix(strings.TrimSpace(block), "goroutine profile: ")
		head, _, _ := strings.Cut(block, " @")
		if c, err := strconv.Atoi(strings.TrimSpace(head)); err == nil && c >= min {
			out = append(out, block)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n\n")
}

// TestIdleClients is the client side of TestIdleConnMemory, run in a child
// process: it opens the connections, joins, reports "ready" and holds them
// until stdin closes.
func TestIdleClients(t *testing.T) {
	u := os.Getenv("BEAMLINE_IDLE_CLIENTS")
	if u == "" {
		t.Skip("child process of TestIdleConnMemory")
	}
	n, _ := strconv.Atoi(os.Getenv("BEAMLINE_MEASURE_N"))
	for i := range n {
		ws, _, err := dialURL(u)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		defer ws.Close()
		_ = ws.WriteMessage(1, []byte(`["1","1","user:alice","phx_join",{}]`))
		if _, _, err := ws.ReadMessage(); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadByte() // until the parent closes stdin
}

func dialURL(u string) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	return d.Dial(u, nil)
}

// counterGauge reads an unlabelled gauge from the notifier's registry.
func counterGauge(t testing.TB, r *running, name string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}
