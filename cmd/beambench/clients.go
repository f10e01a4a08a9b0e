package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beamline/beamline/internal/phoenix/phoenixtest"
)

// envClientToken passes the token to push-clients children (never a flag,
// which would show in ps).
const envClientToken = "BEAMLINE_BENCH_TOKEN"

// clientSet is a set of WebSocket clients, each joined to one job topic,
// recording publish→receipt latency of the pushes they get.
type clientSet struct {
	conns    []benchClient
	lat      *latencies
	received atomic.Int64
	failed   int
	firstErr error
}

// benchClient is one of the push scenario's WebSocket clients.
type benchClient interface {
	heartbeat()
	close()
	abort()
}

// stdClient is phoenixtest's client (gorilla/websocket, every frame
// decoded into a phoenixtest.Frame and the push's JSON decoded again).
type stdClient struct{ c *phoenixtest.Client }

func (s stdClient) heartbeat() { s.c.Heartbeat() }
func (s stdClient) close()     { s.c.Close() }
func (s stdClient) abort()     { s.c.Abort() }

// leanJobEvent marks a job push for a lean client; leanUpdatedAt precedes
// the snapshot's updated_at, the event's publish time.
var (
	leanJobEvent  = []byte(`,"job",`)
	leanUpdatedAt = []byte(`"updated_at":"`)
)

// leanPushTime returns the updated_at of the job push frame b.
func leanPushTime(b []byte) (time.Time, bool) {
	i := bytes.Index(b, leanUpdatedAt)
	if i < 0 {
		return time.Time{}, false
	}
	b = b[i+len(leanUpdatedAt):]
	j := bytes.IndexByte(b, '"')
	if j < 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(b[:j]))
	return t, err == nil
}

// openClients connects one client per id (conc dials at a time) and joins
// job:<id>. It returns with whatever connected; failed counts the rest.
// lean clients are leanMembers (presence_lean.go): they read the frames
// themselves and find a push's updated_at by a byte search, so that the
// clients' own CPU and garbage, on the machine's two cores with the
// notifier, weigh less on what they measure; std clients are phoenixtest's.
func openClients(ctx context.Context, notifierURL, token string, ids []string, conc int, lean bool) *clientSet {
	cs := &clientSet{lat: newLatencies(1 << 21)}
	onPush := func(f *phoenixtest.Frame, at time.Time) {
		if p, ok := decodeJobPush(f); ok {
			cs.received.Add(1)
			cs.lat.add(at.Sub(p.Job.UpdatedAt))
		}
	}
	onLean := func(b []byte, at time.Time) {
		if t, ok := leanPushTime(b); ok {
			cs.received.Add(1)
			cs.lat.add(at.Sub(t))
		}
	}
	dial := func(id string) (benchClient, error) {
		if lean {
			m, err := dialLeanMember(ctx, notifierURL, token, leanJobEvent, onLean)
			if err != nil {
				return nil, err
			}
			if err := m.join(ctx, "job:"+id); err != nil {
				m.abort()
				return nil, err
			}
			return m, nil
		}
		c, err := dialWS(ctx, notifierURL, token, nil, onPush)
		if err != nil {
			return nil, err
		}
		if err := joinWS(ctx, c, "job:"+id); err != nil {
			c.Close()
			return nil, err
		}
		return stdClient{c}, nil
	}
	var mu sync.Mutex
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for _, id := range ids {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := dial(id)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				cs.failed++
				if cs.firstErr == nil {
					cs.firstErr = err
				}
				return
			}
			cs.conns = append(cs.conns, c)
		}()
	}
	wg.Wait()
	cs.failed += len(ids) - len(cs.conns) - cs.failed
	return cs
}

// heartbeats keeps the clients past the notifier's idle timeout until ctx
// ends, sending each a heartbeat every 25 s, spread over the interval.
func (cs *clientSet) heartbeats(ctx context.Context) {
	const every = 25 * time.Second
	for ctx.Err() == nil {
		step := every / time.Duration(max(1, len(cs.conns)))
		for _, c := range cs.conns {
			select {
			case <-ctx.Done():
				return
			case <-time.After(step):
			}
			c.heartbeat()
		}
	}
}

func (cs *clientSet) close() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for _, c := range cs.conns {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c.close()
		}()
	}
	wg.Wait()
}

// childReady and childResult are the lines a push-clients child prints.
type childReady struct {
	Ready  int    `json:"ready"`
	Failed int    `json:"failed"`
	Err    string `json:"err,omitempty"`
}

type childResult struct {
	Received int64   `json:"received"`
	LatUS    []int64 `json:"lat_us"`
}

// runPushClients is the child process: it connects -count clients to job
// topics <prefix><from>…, prints a ready line, keeps them alive until its
// stdin closes (or says "stop"), then prints the latencies it saw.
func runPushClients(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("beambench push-clients", flag.ContinueOnError)
	fs.SetOutput(stderr)
	notifierURL := fs.String("notifier", "", "notifier base URL")
	prefix := fs.String("prefix", "", "job id prefix")
	from := fs.Int("from", 0, "first job index")
	count := fs.Int("count", 0, "number of clients (each joins job:<prefix><index>)")
	conc := fs.Int("dial-concurrency", 64, "dials in flight")
	limit := fs.Duration("max-life", 30*time.Minute, "exit after this long whatever happens")
	lean := fs.Bool("lean", false, "lean clients (see -push-client)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	token := os.Getenv(envClientToken)
	if *notifierURL == "" || token == "" || *count <= 0 {
		return fmt.Errorf("push-clients needs -notifier, -count and $%s", envClientToken)
	}
	raiseFileLimit(nil)
	ctx, cancel := context.WithTimeout(ctx, *limit)
	defer cancel()
	ids := make([]string, *count)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%d", *prefix, *from+i)
	}
	cs := openClients(ctx, *notifierURL, token, ids, *conc, *lean)
	ready := childReady{Ready: len(cs.conns), Failed: cs.failed}
	if cs.firstErr != nil {
		ready.Err = cs.firstErr.Error()
	}
	enc := json.NewEncoder(stdout)
	if err := enc.Encode(ready); err != nil {
		return err
	}
	hctx, hcancel := context.WithCancel(ctx)
	go cs.heartbeats(hctx)
	stopped := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdin)
		for sc.Scan() && sc.Text() != "stop" {
		}
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
	}
	hcancel()
	res := childResult{Received: cs.received.Load()}
	cs.lat.mu.Lock()
	for _, d := range cs.lat.d {
		res.LatUS = append(res.LatUS, d.Microseconds())
	}
	cs.lat.mu.Unlock()
	err := enc.Encode(res)
	for _, c := range cs.conns {
		c.abort()
	}
	return err
}
