package faults

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// event is one message of EVENTS.
type event struct {
	StreamSeq uint64
	Type      envelope.Type
	Snap      envelope.Snapshot
}

func (e event) String() string {
	s := fmt.Sprintf("#%d seq %d %s attempt %d", e.StreamSeq, e.Snap.Seq, e.Snap.Status, e.Snap.Attempt)
	if e.Snap.Progress > 0 {
		s += fmt.Sprintf(" progress %d", e.Snap.Progress)
	}
	if e.Snap.Error != "" {
		s += " error " + strconv.Quote(e.Snap.Error)
	}
	return s
}

// observed is everything the checker reads after quiescence.
type observed struct {
	events   map[string][]event // job id → its events in stream order
	eventsN  int
	undecod  []string
	kv       map[string]envelope.Snapshot
	dlq      map[string]int
	jobsLeft map[string]int // job id → messages still in JOBS
	calls    map[string][]int
}

func observe(ctx context.Context, st *stack) (*observed, error) {
	o := &observed{events: map[string][]event{}, kv: map[string]envelope.Snapshot{}, dlq: map[string]int{},
		jobsLeft: map[string]int{}, calls: map[string][]int{}}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	err := eachMsg(ctx, st.js, streams.Events, func(m *jetstream.RawStreamMsg) {
		o.eventsN++
		env, snap, err := envelope.DecodeEvent(m.Data)
		if err != nil {
			o.undecod = append(o.undecod, fmt.Sprintf("EVENTS #%d %s: %v", m.Sequence, m.Subject, err))
			return
		}
		o.events[snap.ID] = append(o.events[snap.ID], event{StreamSeq: m.Sequence, Type: env.Type, Snap: snap})
	})
	if err != nil {
		return nil, err
	}
	// countJobs counts the job messages of a stream by job id.
	countJobs := func(stream, label string, into map[string]int) error {
		return eachMsg(ctx, st.js, stream, func(m *jetstream.RawStreamMsg) {
			if _, j, err := envelope.DecodeJob(m.Data); err == nil {
				into[j.ID]++
			} else {
				o.undecod = append(o.undecod, fmt.Sprintf("%s #%d: %v", label, m.Sequence, err))
			}
		})
	}
	if err := countJobs(streams.DLQ, "DLQ", o.dlq); err != nil {
		return nil, err
	}
	if err := countJobs(streams.Jobs, "JOBS", o.jobsLeft); err != nil {
		return nil, err
	}
	kv, err := st.js.KeyValue(ctx, streams.JobStatus)
	if err != nil {
		return nil, err
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		if strings.HasPrefix(k, "dlq.") {
			continue
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("job_status %s: %w", k, err)
		}
		snap, err := envelope.DecodeSnapshot(e.Value())
		if err != nil {
			o.undecod = append(o.undecod, fmt.Sprintf("job_status %s: %v", k, err))
			continue
		}
		o.kv[k] = snap
	}
	f, err := os.Open(st.callLog)
	if errors.Is(err, os.ErrNotExist) {
		return o, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		id, att, ok := strings.Cut(sc.Text(), " ")
		n, err := strconv.Atoi(att)
		if !ok || err != nil {
			continue // a line torn by a SIGKILL cannot happen (one write), but be lenient
		}
		o.calls[id] = append(o.calls[id], n)
	}
	return o, sc.Err()
}

// eachMsg reads every message of a stream by sequence.
func eachMsg(ctx context.Context, js jetstream.JetStream, name string, fn func(*jetstream.RawStreamMsg)) error {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return fmt.Errorf("stream %s: %w", name, err)
	}
	state := s.CachedInfo().State
	for seq := state.FirstSeq; state.Msgs > 0 && seq <= state.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("stream %s #%d: %w", name, seq, err)
		}
		fn(m)
	}
	return nil
}

// Violation kinds: one per promise.
const (
	vLost           = "lost"                       // a 202 that never reached a terminal state
	vNotTerminal    = "not_terminal"               // a job of EVENTS that is not terminal in job_status
	vSeqGap         = "events_seq_gap"             // EVENTS lacks a seq below the job's last
	vSeqDup         = "events_seq_duplicate"       // EVENTS holds a seq twice
	vSeqOrder       = "events_out_of_order"        // a seq stored after a higher one
	vKVAhead        = "kv_seq_without_event"       // job_status is at a seq EVENTS never got
	vTerminalCount  = "terminal_events"            // not exactly one terminal event, or one that is not last
	vKVMismatch     = "kv_event_mismatch"          // job_status and the last event disagree
	vTerminalChange = "terminal_changed"           // a terminal snapshot changed afterwards
	vDLQ            = "dlq_mismatch"               // dead and DLQ disagree
	vJobsLeft       = "jobs_message_left"          // a message left in JOBS after quiescence
	vCancelQueued   = "cancelled_queued_but_ran"   // DELETE said cancelled while queued, the provider was called
	vCancelFinal    = "cancel_not_final"           // DELETE said cancelled, the job ended otherwise
	vOutcome        = "impossible_outcome"         // an outcome the sim and the schedule cannot produce
	vClientGap      = "client_missed_events"       // a client lacks an event EVENTS holds
	vClientExtra    = "client_event_not_in_stream" // a client got a seq EVENTS does not hold, or other content
	vClientWire     = "client_protocol"            // duplicates on a job topic, wire gaps, order, recovered false
	vHTTP           = "http_answer"                // an HTTP answer that no fault excuses
)

type violation struct {
	kind, job, detail string
}

type report struct {
	r          *run
	violations []violation
	byJob      map[string][]violation
	figs       map[string]int
}

func (rep *report) add(kind, job, format string, args ...any) {
	v := violation{kind, job, fmt.Sprintf(format, args...)}
	rep.violations = append(rep.violations, v)
	rep.byJob[job] = append(rep.byJob[job], v)
}

func (rep *report) kinds() map[string]int {
	m := map[string]int{}
	for _, v := range rep.violations {
		m[v.kind]++
	}
	return m
}

// check asserts every promise for every job.
func (r *run) check(o *observed) *report {
	rep := &report{r: r, byJob: map[string][]violation{}, figs: map[string]int{}}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range r.badAnswers {
		rep.add(vHTTP, "-", "%s", a)
	}
	for _, s := range o.undecod {
		rep.add(vClientExtra, "-", "undecodable: %s", s)
	}
	// Every job anyone knows of: accepted, in EVENTS, in job_status.
	all := map[string]bool{}
	for id := range r.accepted {
		all[id] = true
	}
	for id := range o.events {
		all[id] = true
	}
	for id := range o.kv {
		all[id] = true
	}
	for id := range all {
		r.checkJob(rep, o, id)
	}
	for id, n := range o.dlq {
		if snap, ok := o.kv[id]; !ok || snap.Status != envelope.StatusDead {
			rep.add(vDLQ, id, "in DLQ %d time(s), but job_status holds %q", n, snap.Status)
		}
	}
	r.checkClients(rep, o)
	return rep
}

func (r *run) checkJob(rep *report, o *observed, id string) {
	aj := r.accepted[id]
	evs := o.events[id]
	snap, inKV := o.kv[id]
	if inKV {
		rep.figs["status_"+string(snap.Status)]++
	}
	switch {
	case aj != nil && (!inKV || !snap.Status.Terminal()):
		rep.add(vLost, id, "accepted (202) but job_status holds %v (stored: %v)", snap.Status, inKV)
	case aj == nil && inKV && !snap.Status.Terminal():
		rep.add(vNotTerminal, id, "job_status holds %s", snap.Status)
	}
	// EVENTS: seqs 1..N, each once, in stream order; exactly one terminal
	// event and it is the last.
	seen := map[uint64]bool{}
	var prev uint64
	terminals := 0
	for i, e := range evs {
		s := e.Snap.Seq
		switch {
		case seen[s]:
			rep.add(vSeqDup, id, "seq %d stored twice (stream #%d)", s, e.StreamSeq)
		case s < prev:
			rep.add(vSeqOrder, id, "seq %d stored after seq %d (stream #%d)", s, prev, e.StreamSeq)
		}
		seen[s] = true
		prev = max(prev, s)
		if e.Snap.Status.Terminal() {
			terminals++
			if i != len(evs)-1 {
				rep.add(vTerminalCount, id, "events after the terminal %s (seq %d)", e.Snap.Status, s)
			}
		}
		if e.Type != jobstoreType(e.Snap) {
			rep.add(vKVMismatch, id, "event seq %d of type %s carries status %s", s, e.Type, e.Snap.Status)
		}
	}
	var missing []string
	for k := uint64(1); k <= prev; k++ {
		if !seen[k] {
			missing = append(missing, strconv.FormatUint(k, 10))
		}
	}
	if len(missing) > 0 {
		rep.add(vSeqGap, id, "EVENTS lacks seq %s of 1..%d", strings.Join(missing, ","), prev)
	}
	if inKV && snap.Status.Terminal() && terminals != 1 {
		rep.add(vTerminalCount, id, "%d terminal events, job_status %s seq %d", terminals, snap.Status, snap.Seq)
	}
	if inKV {
		switch {
		case snap.Seq > prev:
			rep.add(vKVAhead, id, "job_status at seq %d (%s), EVENTS ends at seq %d", snap.Seq, snap.Status, prev)
		case snap.Seq < prev:
			rep.add(vKVMismatch, id, "job_status at seq %d (%s), EVENTS goes on to seq %d", snap.Seq, snap.Status, prev)
		case len(evs) > 0:
			last := evs[len(evs)-1].Snap
			if last.Seq == snap.Seq && (last.Status != snap.Status || last.Attempt != snap.Attempt) {
				rep.add(vKVMismatch, id, "job_status %s attempt %d, its event %s attempt %d", snap.Status, snap.Attempt, last.Status, last.Attempt)
			}
		}
	}
	r.kvWatch.mu.Lock()
	for _, c := range r.kvWatch.changed[id] {
		rep.add(vTerminalChange, id, "%s", c)
	}
	r.kvWatch.mu.Unlock()
	// DLQ: a dead job has exactly one copy there.
	if inKV && snap.Status == envelope.StatusDead && o.dlq[id] != 1 {
		rep.add(vDLQ, id, "dead, %d copies in DLQ", o.dlq[id])
	}
	if n := o.jobsLeft[id]; n > 0 {
		rep.add(vJobsLeft, id, "%d message(s) left in JOBS after quiescence", n)
	}
	calls := len(o.calls[id])
	if calls > 0 {
		rep.figs["provider_calls"] += calls
	}
	if aj == nil {
		return
	}
	// The cancel's answer is the job's fate; a cancel of a queued job
	// never reaches the provider.
	if c := aj.cancelled; c != nil {
		rep.figs["cancel_200"]++
		if c.Status != envelope.StatusCancelled {
			rep.add(vCancelFinal, id, "DELETE answered 200 with status %s", c.Status)
		} else if inKV && (snap.Status != envelope.StatusCancelled || snap.Seq != c.Seq) {
			rep.add(vCancelFinal, id, "DELETE answered cancelled seq %d, job_status holds %s seq %d", c.Seq, snap.Status, snap.Seq)
		}
		if c.Seq == 1 && c.Attempt == 0 {
			rep.figs["cancelled_queued"]++
			if calls > 0 {
				rep.add(vCancelQueued, id, "DELETE answered cancelled seq 1 attempt 0 (queued), yet the provider was called %d time(s) (attempts %v)", calls, o.calls[id])
			}
		}
	}
	if !inKV || !snap.Status.Terminal() {
		return
	}
	switch out := aj.plan.Outcome; {
	case snap.Status == envelope.StatusCancelled && aj.plan.CancelAfter < 0:
		rep.add(vOutcome, id, "cancelled, but nobody sent a DELETE")
	case snap.Status == envelope.StatusFailed && out != outTerminal:
		rep.add(vOutcome, id, "failed, but the sim (%s) never fails terminally: %s", out, snap.Error)
	case snap.Status == envelope.StatusSucceeded && (out == outTerminal || out == outDies):
		rep.add(vOutcome, id, "succeeded, but the sim (%s) cannot succeed", out)
	case snap.Status == envelope.StatusDead && out != outDies:
		// Legitimate: runs lost with a killed processor count as attempts.
		rep.figs["dead_unplanned"]++
	}
}

// jobstoreType is the event type that announces snap (what jobstore
// publishes for it).
func jobstoreType(snap envelope.Snapshot) envelope.Type {
	if snap.Status == envelope.StatusRunning && snap.Progress > 0 {
		return envelope.TypeProgress
	}
	return envelope.EventType(snap.Status)
}

// checkClients compares every client's view with EVENTS.
func (r *run) checkClients(rep *report, o *observed) {
	for _, c := range r.clients {
		views := c.snapshotViews()
		c.mu.Lock()
		rep.figs["ws_sessions"] += c.sessions
		rep.figs["ws_joins"] += c.joins
		for why, n := range c.refused {
			rep.figs["ws_join_refused_"+why] += n
		}
		var topics []string
		if !c.userTopic {
			topics = append(topics, c.topics...)
		}
		c.mu.Unlock()
		expect := map[string]uint64{} // job → base the client asked from
		if c.userTopic {
			for id, evs := range o.events {
				if len(evs) > 0 && evs[0].Snap.User == c.user {
					expect[id] = 0
				}
			}
		} else {
			for _, id := range topics {
				if v, ok := views[id]; ok {
					expect[id] = v.base
				} else {
					rep.add(vClientWire, id, "%s never managed to join job:%s", c.name, id)
				}
			}
		}
		if v, ok := views["*"]; ok {
			for _, p := range v.problems {
				rep.add(vClientWire, "-", "%s: %s", c.name, p)
			}
		}
		for id, v := range views {
			if id == "*" {
				continue
			}
			rep.figs["ws_events"] += len(v.arrivals)
			rep.figs["ws_duplicates"] += v.dups
			rep.figs["ws_unrecovered"] += v.unrecovered
			for _, p := range v.problems {
				rep.add(vClientWire, id, "%s: %s", c.name, p)
			}
			if _, ok := expect[id]; !ok {
				rep.add(vClientExtra, id, "%s got events of a job it does not watch or with no event in EVENTS", c.name)
			}
		}
		for id, base := range expect {
			v := views[id]
			bySeq := map[uint64]event{}
			var last uint64
			for _, e := range o.events[id] {
				bySeq[e.Snap.Seq] = e
				last = max(last, e.Snap.Seq)
			}
			var missing []string
			for k := base + 1; k <= last; k++ {
				g, ok := v.got[k]
				_, stored := bySeq[k]
				switch {
				case !stored || v.skipped[k]:
					// An EVENTS gap is reported as such; a seq the
					// notifier said it could not replay is covered by
					// the join's snapshot.
				case !ok:
					missing = append(missing, strconv.FormatUint(k, 10))
				case g.Status != bySeq[k].Snap.Status:
					rep.add(vClientExtra, id, "%s got seq %d as %s, EVENTS holds %s", c.name, k, g.Status, bySeq[k].Snap.Status)
				}
			}
			if len(missing) > 0 {
				rep.add(vClientGap, id, "%s (asked from seq %d) never got seq %s of %d", c.name, base, strings.Join(missing, ","), last)
			}
			for k := range v.got {
				if _, ok := bySeq[k]; !ok {
					rep.add(vClientExtra, id, "%s got seq %d, which EVENTS does not hold", c.name, k)
				}
			}
		}
	}
}

// figures is the one-line summary.
func (rep *report) figures(seed uint64, d, elapsed time.Duration) string {
	r := rep.r
	r.mu.Lock()
	defer r.mu.Unlock()
	f := rep.figs
	return fmt.Sprintf("faults: seed=%d schedule=%s accepted=%d not_accepted=%d refused_retried=%d "+
		"succeeded=%d failed=%d dead=%d dead_unplanned=%d cancelled=%d cancel_200=%d cancelled_queued=%d provider_calls=%d "+
		"faults=%s fault_errors=%d ws_clients=%d ws_sessions=%d ws_joins=%d ws_events=%d ws_duplicates=%d ws_unrecovered=%d "+
		"kv_updates_watched=%d violations=%d (%s) elapsed=%s",
		seed, d, len(r.accepted), len(r.unaccepted), r.refused.Load(),
		f["status_succeeded"], f["status_failed"], f["status_dead"], f["dead_unplanned"], f["status_cancelled"],
		f["cancel_200"], f["cancelled_queued"], f["provider_calls"],
		countList(r.faultsDone), len(r.faultErrs), len(r.clients), f["ws_sessions"], f["ws_joins"], f["ws_events"], f["ws_duplicates"], f["ws_unrecovered"],
		r.kvWatch.count(), len(rep.violations), countList(rep.kinds()), elapsed.Round(time.Second))
}

// explain logs the violating jobs (a few of each kind) with their plan,
// answers and history.
func (rep *report) explain(t *testing.T, o *observed) {
	t.Helper()
	// At most perKind jobs of each violation kind, the rarest kinds first:
	// a flood of one known bug must not hide a new one.
	const perKind = 5
	kinds := rep.kinds()
	order := make([]string, 0, len(kinds))
	for k := range kinds {
		order = append(order, k)
	}
	sort.Slice(order, func(i, j int) bool {
		if kinds[order[i]] != kinds[order[j]] {
			return kinds[order[i]] < kinds[order[j]]
		}
		return order[i] < order[j]
	})
	shown := map[string]bool{}
	var ids []string
	for _, k := range order {
		n := 0
		for _, v := range rep.violations {
			if v.kind != k || v.job == "-" {
				continue
			}
			if n == perKind {
				t.Logf("%s: %d more violations not shown", k, kinds[k]-n)
				break
			}
			n++
			if !shown[v.job] {
				shown[v.job] = true
				ids = append(ids, v.job)
			}
		}
	}
	for _, id := range ids {
		t.Log(rep.jobText(id, o))
	}
	if v := rep.byJob["-"]; len(v) > 0 {
		t.Logf("violations without a job: %v", v)
	}
}

// jobText is one violating job: its violations, plan, answers and history.
func (rep *report) jobText(id string, o *observed) string {
	r := rep.r
	var b strings.Builder
	fmt.Fprintf(&b, "job %s:\n", id)
	for _, v := range rep.byJob[id] {
		fmt.Fprintf(&b, "  VIOLATION %s: %s\n", v.kind, v.detail)
	}
	r.mu.Lock()
	if aj := r.accepted[id]; aj != nil {
		p := aj.plan
		fmt.Fprintf(&b, "  plan: #%d at %s (202 at %s) user %s %s/%s outcome %s sim %v cancel_after %s watch %v\n",
			p.N, p.At.Round(time.Millisecond), aj.acceptedAt.Round(time.Millisecond), p.User, p.Priority, p.Kind, p.Outcome, p.Sim, p.CancelAfter, p.Watch)
		if len(aj.deletes) > 0 {
			fmt.Fprintf(&b, "  DELETE answers %v", aj.deletes)
			if aj.cancelled != nil {
				fmt.Fprintf(&b, ", 200 body: %s seq %d attempt %d", aj.cancelled.Status, aj.cancelled.Seq, aj.cancelled.Attempt)
			}
			b.WriteString("\n")
		}
	}
	r.mu.Unlock()
	if snap, ok := o.kv[id]; ok {
		fmt.Fprintf(&b, "  job_status: %s seq %d attempt %d\n", snap.Status, snap.Seq, snap.Attempt)
	}
	fmt.Fprintf(&b, "  provider calls (attempts): %v; DLQ copies %d; JOBS left %d\n", o.calls[id], o.dlq[id], o.jobsLeft[id])
	for _, e := range o.events[id] {
		fmt.Fprintf(&b, "  event %s\n", e)
	}
	return b.String()
}

// writeAll writes every violating job to dir/faults-violations.txt.
func (rep *report) writeAll(dir string, o *observed) error {
	ids := make([]string, 0, len(rep.byJob))
	for id := range rep.byJob {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(rep.jobText(id, o))
		b.WriteString("\n")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "faults-violations.txt"), []byte(b.String()), 0o644)
}
