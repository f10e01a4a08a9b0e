package notifier

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/pkg/envelope"
)

type sseEvent struct{ id, event, data string }

func readSSE(t *testing.T, resp *http.Response) []sseEvent {
	t.Helper()
	var out []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.id != "" {
				out = append(out, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, "id: "):
			cur.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			cur.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			cur.data = line[6:]
		}
	}
	return out
}

func TestSSEWithLastEventID(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	id := w.newJob(t, "alice")
	w.start(t, id)
	w.progress(t, id, 30)
	w.progress(t, id, 60)

	req, _ := http.NewRequest("GET", n.url+"/v1/jobs/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+token(t, "alice", false))
	req.Header.Set("Last-Event-ID", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	go w.succeed(t, id)
	evs := readSSE(t, resp) // ends after the terminal event
	var ids, types []string
	for _, e := range evs {
		ids, types = append(ids, e.id), append(types, e.event)
	}
	if strings.Join(ids, ",") != "2,3,4" || strings.Join(types, ",") != "progress,progress,succeeded" {
		t.Fatalf("ids %v types %v", ids, types)
	}
	if !strings.Contains(evs[2].data, `"status":"succeeded"`) || !strings.Contains(evs[2].data, `"seq":4`) {
		t.Fatalf("data %s", evs[2].data)
	}

	// A finished job: the terminal snapshot, then the end.
	resp2, err := http.Get(n.url + "/v1/jobs/" + id + "/events?token=" + token(t, "alice", false))
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	if evs := readSSE(t, resp2); len(evs) != 1 || evs[0].event != "succeeded" || evs[0].id != "4" {
		t.Fatalf("%+v", evs)
	}
	for tok, want := range map[string]int{"": 401, token(t, "bob", false): 403} {
		resp, err := http.Get(n.url + "/v1/jobs/" + id + "/events?token=" + tok)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("token %q: %d, want %d", tok, resp.StatusCode, want)
		}
	}
}

// TestSSEOneDataLinePerEvent: an event published raw to events.* (an admin
// may) with pretty-printed JSON still reaches an SSE client as one data:
// line per event, replayed or live.
func TestSSEOneDataLinePerEvent(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	id := w.newJob(t, "alice")
	publishIndented := func(typ envelope.Type, status envelope.Status, seq uint64) {
		snap := envelope.Snapshot{ID: id, User: "alice", Kind: "image", Priority: envelope.PriorityNormal, Status: status, Seq: seq, Attempt: 1}
		m, err := envelope.NewEventMsg(typ, snap, "/admin", "")
		if err != nil {
			t.Error(err)
			return
		}
		var pretty bytes.Buffer
		if err := json.Indent(&pretty, m.Data, "", "  "); err != nil {
			t.Error(err)
			return
		}
		m.Data = pretty.Bytes()
		if _, err := w.js.PublishMsg(context.Background(), m); err != nil {
			t.Error(err)
		}
	}
	publishIndented(envelope.TypeStarted, envelope.StatusRunning, 1) // replayed
	req, _ := http.NewRequest("GET", n.url+"/v1/jobs/"+id+"/events?token="+token(t, "alice", false), nil)
	req.Header.Set("Last-Event-ID", "0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	published := make(chan struct{})
	go func() { // live
		defer close(published)
		publishIndented(envelope.TypeSucceeded, envelope.StatusSucceeded, 2)
	}()
	evs := readSSE(t, resp)
	<-published // its PubAck may come after the push: wait before the connection closes
	if len(evs) != 2 {
		t.Fatalf("%+v", evs)
	}
	for _, e := range evs {
		var p push
		if err := json.Unmarshal([]byte(e.data), &p); err != nil || strconv.FormatUint(p.Seq, 10) != e.id {
			t.Fatalf("event %s: data %q is not the whole push (%v)", e.id, e.data, err)
		}
	}
}

// TestSSEWhileEventsArrive: SSE streams opened while their job is busy
// (run with -race: the stream's state is shared with the live path).
func TestSSEWhileEventsArrive(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	tok := token(t, "alice", false)
	for range 10 {
		id := w.newJob(t, "alice")
		w.start(t, id)
		resp, err := http.Get(n.url + "/v1/jobs/" + id + "/events?token=" + tok)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range 3 {
				w.progress(t, id, p+1)
			}
			w.succeed(t, id)
		}()
		evs := readSSE(t, resp)
		resp.Body.Close()
		wg.Wait()
		if len(evs) == 0 || evs[len(evs)-1].event != "succeeded" {
			t.Fatalf("%+v", evs)
		}
	}
}

// TestSSECaughtUpOnFinishedJob: SSE streams resuming a finished job at its
// last seq while (stray, later-seq) events of the job keep arriving: the
// handler's end-of-stream check and the live path share the stream's
// position (run with -race).
func TestSSECaughtUpOnFinishedJob(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	id := w.newJob(t, "alice")
	w.start(t, id)
	final := w.succeed(t, id)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		snap := final
		snap.Status = envelope.StatusRunning // not terminal: the stream goes on past them
		for i := 0; i < 2000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			snap.Seq++
			m, err := envelope.NewEventMsg(envelope.TypeProgress, snap, "/test", "")
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := w.js.PublishMsg(context.Background(), m); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	tok := token(t, "alice", false)
	for range 30 {
		req, _ := http.NewRequest("GET", n.url+"/v1/jobs/"+id+"/events?token="+tok, nil)
		req.Header.Set("Last-Event-ID", "2")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readSSE(t, resp)
		resp.Body.Close()
	}
	close(stop)
	wg.Wait()
}

// TestSSETimelineTraceAndProvider: the job-detail timeline reads
// GET /v1/jobs/{id}/events from seq 0; every event names the trace of the
// write that produced it (the trace id of its message's traceparent) and
// the provider its snapshot records, replayed and live alike.
func TestSSETimelineTraceAndProvider(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	kv, err := jsm.JobStatus(context.Background(), w.js)
	if err != nil {
		t.Fatal(err)
	}
	traced := jobstore.New(w.js, kv, jobstore.Config{Source: "/test",
		Traceparent: func(context.Context) string { return "00-" + traceID + "-00f067aa0ba902b7-01" }})
	id := w.newJob(t, "alice")
	run := func(typ envelope.Type, m jobstore.Mutation) {
		t.Helper()
		if _, err := traced.Apply(context.Background(), id, nil, typ, func(s *envelope.Snapshot) error {
			s.Provider = "sim"
			return m(s)
		}); err != nil {
			t.Error(err)
		}
	}
	run(envelope.TypeStarted, func(s *envelope.Snapshot) error {
		s.Status, s.Attempt = envelope.StatusRunning, 1
		return nil
	})
	run(envelope.TypeProgress, func(s *envelope.Snapshot) error { s.Progress = 50; return nil })

	req, _ := http.NewRequest("GET", n.url+"/v1/jobs/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+token(t, "admin", true))
	req.Header.Set("Last-Event-ID", "0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	go run(envelope.TypeSucceeded, func(s *envelope.Snapshot) error {
		s.Status, s.Progress = envelope.StatusSucceeded, 100
		return nil
	})
	evs := readSSE(t, resp)
	if len(evs) != 3 {
		t.Fatalf("%d events, want started, progress, succeeded: %+v", len(evs), evs)
	}
	for _, e := range evs {
		var p struct {
			TraceID string `json:"trace_id"`
			Job     envelope.Snapshot
		}
		if err := json.Unmarshal([]byte(e.data), &p); err != nil {
			t.Fatalf("event %s: %v", e.id, err)
		}
		if p.TraceID != traceID || p.Job.Provider != "sim" {
			t.Errorf("event %s (%s): trace_id %q provider %q, want %q and sim", e.id, e.event, p.TraceID, p.Job.Provider, traceID)
		}
	}

	// An event without a traceparent has no trace_id at all.
	id2 := w.newJob(t, "alice")
	w.start(t, id2)
	w.succeed(t, id2)
	req2, _ := http.NewRequest("GET", n.url+"/v1/jobs/"+id2+"/events", nil)
	req2.Header.Set("Authorization", "Bearer "+token(t, "alice", false))
	req2.Header.Set("Last-Event-ID", "0")
	resp2, err := http.DefaultClient.Do(req2)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	evs2 := readSSE(t, resp2)
	if len(evs2) != 2 {
		t.Fatalf("%d events replayed, want started and succeeded: %+v", len(evs2), evs2)
	}
	for _, e := range evs2 {
		if strings.Contains(e.data, "trace_id") {
			t.Errorf("event %s without a traceparent: %s", e.id, e.data)
		}
	}
}
