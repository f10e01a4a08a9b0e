package notifier

import (
	"fmt"
	"testing"
	"time"
)

func TestIdleTimeout(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{IdleTimeout: 300 * time.Millisecond})
	c := dial(t, n, token(t, "alice", false))
	// Heartbeats keep it open past the timeout...
	for i := range 6 {
		ref := fmt.Sprint(100 + i)
		c.send(nil, ref, "phoenix", "heartbeat", map[string]any{})
		c.reply(ref)
		time.Sleep(100 * time.Millisecond)
	}
	// ...silence closes it.
	if err := c.closeErr(5 * time.Second); err == nil {
		t.Fatal("no error")
	}
}
