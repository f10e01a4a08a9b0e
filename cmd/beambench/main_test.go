package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestShort runs every scenario in -short mode, further shrunk so it stays
// well under a minute under -race, and checks that each produced figures in
// both output forms. It asserts nothing about the figures themselves.
func TestShort(t *testing.T) {
	o := shortOptions()
	o.scenarios = scenarios
	o.ingestConc = []int{1, 4}
	o.ingestDur = 300 * time.Millisecond
	o.pipeJobs, o.pipeRate, o.pipeDur = 200, 50, 600*time.Millisecond
	o.pushClients, o.pushLatClients, o.pushRate, o.pushDur = 20, 10, 100, 600*time.Millisecond
	o.pollJobs, o.pollDur = 3, 3*time.Second
	o.provWaiting, o.provOutputMB, o.provRangeReqs, o.provPushJobs = 100, 1, 4, 5
	o.presMembers, o.presChanges, o.presChurn = 40, 40, 8
	o.deadline = 100 * time.Second

	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := bench(ctx, &o, &out, &errOut); err != nil {
		t.Fatalf("bench: %v\nstderr:\n%s\nstdout:\n%s", err, errOut.String(), out.String())
	}
	seen := map[string]int{}
	for _, line := range strings.Split(out.String(), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var r Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("bad JSON line %q: %v", line, err)
		}
		if r.Figure == "" || r.Unit == "" {
			t.Errorf("incomplete figure: %s", line)
		}
		seen[r.Scenario]++
	}
	for _, s := range scenarios {
		if seen[s] == 0 {
			t.Errorf("scenario %s printed no figures", s)
		}
		if !strings.Contains(out.String(), "| "+s+" |") {
			t.Errorf("scenario %s missing from the table", s)
		}
	}
}

func TestParse(t *testing.T) {
	var errOut bytes.Buffer
	if _, err := parse([]string{"-scenarios", "nope"}, &errOut); err == nil {
		t.Error("unknown scenario accepted")
	}
	o, err := parse([]string{"-short", "-scenarios", "push,polling"}, &errOut)
	if err != nil || !o.short || len(o.scenarios) != 2 || o.ingestClient != "lean" {
		t.Errorf("parse: %+v %v", o, err)
	}
	if o, err := parse([]string{"-ingest-client", "std"}, &errOut); err != nil || o.ingestClient != "std" {
		t.Errorf("-ingest-client std: %+v %v", o, err)
	}
	if _, err := parse([]string{"-ingest-client", "curl"}, &errOut); err == nil {
		t.Error("-ingest-client curl accepted")
	}
	if o, err := parse([]string{"-presence-client", "std"}, &errOut); err != nil || o.presClient != "std" {
		t.Errorf("-presence-client std: %+v %v", o, err)
	}
	if _, err := parse([]string{"-presence-client", "ws"}, &errOut); err == nil {
		t.Error("-presence-client ws accepted")
	}
}

func TestQuantile(t *testing.T) {
	l := newLatencies(10)
	for i := 1; i <= 12; i++ {
		l.add(time.Duration(i) * time.Millisecond)
	}
	if l.len() != 10 || l.quantile(0.5) != 5 || l.quantile(1) != 10 || l.mean() != 5.5 {
		t.Errorf("len %d p50 %v max %v mean %v", l.len(), l.quantile(0.5), l.quantile(1), l.mean())
	}
}

// Both HTTP load generators submit real jobs that ingest accepts.
func TestIngestClients(t *testing.T) {
	o := shortOptions()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tg, err := startTarget(ctx, &o, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer tg.close()
	tok := tg.token("clienttest")
	for _, client := range []string{"lean", "std"} {
		rate, rejected, err := ingestHTTP(ctx, tg, tok, 2, 300*time.Millisecond, client)
		if err != nil || rate <= 0 || rejected != 0 {
			t.Errorf("%s: %.0f jobs/s, %d rejected, %v", client, rate, rejected, err)
		}
	}
}

// -ingest-no-raw measures the HTTP submissions alone (no baseline, so no
// ratio) and -memprofile writes an allocation profile at the end.
func TestIngestNoRawMemprofile(t *testing.T) {
	o := shortOptions()
	o.scenarios, o.ingestConc, o.ingestDur, o.ingestNoRaw = []string{"ingest"}, []int{2}, 300*time.Millisecond, true
	o.memProfile = filepath.Join(t.TempDir(), "allocs.pb.gz")
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := bench(ctx, &o, &out, &errOut); err != nil {
		t.Fatalf("bench: %v\nstderr:\n%s", err, errOut.String())
	}
	var res Result
	line, _, _ := strings.Cut(out.String(), "\n")
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	if res.Value <= 0 || res.Baseline == nil || *res.Baseline != 0 || res.Ratio != nil {
		t.Errorf("want submissions and no baseline: %s", line)
	}
	if fi, err := os.Stat(o.memProfile); err != nil || fi.Size() == 0 {
		t.Errorf("memprofile: %v", err)
	}
}

// TestMain lets the test binary be the providers scenario's child process
// (it re-executes os.Executable(), this binary under go test).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "providers-processor" {
		if err := runProvidersProcessor(context.Background(), os.Args[2:], os.Stdin, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Both presence member clients join the room and see every change of a
// small storm: the scenario fails when a change reaches no member.
func TestShortPresenceClients(t *testing.T) {
	for _, client := range []string{"lean", "std"} {
		o := shortOptions()
		o.scenarios = []string{"presence"}
		o.presMembers, o.presChanges, o.presChurn, o.presClient = 10, 20, 4, client
		var out, errOut bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := bench(ctx, &o, &out, &errOut)
		cancel()
		if err != nil {
			t.Fatalf("%s: bench: %v\nstderr:\n%s", client, err, errOut.String())
		}
		if !strings.Contains(out.String(), `"member_client":"`+client+`"`) || !strings.Contains(out.String(), `"not_reaching_all":0`) {
			t.Errorf("%s: want every change to reach every member, got:\n%s", client, out.String())
		}
	}
}

// TestTallyTail: the last 1 % is timed from the hit that completed 99 %
// of the run to the last hit.
func TestTallyTail(t *testing.T) {
	tl := &tally{want: 200, done: make(chan struct{})}
	t0 := time.Unix(1000, 0)
	for i := range 200 {
		at := t0.Add(time.Duration(i) * time.Millisecond)
		if i == 199 {
			at = t0.Add(30 * time.Second) // a straggler, as after ack_wait
		}
		tl.hit(at)
	}
	tail, _ := tl.tail()
	if want := 30*time.Second - 197*time.Millisecond; tail != want {
		t.Fatalf("tail %v, want %v (from hit 198 to the last)", tail, want)
	}
	select {
	case <-tl.done:
	default:
		t.Fatal("done not closed after want hits")
	}
}
