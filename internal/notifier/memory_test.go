package notifier

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// TestIdleConnMemory measures the memory one idle, joined connection costs
// (server and client sides together, so an upper bound). It is a
// measurement, not an assertion: run with BEAMLINE_MEASURE=1.
func TestIdleConnMemory(t *testing.T) {
	if os.Getenv("BEAMLINE_MEASURE") == "" {
		t.Skip("set BEAMLINE_MEASURE=1 to measure")
	}
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	tok := token(t, "alice", false)
	const N = 2000
	mem := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse + m.StackInuse
	}
	before := mem()
	g0 := runtime.NumGoroutine()
	for range N {
		ws, _, err := dialRaw(n, "token="+tok+"&vsn=2.0.0", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		_ = ws.WriteMessage(1, []byte(`["1","1","user:alice","phx_join",{}]`))
		if _, _, err := ws.ReadMessage(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	after := mem()
	t.Logf("%d idle joined connections: %.1f KB each (server+client), %.2f goroutines each",
		N, float64(after-before)/N/1024, float64(runtime.NumGoroutine()-g0)/N)
}
