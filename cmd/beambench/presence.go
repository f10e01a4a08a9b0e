package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/notifier"
	"github.com/beamline/beamline/internal/phoenix"
	"github.com/beamline/beamline/internal/phoenix/phoenixtest"
	"github.com/beamline/beamline/pkg/envelope"
)

// The presence scenario (issue 15): one studio room with M members, half on
// each of two notifiers sharing presence over the target's NATS, and a
// join/leave storm of R changes per second (C changes in all) made by a
// few churn connections, also split across the notifiers. It reports:
//
//   - change → every member: from sending the phx_join / phx_leave to the
//     last of the M members reading the presence_diff that carries it (the
//     frame a phoenix.js Presence applies before calling onSync), p50 and
//     p99; a change is identified by the "c" of the churn connection's
//     client meta, which a leave's metas carry too. The same-run baseline
//     is the change reaching a raw core-NATS subscriber of the notifiers'
//     presence subjects (joins only: a leave names its phx_ref, not the meta).
//   - memory per presence: the growth of the notifiers' Go heap (after a
//     GC) from the members connected to the members joined, over M. With
//     -notifier-bin the two notifiers are separate processes (run with
//     -pprof, whose heap?gc=1 collects first) and only their heaps count; in-process it is this process's heap, so the
//     members' client side of the joins is in it too (an upper bound).
//   - NATS messages per change: what the notifiers published on
//     beamline.presence.> during the storm (diffs and heartbeats), per change.

// presNotifier is one of the scenario's two notifiers.
type presNotifier struct {
	url  string
	heap func() uint64 // Go heap in use (in-process: after a GC)
	self bool          // in this process: its heap is this process's
	cpu  func() time.Duration
	stop func()
	proc *notifierProc // with -notifier-bin (nil in-process)
}

// presHeap is the two notifiers' Go heap: the sum of two processes', or
// this process's once.
func presHeap(ns [2]*presNotifier) uint64 {
	if ns[0].self {
		return ns[0].heap()
	}
	return ns[0].heap() + ns[1].heap()
}

// startPresNotifier starts a notifier on the target's NATS: a process of
// -notifier-bin, or a notifier.Service in this process.
func startPresNotifier(ctx context.Context, t *target, o *options) (*presNotifier, error) {
	if o.notifierBin != "" {
		// With -pprof on, a heap profile with gc=1 collects its garbage
		// before /metrics reads its heap in use.
		po := *o
		if po.notifierProfile == "" {
			po.notifierProfile = "-"
		}
		np, err := startNotifierProc(ctx, t, &po)
		if err != nil {
			return nil, err
		}
		return &presNotifier{url: np.url, stop: np.stop, cpu: np.cpu, proc: np, heap: func() uint64 {
			if resp, err := http.Get(np.pprof + "heap?gc=1"); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			return np.probe().heap
		}}, nil
	}
	nc, err := nats.Connect(t.natsURL, nats.Name("beambench-presence"), nats.MaxReconnects(-1))
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		nc.Close()
		return nil, err
	}
	svc, err := notifier.New(notifier.Config{Listener: ln, Secret: t.secret, SendQueue: 1024}, nc, js,
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		ln.Close()
		nc.Close()
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	return &presNotifier{url: "http://" + ln.Addr().String(), self: true, cpu: cpuTime, heap: func() uint64 { settleGC(); return selfProbe().heap },
		stop: func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.log.Warn("presence notifier", "err", err)
				}
			case <-time.After(15 * time.Second):
				t.log.Warn("presence notifier did not stop")
			}
			nc.Close()
		}}, nil
}

// presencesAll reads beamline_notifier_presences{scope="all"} from the
// notifier's /metrics.
func presencesAll(base string) (int, error) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), `beamline_notifier_presences{scope="all"} `); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return int(f), err
		}
	}
	return 0, errors.New("no beamline_notifier_presences in /metrics")
}

// changeTimes tracks the storm's changes: when each was sent and when the
// members read it. Change i is a join when its churn connection was out of
// the room, else the leave of the join it made as change joinOf[i].
type changeTimes struct {
	sent    []atomic.Int64 // unix nanos
	seen    []atomic.Int32 // members that read it
	last    []atomic.Int64 // unix nanos of the latest of them
	leaveOf []atomic.Int32 // join change → its leave change + 1 (0: none yet)
	natsAt  []atomic.Int64 // a join's arrival on NATS
}

func newChangeTimes(n int) *changeTimes {
	return &changeTimes{sent: make([]atomic.Int64, n), seen: make([]atomic.Int32, n), last: make([]atomic.Int64, n),
		leaveOf: make([]atomic.Int32, n), natsAt: make([]atomic.Int64, n)}
}

// saw records that a member read change i at at.
func (ct *changeTimes) saw(i int, at int64) {
	if i < 0 || i >= len(ct.seen) {
		return
	}
	ct.seen[i].Add(1)
	for {
		l := ct.last[i].Load()
		if at <= l || ct.last[i].CompareAndSwap(l, at) {
			return
		}
	}
}

// metaChanges calls f with the "c" of every client meta in b ({"c":N}).
func metaChanges(b []byte, f func(int)) {
	for {
		i := bytes.Index(b, []byte(`"meta":{"c":`))
		if i < 0 {
			return
		}
		b = b[i+len(`"meta":{"c":`):]
		n := 0
		j := 0
		for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
			n = n*10 + int(b[j]-'0')
		}
		if j > 0 {
			f(n)
		}
		b = b[j:]
	}
}

// onDiff records a member's presence_diff: the joins part carries join
// changes, the leaves part the joins whose leave it is.
func (ct *changeTimes) onDiff(payload []byte, at int64) {
	joins, leaves, _ := bytes.Cut(payload, []byte(`,"leaves":`))
	metaChanges(joins, func(c int) { ct.saw(c, at) })
	metaChanges(leaves, func(c int) {
		if c >= 0 && c < len(ct.leaveOf) {
			if l := int(ct.leaveOf[c].Load()) - 1; l >= 0 {
				ct.saw(l, at)
			}
		}
	})
}

func runPresence(ctx context.Context, t *target, o *options, rep *reporter) error {
	members, changes, rate, churnN := o.presMembers, o.presChanges, o.presRate, o.presChurn
	if members < 2 || changes < 2 || rate <= 0 || churnN < 2 {
		return fmt.Errorf("presence: need ≥ 2 members, changes and churn connections and a rate (got %d, %d, %d, %d)", members, changes, churnN, rate)
	}
	var ns [2]*presNotifier
	for i := range ns {
		n, err := startPresNotifier(ctx, t, o)
		if err != nil {
			return fmt.Errorf("presence: notifier %d: %w", i, err)
		}
		defer n.stop()
		ns[i] = n
	}
	where := "in-process (the heap includes the members' client side)"
	if o.notifierBin != "" {
		where = "two separate processes"
	}
	room := fmt.Sprintf("pb%x", time.Now().UnixNano()&0xffffffff)
	topic := "studio:" + room
	tokenFor := func(user string) string {
		tok, err := auth.IssueWith(t.secret, auth.Principal{User: user, Rooms: auth.RoomsOf(room)}, 24*time.Hour)
		if err != nil {
			panic(err) // the secret was validated at start
		}
		return tok
	}
	ct := newChangeTimes(changes)

	// Raw core-NATS subscriber: counts the notifiers' presence messages and
	// times the joins' arrival.
	var natsMsgs atomic.Int64
	counting := atomic.Bool{}
	sub, err := t.nc.Subscribe(envelope.PresenceFilter, func(m *nats.Msg) {
		at := time.Now().UnixNano()
		if !counting.Load() {
			return
		}
		natsMsgs.Add(1)
		if bytes.Contains(m.Data, []byte(`"kind":"diff"`)) {
			metaChanges(m.Data, func(c int) {
				if c >= 0 && c < changes {
					ct.natsAt[c].CompareAndSwap(0, at)
				}
			})
		}
	})
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	sub.SetPendingLimits(-1, -1)

	// The members connect (half on each notifier), then the heap is read,
	// then they join.
	clients := make([]presMember, members)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.abort()
			}
		}
	}()
	var measuring atomic.Bool
	onDiff := func(b []byte, at time.Time) {
		if measuring.Load() {
			ct.onDiff(b, at.UnixNano())
		}
	}
	if err := parallel(ctx, members, 32, func(i int) error {
		c, err := dialMember(ctx, o.presClient, ns[i%2].url, tokenFor(fmt.Sprintf("m%d", i)), onDiff)
		if err == nil {
			clients[i] = c
		}
		return err
	}); err != nil {
		return fmt.Errorf("presence: connect members: %w", err)
	}
	heap0 := presHeap(ns)
	joinStart := time.Now()
	if err := parallel(ctx, members, 32, func(i int) error { return clients[i].join(ctx, topic) }); err != nil {
		return fmt.Errorf("presence: join members: %w", err)
	}
	// Every member is on both notifiers' view before the storm.
	if err := waitPresences(ctx, ns, members, 30*time.Second); err != nil {
		return err
	}
	joinTook := time.Since(joinStart)
	heap1 := presHeap(ns)
	rep.add("presence", "notifier heap per presence", (float64(heap1)-float64(heap0))/float64(members)/1024, "KiB",
		map[string]any{"members": members, "notifiers": where, "heap_before_mb": round(float64(heap0) / 1e6),
			"heap_after_mb": round(float64(heap1) / 1e6), "join_all_s": round(joinTook.Seconds())})

	churn := make([]*churnConn, churnN)
	for i := range churn {
		c, err := dialChurn(ctx, ns[i%2].url, tokenFor(fmt.Sprintf("churn%d", i)))
		if err != nil {
			return fmt.Errorf("presence: churn connection: %w", err)
		}
		defer c.close()
		churn[i] = c
	}

	// The storm: change i is made by churn connection i % churnN,
	// alternately joining (client meta {"c": i}) and leaving.
	joinRef := make([]string, churnN)
	joinedAs := make([]int, churnN) // the join change of a connection in the room
	measuring.Store(true)
	counting.Store(true)
	if o.notifierProfile != "" && o.notifierBin != "" {
		// Each notifier's CPU profile over the storm (-notifier-profile).
		secs := fmt.Sprintf("seconds=%d", max(1, (changes+rate-1)/rate))
		var wg sync.WaitGroup
		for i, n := range ns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := n.proc.profile(o.notifierProfile, "profile", secs, fmt.Sprintf("presence-cpu-%d.pb.gz", i)); err != nil {
					t.log.Warn("notifier profile", "err", err)
				}
			}()
		}
		defer wg.Wait()
	}
	cpu0, self0 := presCPU(ns), cpuTime()
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	sent := 0
	for sent < changes {
		select {
		case <-ctx.Done():
			tick.Stop()
			return ctx.Err()
		case <-tick.C:
		}
		due := min(changes, int(time.Since(start).Seconds()*float64(rate)))
		for ; sent < due; sent++ {
			k := sent % churnN
			c := churn[k]
			ref := strconv.Itoa(sent)
			var err error
			if joinRef[k] == "" {
				joinRef[k], joinedAs[k] = ref, sent
				ct.sent[sent].Store(time.Now().UnixNano())
				err = c.send(joinRef[k], ref, topic, "phx_join", `{"presence":{"c":`+ref+`}}`)
			} else {
				ct.leaveOf[joinedAs[k]].Store(int32(sent + 1))
				ct.sent[sent].Store(time.Now().UnixNano())
				err = c.send(joinRef[k], ref, topic, "phx_leave", `{}`)
				joinRef[k] = ""
			}
			if err != nil {
				tick.Stop()
				return fmt.Errorf("presence: churn %d: %w", k, err)
			}
		}
	}
	tick.Stop()
	stormTook := time.Since(start)
	// Wait for every member to read every change (or 10 s).
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		all := true
		for i := range changes {
			if int(ct.seen[i].Load()) < members {
				all = false
				break
			}
		}
		if all {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	counting.Store(false)
	measuring.Store(false)
	cpu, self := presCPU(ns)-cpu0, cpuTime()-self0

	var lat, natsLat []time.Duration
	missed := 0
	for i := range changes {
		s := ct.sent[i].Load()
		if int(ct.seen[i].Load()) < members {
			missed++
			continue
		}
		lat = append(lat, time.Duration(ct.last[i].Load()-s))
		if at := ct.natsAt[i].Load(); at != 0 {
			natsLat = append(natsLat, time.Duration(at-s))
		}
	}
	if len(lat) == 0 {
		return fmt.Errorf("presence: %w: no change reached every member (%d changes)", errNoFigures, changes)
	}
	p := map[string]any{"members": members, "member_client": o.presClient, "notifiers": 2, "changes": changes, "changes_per_s": rate,
		"storm_s": round(stormTook.Seconds()), "churn_conns": churnN, "not_reaching_all": missed,
		"baseline": "change → raw core-NATS subscriber (joins)"}
	slices.Sort(lat)
	slices.Sort(natsLat)
	var b50, b99 float64
	if len(natsLat) > 0 {
		b50, b99 = quantileMS(natsLat, 0.50), quantileMS(natsLat, 0.99)
	}
	rep.addVs("presence", "change → every member p50", quantileMS(lat, 0.50), "ms", b50, p)
	rep.addVs("presence", "change → every member p99", quantileMS(lat, 0.99), "ms", b99, p)
	rep.add("presence", "NATS messages per change", float64(natsMsgs.Load())/float64(changes), "msgs",
		map[string]any{"messages": natsMsgs.Load(), "changes": changes, "subjects": envelope.PresenceFilter,
			"note": "published by the notifiers: diffs and the heartbeats of the run"})
	what := "both notifier processes"
	if ns[0].self {
		what = "this process: the notifiers, the members and the churn connections"
	}
	cp := map[string]any{"cpu_s": round(cpu.Seconds()), "changes": changes, "members": members, "of": what, "member_client": o.presClient}
	if !ns[0].self {
		// The members' side, on the same cores: their reads and decoding,
		// the churn connections, devstack's NATS server.
		cp["beambench_cpu_s"] = round(self.Seconds())
	}
	rep.add("presence", "CPU per change", float64(cpu.Microseconds())/float64(changes), "µs", cp)
	return nil
}

// presCPU is the user+system CPU of the two notifiers' processes (this
// process once when they run in it).
func presCPU(ns [2]*presNotifier) time.Duration {
	if ns[0].self {
		return ns[0].cpu()
	}
	return ns[0].cpu() + ns[1].cpu()
}

// churnConn is a storm connection: it sends joins and leaves and reads
// its frames without decoding them. Every join of a 1,000-member room
// brings a presence_state of about 150 KB; decoding those would make the
// bench's own CPU, not the notifiers', the figure.
type churnConn struct {
	ws   *websocket.Conn
	done chan struct{}
}

func dialChurn(ctx context.Context, base, token string) (*churnConn, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.DialContext(ctx, phoenixtest.URL(base, token), nil)
	if err != nil {
		return nil, err
	}
	c := &churnConn{ws: ws, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, r, err := ws.NextReader()
			if err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, r); err != nil {
				return
			}
		}
	}()
	return c, nil
}

// send writes the V2 frame [joinRef, ref, topic, event, payload].
func (c *churnConn) send(joinRef, ref, topic, event, payload string) error {
	b := phoenix.AppendFrame(nil, phoenix.StrRef(joinRef), phoenix.StrRef(ref), topic, event, []byte(payload))
	_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

func (c *churnConn) close() {
	_ = c.ws.Close()
	<-c.done
}

// waitPresences waits until both notifiers hold at least n presences.
func waitPresences(ctx context.Context, ns [2]*presNotifier, n int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		a, errA := presencesAll(ns[0].url)
		b, errB := presencesAll(ns[1].url)
		if errA == nil && errB == nil && a >= n && b >= n {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("presence: the notifiers hold %d and %d presences, want %d (%v, %v)", a, b, n, errA, errB)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// parallel runs f(0..n-1), conc at a time, and returns the first error.
func parallel(ctx context.Context, n, conc int, f func(i int) error) error {
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}
