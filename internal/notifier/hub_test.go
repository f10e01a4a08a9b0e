package notifier

import (
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/testutil"
	"github.com/nats-io/nats-server/v2/server"
)

// TestTwoNotifiersInterestOnly: both deliver, and each one's NATS
// subscriptions cover only its own clients' topics.
func TestTwoNotifiersInterestOnly(t *testing.T) {
	w := newWorld(t)
	a := startNotifier(t, w, Config{})
	b := startNotifier(t, w, Config{})
	j1 := w.newJob(t, "alice")
	j2 := w.newJob(t, "bob")
	ca := dial(t, a, token(t, "alice", false))
	ca.join("job:"+j1, nil)
	cb := dial(t, b, token(t, "alice", false))
	cb.join("job:"+j1, nil)
	cb2 := dial(t, b, token(t, "bob", false))
	cb2.join("user:bob", nil)

	w.start(t, j1)
	w.start(t, j2)
	if p := ca.pushes("job:"+j1, 1); p[0].Seq != 1 {
		t.Fatal(p)
	}
	if p := cb.pushes("job:"+j1, 1); p[0].Seq != 1 {
		t.Fatal(p)
	}
	if p := cb2.pushes("user:bob", 1); p[0].Job.ID != j2 {
		t.Fatal(p)
	}
	subsOf := func(r *running) map[string]bool {
		id, err := r.svc.nc.GetClientID()
		if err != nil {
			t.Fatal(err)
		}
		connz, err := w.srv.Connz(&server.ConnzOptions{CID: id, Subscriptions: true})
		if err != nil || len(connz.Conns) != 1 {
			t.Fatalf("connz: %v %+v", err, connz)
		}
		out := map[string]bool{}
		for _, s := range connz.Conns[0].Subs {
			if strings.HasPrefix(s, "live.events.") || strings.HasPrefix(s, "events.") {
				out[s] = true
			}
		}
		return out
	}
	want := func(r *running, subjects ...string) {
		t.Helper()
		testutil.WaitFor(t, 5*time.Second, func() bool {
			got := subsOf(r)
			if len(got) != len(subjects) {
				return false
			}
			for _, s := range subjects {
				if !got[s] {
					return false
				}
			}
			return true
		})
	}
	want(a, "live.events.alice."+j1)
	want(b, "live.events.alice."+j1, "live.events.bob.*")
	// Leaving drops the subscription (reference-counted).
	ref := cb2.nextRef()
	jr := "1"
	cb2.send(&jr, ref, "user:bob", "phx_leave", map[string]any{})
	cb2.reply(ref)
	want(b, "live.events.alice."+j1)
	sz, err := w.srv.Subsz(&server.SubszOptions{Subscriptions: true, Test: "live.events.bob." + j2})
	if err != nil || sz.Total != 0 && hasSubject(sz, "live.events.bob.*") {
		t.Fatalf("bob's subject still subscribed: %v %+v", err, sz)
	}
}

func hasSubject(sz *server.Subsz, subj string) bool {
	for _, s := range sz.Subs {
		if s.Subject == subj {
			return true
		}
	}
	return false
}
