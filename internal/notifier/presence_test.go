package notifier

import (
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/natstest"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

func roomToken(t testing.TB, user string, rooms ...string) string {
	t.Helper()
	tok, err := auth.IssueWith(secret, auth.Principal{User: user, Rooms: auth.RoomsOf(rooms...)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type presMeta struct {
	Topic    string          `json:"topic"` // admin:presence only
	Ref      string          `json:"phx_ref"`
	Prev     string          `json:"phx_ref_prev"`
	OnlineAt int64           `json:"online_at"`
	Device   string          `json:"device"`
	Meta     json.RawMessage `json:"meta"`
}

type presState map[string]struct {
	Metas []presMeta `json:"metas"`
}

type presDiffT struct {
	Joins  presState `json:"joins"`
	Leaves presState `json:"leaves"`
}

// presenceEvent waits for the next presence_state or presence_diff on
// topic, skipping other frames.
func (c *client) presenceEvent(topic string) frame {
	c.t.Helper()
	for {
		f, ok := c.next(5 * time.Second)
		if !ok {
			c.t.Fatalf("no presence event on %s", topic)
		}
		if f.Topic == topic && strings.HasPrefix(f.Event, "presence_") {
			return f
		}
	}
}

func (c *client) presenceDiff(topic string) presDiffT {
	c.t.Helper()
	f := c.presenceEvent(topic)
	if f.Event != "presence_diff" {
		c.t.Fatalf("got %s %s, want presence_diff", f.Event, f.Payload)
	}
	var d presDiffT
	if err := json.Unmarshal(f.Payload, &d); err != nil || d.Joins == nil || d.Leaves == nil {
		c.t.Fatalf("presence_diff %s: %v (joins and leaves must both be objects)", f.Payload, err)
	}
	return d
}

func (c *client) joinPresence(topic string, params any) presState {
	st, _ := c.joinPresenceRef(topic, params)
	return st
}

func (c *client) joinPresenceRef(topic string, params any) (presState, string) {
	c.t.Helper()
	r, jr := c.join(topic, params)
	if r.status() != "ok" {
		c.t.Fatalf("join %s: %s", topic, r.Payload)
	}
	f := c.presenceEvent(topic)
	if f.Event != "presence_state" {
		c.t.Fatalf("first presence event %s %s, want presence_state", f.Event, f.Payload)
	}
	var st presState
	if err := json.Unmarshal(f.Payload, &st); err != nil {
		c.t.Fatal(err)
	}
	return st, jr
}

func keysOf(st presState) []string {
	var k []string
	for key := range st {
		k = append(k, key)
	}
	slices.Sort(k)
	return k
}

func TestPresenceStateAndDiffs(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	alice := dial(t, n, roomToken(t, "alice", "lab"))
	st := alice.joinPresence("studio:lab", map[string]any{"device": "laptop", "presence": map[string]any{"typing": false}})
	if got := keysOf(st); !slices.Equal(got, []string{"alice"}) || len(st["alice"].Metas) != 1 {
		t.Fatalf("presence_state %+v, want alice with one meta", st)
	}
	m := st["alice"].Metas[0]
	if m.Ref == "" || m.Device != "laptop" || string(m.Meta) != `{"typing":false}` || time.Since(time.UnixMilli(m.OnlineAt)) > time.Minute {
		t.Fatalf("meta %+v", m)
	}
	// Her own join follows as a diff, as on Phoenix.
	if d := alice.presenceDiff("studio:lab"); len(d.Joins["alice"].Metas) != 1 {
		t.Fatalf("own join diff %+v", d)
	}

	bob := dial(t, n, roomToken(t, "bob", "*"))
	st, jr := bob.joinPresenceRef("studio:lab", nil)
	if got := keysOf(st); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("bob's presence_state keys %v", got)
	}
	d := alice.presenceDiff("studio:lab")
	if len(d.Joins["bob"].Metas) != 1 || len(d.Leaves) != 0 {
		t.Fatalf("alice saw %+v, want bob's join", d)
	}
	bobRef := d.Joins["bob"].Metas[0].Ref

	// A meta update: one diff, the new meta joins (phx_ref_prev), the old leaves.
	ref := bob.nextRef()
	bob.send(&jr, ref, "studio:lab", "presence", map[string]any{"meta": map[string]any{"typing": true}})
	if r := bob.reply(ref); r.status() != "ok" {
		t.Fatalf("presence update: %s", r.Payload)
	}
	d = alice.presenceDiff("studio:lab")
	if j := d.Joins["bob"].Metas; len(j) != 1 || j[0].Prev != bobRef || string(j[0].Meta) != `{"typing":true}` || d.Leaves["bob"].Metas[0].Ref != bobRef {
		t.Fatalf("update diff %+v", d)
	}

	// Bob's socket closes: he leaves.
	bob.pc.Close()
	d = alice.presenceDiff("studio:lab")
	if len(d.Leaves["bob"].Metas) != 1 || len(d.Joins) != 0 {
		t.Fatalf("alice saw %+v, want bob's leave", d)
	}

	// Job topics track watchers too; presence frames go to those whose
	// params ask for them ("presence" or "device"), but every watcher counts.
	job := w.newJob(t, "alice")
	st = alice.joinPresence("job:"+job, map[string]any{"presence": map[string]any{}})
	if got := keysOf(st); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("job presence %v", got)
	}
	alice.presenceDiff("job:" + job) // her own join
	admin := dial(t, n, token(t, "ops", true))
	if r, _ := admin.join("job:"+job, nil); r.status() != "ok" {
		t.Fatalf("admin join: %s", r.Payload)
	}
	if d := alice.presenceDiff("job:" + job); len(d.Joins["ops"].Metas) != 1 {
		t.Fatalf("a plain watcher's join: %+v", d)
	}
	for {
		f, ok := admin.next(300 * time.Millisecond)
		if !ok {
			break
		}
		if strings.HasPrefix(f.Event, "presence_") {
			t.Fatalf("a watcher that did not ask got %s", f.Event)
		}
	}
}

func TestPresenceAndStudioBadInput(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{StudioRate: 2})
	c := dial(t, n, roomToken(t, "alice", "lab", "other"))
	refused := func(topic string, params any, want string) {
		t.Helper()
		r, _ := c.join(topic, params)
		if r.status() != "error" || r.reason() != want {
			t.Fatalf("join %s %v: %s, want error %q", topic, params, r.Payload, want)
		}
	}
	refused("studio:lab", map[string]any{"presence": map[string]any{"x": strings.Repeat("a", 300)}}, reasonMetaTooLarge)
	refused("studio:lab", map[string]any{"presence": []int{1}}, reasonBadMeta)
	refused("studio:lab", map[string]any{"device": strings.Repeat("d", 33)}, reasonBadDevice)
	refused("studio:a.b", nil, reasonBadRoom)
	refused("studio:a*", nil, reasonBadRoom)
	refused("studio:>", nil, reasonBadRoom)
	refused("studio:", nil, reasonInvalid)
	refused("studio:secret", nil, reasonUnauthorized) // not in the rooms claim

	// A forged claim (rooms "*" signed with another secret) never connects.
	forged, err := auth.IssueWith([]byte("another-secret-0123456789"), auth.Principal{User: "alice", Rooms: auth.RoomsOf("*")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, resp, err := dialRaw(n, "token="+url.QueryEscape(forged)+"&vsn=2.0.0", nil); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("forged rooms claim: %v %v, want 403", err, resp)
	}
	// A token without the claim joins no room.
	plain := dial(t, n, token(t, "alice", false))
	if r, _ := plain.join("studio:lab", nil); r.reason() != reasonUnauthorized {
		t.Fatalf("no rooms claim: %s", r.Payload)
	}

	_, jr := c.joinPresenceRef("studio:lab", nil)
	pushErr := func(event string, payload any) string {
		t.Helper()
		ref := c.nextRef()
		c.send(&jr, ref, "studio:lab", event, payload)
		r := c.reply(ref)
		if r.status() == "ok" {
			return ""
		}
		return r.reason()
	}
	if got := pushErr("presence", map[string]any{"meta": map[string]any{"x": strings.Repeat("a", 300)}}); got != reasonMetaTooLarge {
		t.Fatalf("big meta push: %q", got)
	}
	if got := pushErr("msg", map[string]any{"text": strings.Repeat("a", 2000)}); got != reasonMsgTooLarge {
		t.Fatalf("big message: %q", got)
	}
	// Messages reach the room with the sender's id; faster than the limit
	// (2 a second, burst 4) they are refused, and the connection lives on.
	if got := pushErr("msg", map[string]any{"text": "hi", "from": "mallory"}); got != "" {
		t.Fatalf("msg: %q", got)
	}
	for {
		f, ok := c.next(5 * time.Second)
		if !ok {
			t.Fatal("own message never arrived")
		}
		if f.Event == "msg" {
			if string(f.Payload) != `{"from":"alice","body":{"from":"mallory","text":"hi"}}` {
				t.Fatalf("msg push %s", f.Payload)
			}
			break
		}
	}
	var limited int
	for range 10 {
		if pushErr("msg", map[string]any{"text": "spam"}) == reasonRateLimited {
			limited++
		}
	}
	if limited < 5 {
		t.Fatalf("%d of 10 fast messages refused, want most", limited)
	}
	if got := pushErr("ping", map[string]any{}); got != "" {
		t.Fatalf("connection unusable after refusals: %q", got)
	}
	// job: topics take no msg; studio topics no cancel.
	if got := pushErr("cancel", map[string]any{}); got != "unknown event" {
		t.Fatalf("cancel on a studio topic: %q", got)
	}
}

// TestPresenceAcrossNotifiers: two notifiers on one NATS show the same
// presences; one that dies (its NATS connection cut, so no goodbye) has
// its presences leave on the other within 2 heartbeat intervals; back
// under the same name, nobody is shown twice.
func TestPresenceAcrossNotifiers(t *testing.T) {
	const interval = 300 * time.Millisecond
	w := newWorld(t)
	a := startNotifier(t, w, Config{PresenceNode: "na", PresenceInterval: interval})
	b := startNotifier(t, w, Config{PresenceNode: "nb", PresenceInterval: interval})

	alice := dial(t, a, roomToken(t, "alice", "lab"))
	alice.joinPresence("studio:lab", nil)
	bob := dial(t, b, roomToken(t, "bob", "lab"))
	// Bob's notifier learns of alice from A's diff or its next heartbeat.
	testutil.WaitFor(t, 5*interval, func() bool { return len(b.svc.presence.list()) == 1 }, "B learns of alice")
	st := bob.joinPresence("studio:lab", nil)
	if got := keysOf(st); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("bob on B sees %v", got)
	}
	if d := waitDiff(alice, "studio:lab", func(d presDiffT) bool { return len(d.Joins["bob"].Metas) > 0 }); d == nil {
		t.Fatal("alice on A never saw bob join on B")
	}
	for _, m := range []struct {
		name  string
		label map[string]string
		want  float64
	}{
		{"beamline_notifier_presences", map[string]string{"scope": "local"}, 1},
		{"beamline_notifier_presences", map[string]string{"scope": "all"}, 2},
		{"beamline_notifier_presence_peers", nil, 1},
	} {
		if got := testutil.GatheredValue(t, b.reg, m.name, m.label); got != m.want {
			t.Errorf("B's %s%v = %v, want %v", m.name, m.label, got, m.want)
		}
	}

	// A dies without a goodbye.
	addr := strings.TrimPrefix(a.url, "http://")
	aNC := a.svc.nc
	start := time.Now()
	aNC.Close()
	a.stop(t)
	if waitDiff(bob, "studio:lab", func(d presDiffT) bool { return len(d.Leaves["alice"].Metas) > 0 }) == nil {
		t.Fatal("alice never left on B")
	}
	if took := time.Since(start); took > 2*interval {
		t.Fatalf("alice left on B %v after A died, want ≤ 2 heartbeats (%v)", took, 2*interval)
	}
	if got := testutil.GatheredValue(t, b.reg, "beamline_notifier_presences", map[string]string{"scope": "all"}); got != 1 {
		t.Errorf("B's presences{scope=all} after alice left = %v, want 1", got)
	}

	// A comes back under its name; alice reconnects to it.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	a2 := startNotifier(t, w, Config{PresenceNode: "na", PresenceInterval: interval, Listener: ln})
	testutil.WaitFor(t, 5*interval, func() bool { return len(a2.svc.presence.list()) == 1 }, "A learns of bob again")
	alice2 := dial(t, a2, roomToken(t, "alice", "lab"))
	st = alice2.joinPresence("studio:lab", nil)
	if got := keysOf(st); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("alice on A again sees %v", got)
	}
	for key, p := range st {
		if len(p.Metas) != 1 {
			t.Fatalf("%s shown %d times on A: %+v", key, len(p.Metas), st)
		}
	}
	time.Sleep(3 * interval) // heartbeats go round: still one meta each
	got := b.svc.presence.list()
	if len(got) != 2 {
		t.Fatalf("B lists %d presences after A's restart, want 2: %+v", len(got), got)
	}
	for _, n := range []*running{b, a2} {
		if got := testutil.GatheredValue(t, n.reg, "beamline_notifier_presences", map[string]string{"scope": "all"}); got != 2 {
			t.Errorf("presences{scope=all} after A's restart and the heartbeats = %v, want 2", got)
		}
	}
}

// waitDiff reads presence diffs on topic until ok accepts one (nil on timeout).
func waitDiff(c *client, topic string, ok func(presDiffT) bool) *presDiffT {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		f, got := c.next(time.Until(deadline))
		if !got {
			return nil
		}
		if f.Topic != topic || f.Event != "presence_diff" {
			continue
		}
		var d presDiffT
		if json.Unmarshal(f.Payload, &d) == nil && ok(d) {
			return &d
		}
	}
	return nil
}

// TestPresenceRestartReplacesAtOnce: a notifier that comes back under its
// name makes its former presences leave everywhere at once, long before
// they would expire.
func TestPresenceRestartReplacesAtOnce(t *testing.T) {
	const interval = 3 * time.Second // expiry 4.5 s: far beyond the wait below
	w := newWorld(t)
	a := startNotifier(t, w, Config{PresenceNode: "na", PresenceInterval: interval})
	b := startNotifier(t, w, Config{PresenceNode: "nb", PresenceInterval: interval})
	alice := dial(t, a, roomToken(t, "alice", "lab"))
	alice.joinPresence("studio:lab", nil)
	testutil.WaitFor(t, 5*time.Second, func() bool { return len(b.svc.presence.list()) == 1 }, "B learns of alice")

	start := time.Now()
	a.svc.nc.Close() // dies without a goodbye
	a.stop(t)
	startNotifier(t, w, Config{PresenceNode: "na", PresenceInterval: interval})
	testutil.WaitFor(t, 5*time.Second, func() bool { return len(b.svc.presence.list()) == 0 }, "alice's old presence leaves B")
	if took := time.Since(start); took >= interval {
		t.Fatalf("the old presence left after %v: by expiry, not by the restart", took)
	}
}

// TestCancelPush: a cancel push on job:<id> cancels the job as DELETE
// does — snapshot, event, cancel notice — and a second one is refused.
func TestCancelPush(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	job := w.newJob(t, "alice")
	w.start(t, job)
	notices, err := natstest.Connect(t, w.srv).SubscribeSync(envelope.CancelSubject("alice", job))
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, n, token(t, "alice", false))
	r, jr := c.join("job:"+job, nil)
	if r.status() != "ok" {
		t.Fatalf("join: %s", r.Payload)
	}
	ref := c.nextRef()
	c.send(&jr, ref, "job:"+job, "cancel", map[string]any{})
	r = c.reply(ref)
	var resp struct{ Job envelope.Snapshot }
	if r.status() != "ok" || json.Unmarshal(r.response(), &resp) != nil || resp.Job.Status != envelope.StatusCancelled {
		t.Fatalf("cancel reply %s", r.Payload)
	}
	if p := c.pushes("job:"+job, 1)[0]; p.Type != "cancelled" {
		t.Fatalf("push %+v, want the cancelled event", p)
	}
	if _, err := notices.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("no cancel notice: %v", err)
	}
	if snap, _, err := w.store.Get(t.Context(), job); err != nil || snap.Status != envelope.StatusCancelled {
		t.Fatalf("stored %+v %v", snap, err)
	}
	ref = c.nextRef()
	c.send(&jr, ref, "job:"+job, "cancel", map[string]any{})
	if r := c.reply(ref); r.reason() != reasonTerminal {
		t.Fatalf("second cancel: %s", r.Payload)
	}
}

// TestShareTokenOnNotifier: a share token watches its job (join, SSE,
// presence as "guest") and nothing else; expired, it does not connect.
func TestShareTokenOnNotifier(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	job, other := w.newJob(t, "alice"), w.newJob(t, "alice")
	w.start(t, job)
	w.succeed(t, job)
	share, err := auth.IssueShare(secret, "alice", job, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, n, share)
	st, jr := c.joinPresenceRef("job:"+job, map[string]any{"device": "embed"})
	if got := keysOf(st); !slices.Equal(got, []string{guestKey}) {
		t.Fatalf("share holder's presence %v", got)
	}
	for _, topic := range []string{"job:" + other, "user:alice", "user:", "studio:lab", "admin:metrics"} {
		if r, _ := c.join(topic, nil); r.status() != "error" {
			t.Errorf("share token joined %s: %s", topic, r.Payload)
		}
	}
	ref := c.nextRef()
	c.send(&jr, ref, "job:"+job, "cancel", map[string]any{})
	if r := c.reply(ref); r.reason() != reasonUnauthorized {
		t.Errorf("share token cancel: %s", r.Payload)
	}
	sse := func(id, tok string) int {
		t.Helper()
		resp, err := http.Get(n.url + "/v1/jobs/" + id + "/events?token=" + url.QueryEscape(tok))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			readSSE(t, resp)
		}
		return resp.StatusCode
	}
	if code := sse(job, share); code != http.StatusOK {
		t.Errorf("SSE of the shared job: %d", code)
	}
	if code := sse(other, share); code == http.StatusOK {
		t.Errorf("SSE of another job with a share token: %d", code)
	}
	expired, err := auth.IssueShare(secret, "alice", job, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(7 * time.Second) // past exp and the 5 s leeway
	if _, resp, err := dialRaw(n, "token="+url.QueryEscape(expired)+"&vsn=2.0.0", nil); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("expired share token: %v %v, want 403", err, resp)
	}
}

// TestAdminPresence: admin:presence lists every presence, keyed by user,
// each meta naming its topic; admins only.
func TestAdminPresence(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	alice := dial(t, n, roomToken(t, "alice", "lab"))
	alice.joinPresence("studio:lab", nil)
	if r, _ := alice.join(AdminPresenceTopic, nil); r.reason() != reasonUnauthorized {
		t.Fatalf("non-admin joined admin:presence: %s", r.Payload)
	}
	admin := dial(t, n, token(t, "ops", true))
	st := admin.joinPresence(AdminPresenceTopic, nil)
	if got := keysOf(st); !slices.Equal(got, []string{"alice"}) || st["alice"].Metas[0].Topic != "studio:lab" {
		t.Fatalf("admin sees %+v", st)
	}
	bob := dial(t, n, roomToken(t, "bob", "*"))
	bob.joinPresence("studio:other", nil)
	d := admin.presenceDiff(AdminPresenceTopic)
	if j := d.Joins["bob"].Metas; len(j) != 1 || j[0].Topic != "studio:other" {
		t.Fatalf("admin diff %+v", d)
	}
	bob.pc.Close()
	if d := admin.presenceDiff(AdminPresenceTopic); len(d.Leaves["bob"].Metas) != 1 {
		t.Fatalf("admin diff on bob's leave %+v", d)
	}
}

// TestPresenceMessagesHeal drives presence.receive with another node's
// messages: a full copy replaces what a lost diff left wrong, a copy in
// parts is applied only whole, a part after a gap is dropped, a former
// incarnation's late message is ignored, and bye drops the node.
func TestPresenceMessagesHeal(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{PresenceInterval: time.Hour})
	p := n.svc.presence
	send := func(m presMsg) {
		t.Helper()
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		p.receive(&nats.Msg{Subject: "beamline.presence." + m.Node, Data: b})
	}
	entry := func(key, ref string) presEntry {
		return presEntry{Topic: "studio:lab", Key: key, Ref: ref, Meta: json.RawMessage(`{"phx_ref":"` + ref + `"}`)}
	}
	users := func() []string {
		var u []string
		for _, e := range p.list() {
			u = append(u, e.User)
		}
		slices.Sort(u)
		return u
	}
	want := func(what string, u ...string) {
		t.Helper()
		if got := users(); !slices.Equal(got, u) {
			t.Fatalf("%s: %v, want %v", what, got, u)
		}
	}
	send(presMsg{Node: "x", Start: 10, Seq: 1, Kind: presKindDiff, Joins: []presEntry{entry("ann", "x1")}})
	want("a diff", "ann")
	// Seq 2 (ann's leave, bob's join) is lost; the copy at seq 3 heals.
	send(presMsg{Node: "x", Start: 10, Seq: 3, Kind: presSync, First: true, Last: true, Joins: []presEntry{entry("bob", "x2")}})
	want("a full copy after a lost diff", "bob")
	// A copy in two parts applies only once whole.
	send(presMsg{Node: "x", Start: 10, Seq: 4, Kind: presSync, First: true, Joins: []presEntry{entry("bob", "x2")}})
	want("half a copy", "bob")
	send(presMsg{Node: "x", Start: 10, Seq: 5, Kind: presSync, Last: true, Joins: []presEntry{entry("cy", "x3")}})
	want("a whole copy", "bob", "cy")
	// A part after a gap is dropped: the copy stays as it was.
	send(presMsg{Node: "x", Start: 10, Seq: 6, Kind: presSync, First: true})
	send(presMsg{Node: "x", Start: 10, Seq: 8, Kind: presSync, Last: true})
	want("a copy with a lost part", "bob", "cy")
	// A former incarnation's late message changes nothing.
	send(presMsg{Node: "x", Start: 9, Seq: 9, Kind: presKindDiff, Joins: []presEntry{entry("old", "x0")}})
	want("a late message of a former incarnation", "bob", "cy")
	// Our own messages are not another node's.
	send(presMsg{Node: p.node, Start: 1, Seq: 1, Kind: presKindDiff, Joins: []presEntry{entry("me", "m1")}})
	want("our own name", "bob", "cy")
	send(presMsg{Node: "x", Start: 10, Seq: 9, Kind: presBye})
	want("bye")
	// Garbage is dropped.
	p.receive(&nats.Msg{Subject: "beamline.presence.x", Data: []byte(`{"node":"x","kind":"diff","joins":[{"topic":"user:a","key":"a","ref":"r","meta":{}}]}`)})
	want("a join on a topic without presence")
}
