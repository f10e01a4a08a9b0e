package notifier

import (
	"bufio"
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/auth"
)

// An SSE watcher of a job is in job:<id>'s presence like a WebSocket
// watcher (device "sse"), on every notifier, and leaves when its stream
// ends: the client goes away, or the job finishes
// (docs/design.md#sse-watchers-in-presence). Its stream carries no
// presence frames.
func TestSSEWatcherPresence(t *testing.T) {
	w := newWorld(t)
	a := startNotifier(t, w, Config{PresenceInterval: 300 * time.Millisecond})
	b := startNotifier(t, w, Config{PresenceInterval: 300 * time.Millisecond})
	job := w.newJob(t, "alice")
	w.start(t, job)

	alice := dial(t, a, roomToken(t, "alice"))
	alice.joinPresence("job:"+job, map[string]any{"presence": map[string]any{}})
	alice.presenceDiff("job:" + job) // her own join

	// open starts an SSE stream of the job on b and returns the names of
	// its events once it ends, and how to end it.
	open := func(tok string) (events <-chan []string, stop func()) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.url+"/v1/jobs/"+job+"/events?token="+url.QueryEscape(tok), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			cancel()
			t.Fatalf("SSE: %s", resp.Status)
		}
		ch := make(chan []string, 1)
		go func() {
			defer resp.Body.Close()
			var names []string
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if name, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
					names = append(names, name)
				}
			}
			ch <- names
		}()
		t.Cleanup(cancel)
		return ch, cancel
	}

	share, err := auth.IssueShare(secret, "alice", job, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	guestEvents, stopGuest := open(share)
	d := waitDiff(alice, "job:"+job, func(d presDiffT) bool { return len(d.Joins[guestKey].Metas) > 0 })
	if d == nil {
		t.Fatal("alice never saw the SSE watcher join")
	}
	if m := d.Joins[guestKey].Metas[0]; m.Device != sseDevice || m.Ref == "" || time.Since(time.UnixMilli(m.OnlineAt)) > time.Minute {
		t.Fatalf("SSE watcher's meta %+v, want device %q", m, sseDevice)
	}
	guestRef := d.Joins[guestKey].Metas[0].Ref

	// The client goes away: it leaves.
	stopGuest()
	if waitDiff(alice, "job:"+job, func(d presDiffT) bool {
		return len(d.Leaves[guestKey].Metas) == 1 && d.Leaves[guestKey].Metas[0].Ref == guestRef
	}) == nil {
		t.Fatal("the SSE watcher never left after its client went away")
	}
	for _, name := range <-guestEvents {
		if strings.HasPrefix(name, "presence") {
			t.Errorf("the SSE stream carried %q", name)
		}
	}

	// The owner's stream ends with the job: she leaves as an SSE watcher,
	// and stays as a WebSocket one.
	ownerEvents, _ := open(roomToken(t, "alice"))
	if waitDiff(alice, "job:"+job, func(d presDiffT) bool {
		for _, m := range d.Joins["alice"].Metas {
			if m.Device == sseDevice {
				return true
			}
		}
		return false
	}) == nil {
		t.Fatal("alice never saw her own SSE stream join")
	}
	w.succeed(t, job)
	select {
	case <-ownerEvents:
	case <-time.After(10 * time.Second):
		t.Fatal("the SSE stream did not end with the job")
	}
	if waitDiff(alice, "job:"+job, func(d presDiffT) bool {
		l := d.Leaves["alice"].Metas
		return len(l) == 1 && l[0].Device == sseDevice
	}) == nil {
		t.Fatal("the SSE watcher never left after its stream ended")
	}
	if st := a.svc.presence.list(); len(st) != 1 || st[0].User != "alice" || strings.Contains(string(st[0].Meta), `"sse"`) {
		t.Fatalf("notifier a lists %+v, want alice's WebSocket only", st)
	}
}
