package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// runJobctl measures issue 14's job control (docs/design.md#batches,
// #scheduled-jobs, #listing-a-users-jobs), each beside a same-run
// baseline:
//   - POST /v1/jobs/batch jobs/s, batches of each size, against raw
//     PublishMsgAsync of the same envelopes in batches of the same size
//     (all PubAcks of a batch awaited before the next), processor paused;
//   - start delay (first event − run_at) of jobs due within one second,
//     and the fire delay (the fired copy's store time − run_at), against
//     the same number of jobs published straight to JOBS at once (first
//     event − publish): what draining them costs without a schedule;
//   - GET /v1/jobs?limit=50 latency for a user with many jobs, at random
//     depths, against the two raw direct gets a page needs (50 index
//     entries from a sequence, then their 50 snapshots by multi_last).
func runJobctl(ctx context.Context, t *target, o *options, rep *reporter) error {
	if err := jobctlBatch(ctx, t, o, rep); err != nil {
		return fmt.Errorf("batch: %w", err)
	}
	if err := jobctlScheduled(ctx, t, o, rep); err != nil {
		return fmt.Errorf("scheduled: %w", err)
	}
	if err := jobctlList(ctx, t, o, rep); err != nil {
		return fmt.Errorf("list: %w", err)
	}
	return nil
}

// batchAnswer is the part of POST /v1/jobs/batch's answer the scenario reads.
type batchAnswer struct {
	Accepted int `json:"accepted"`
	Jobs     []struct {
		Status int `json:"status"`
		Job    *struct {
			ID string `json:"id"`
		} `json:"job"`
	} `json:"jobs"`
}

// postBatch posts one batch body and decodes the answer.
func postBatch(ctx context.Context, t *target, tok string, body []byte) (batchAnswer, error) {
	var ans batchAnswer
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.ingestURL+"/v1/jobs/batch", bytes.NewReader(body))
	if err != nil {
		return ans, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.http.Do(req)
	if err != nil {
		return ans, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return ans, err
	}
	if resp.StatusCode != http.StatusOK {
		return ans, fmt.Errorf("POST /v1/jobs/batch: %d %.200s", resp.StatusCode, b)
	}
	return ans, json.Unmarshal(b, &ans)
}

// batchBody is a batch of n no-op image jobs, each item with its own input
// (and run_at(i) when that is set).
func batchBody(n int, runAt func(i int) time.Time) []byte {
	var b strings.Builder
	b.WriteString(`{"jobs":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"kind":"image",`)
		if runAt != nil {
			b.WriteString(`"run_at":"` + runAt(i).Format(time.RFC3339Nano) + `",`)
		}
		b.WriteString(`"input":{"n":` + strconv.Itoa(i) + `}}`)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

func jobctlBatch(ctx context.Context, t *target, o *options, rep *reporter) error {
	resume, paused := t.pauseProcessor()
	defer func() {
		t.purge(context.WithoutCancel(ctx), imageSubjects)
		t.purge(context.WithoutCancel(ctx), rawSubjects)
		if err := resume(context.WithoutCancel(ctx)); err != nil {
			t.log.Warn("restart processor", "err", err)
		}
	}()
	tok := t.token("batchbench")
	for _, size := range o.jcBatchSizes {
		batches := max(1, o.jcBatchJobs/size)
		body := batchBody(size, nil)
		cpu0 := cpuTime()
		start := time.Now()
		for range batches {
			ans, err := postBatch(ctx, t, tok, body)
			if err != nil {
				return err
			}
			if ans.Accepted != size {
				return fmt.Errorf("batch of %d: %d accepted", size, ans.Accepted)
			}
		}
		viaHTTP := time.Since(start)
		cpu1 := cpuTime()

		// The raw baseline: the same envelopes (one per item, same input),
		// published asynchronously, each batch's PubAcks awaited together.
		raw, err := rawBatches(ctx, t, batches, size, false)
		if err != nil {
			return err
		}
		cpu2 := cpuTime()
		// And the same with each job's JOBINDEX entry (the envelope again)
		// behind it, as ingest writes them: what the second write costs.
		raw2, err := rawBatches(ctx, t, batches, size, true)
		if err != nil {
			return err
		}
		n := float64(batches * size)
		p := map[string]any{"batch": size, "batches": batches, "processor_paused": paused}
		if t.stack != nil {
			p["cpu_us_per_job"] = perOp(cpu1-cpu0, n/viaHTTP.Seconds(), viaHTTP)
			p["cpu_us_per_raw_publish"] = perOp(cpu2-cpu1, n/raw.Seconds(), raw)
		}
		rep.addVs("jobctl", fmt.Sprintf("batch jobs/s, batches of %d", size), n/viaHTTP.Seconds(), "jobs/s", n/raw.Seconds(), p)
		rep.addVs("jobctl", fmt.Sprintf("batch jobs/s, batches of %d, vs raw job+index", size), n/viaHTTP.Seconds(), "jobs/s", n/raw2.Seconds(),
			map[string]any{"batch": size, "batches": batches, "baseline": "raw async publish of each job's JOBS message and its JOBINDEX entry"})
	}
	return nil
}

// rawBatches publishes batches×size no-op envelopes to JOBS (kind
// benchraw, which nobody serves) asynchronously, awaiting each batch's
// PubAcks together, and, with index, each one's JOBINDEX entry behind it;
// it returns how long that took.
func rawBatches(ctx context.Context, t *target, batches, size int, index bool) (time.Duration, error) {
	run := fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffff)
	start := time.Now()
	for b := range batches {
		for i := range size {
			j := envelope.Job{ID: fmt.Sprintf("rb%s-%d-%d", run, b, i), User: "batchbench", Kind: rawKind,
				Priority: envelope.PriorityNormal, Input: []byte(`{"n":` + strconv.Itoa(i) + `}`), CreatedAt: time.Now().UTC()}
			m, err := envelope.NewJobMsg(j, "/beamline/beambench", "")
			if err != nil {
				return 0, err
			}
			if err := publishAsync(ctx, t, m); err != nil {
				return 0, err
			}
			if index {
				e := nats.NewMsg(envelope.IndexSubject(j.User, j.Kind))
				e.Data = m.Data
				e.Header.Set(envelope.HeaderMsgID, j.ID)
				if err := publishAsync(ctx, t, e); err != nil {
					return 0, err
				}
			}
		}
		select {
		case <-t.js.PublishAsyncComplete():
		case <-time.After(time.Minute):
			return 0, errors.New("raw batch: PubAcks missing after a minute")
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return time.Since(start), nil
}

// firstEvents reads the user's events until n jobs have one, and returns
// each job's first event's store time.
func firstEvents(ctx context.Context, t *target, user string, n int, timeout time.Duration) (map[string]time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := t.js.Stream(ctx, streams.Events)
	if err != nil {
		return nil, err
	}
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{envelope.UserEventsSubject(user)}})
	if err != nil {
		return nil, err
	}
	first := make(map[string]time.Time, n)
	for len(first) < n {
		if ctx.Err() != nil {
			return first, fmt.Errorf("%d of %d jobs started: %w", len(first), n, ctx.Err())
		}
		batch, err := c.Fetch(1000, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			return first, err
		}
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			// events.<user>.<job>
			id := m.Subject()[strings.LastIndexByte(m.Subject(), '.')+1:]
			if _, ok := first[id]; !ok {
				first[id] = meta.Timestamp
			}
		}
	}
	return first, nil
}

func jobctlScheduled(ctx context.Context, t *target, o *options, rep *reporter) error {
	n := o.jcSchedJobs
	user := "schedbench" + strconv.FormatInt(time.Now().Unix()%100000, 10)
	tok := t.token(user)
	// Due within one whole second, far enough ahead to submit them all.
	lead := 3 * time.Second
	if n > 2000 {
		lead = 8 * time.Second
	}
	due := time.Now().Add(lead).Truncate(time.Second).Add(time.Second)
	runAt := func(i int) time.Time { return due.Add(time.Duration(i) * time.Second / time.Duration(n)) }
	runAts := make(map[string]time.Time, n)
	for done := 0; done < n; {
		size := min(1000, n-done)
		base := done
		ans, err := postBatch(ctx, t, tok, batchBody(size, func(i int) time.Time { return runAt(base + i) }))
		if err != nil {
			return err
		}
		for i, it := range ans.Jobs {
			if it.Status != http.StatusAccepted || it.Job == nil {
				return fmt.Errorf("scheduled item %d: %d", base+i, it.Status)
			}
			runAts[it.Job.ID] = runAt(base + i)
		}
		done += size
	}
	if time.Now().After(due) {
		return fmt.Errorf("submitting %d scheduled jobs took longer than %v", n, lead)
	}
	first, err := firstEvents(ctx, t, user, n, lead+2*time.Minute)
	if err != nil {
		return err
	}
	var start, early []time.Duration
	for id, at := range first {
		d := at.Sub(runAts[id])
		if d < 0 {
			early = append(early, d)
		}
		start = append(start, d)
	}
	// The fired copies, from SCHEDULED (schedfire.<job>.<priority>.<kind>).
	var fire []time.Duration
	rd := natsx.NewDirectReader(t.js, streams.Scheduled)
	from := due.Add(-time.Second)
	req := natsx.DirectGet{StartTime: &from, NextFor: "schedfire.>", Batch: 1000, MaxBytes: natsx.DirectMaxBytes}
	for seen := 0; seen < 10*n; {
		got := 0
		_, _, err := rd.Get(ctx, req,
			func(m *jetstream.RawStreamMsg) bool {
				got++
				req.StartTime, req.Seq = nil, m.Sequence+1
				toks := strings.Split(m.Subject, ".")
				if len(toks) > 1 {
					if at, ok := runAts[toks[1]]; ok {
						fire = append(fire, m.Time.Sub(at))
					}
				}
				return true
			})
		if err != nil || got == 0 {
			break
		}
		seen += got
	}
	p := map[string]any{"jobs": n, "due_within_s": 1, "started": len(first), "early": len(early), "fired_copies_read": len(fire),
		"processor_concurrency": o.procConcurrency, "delay": "first event stored − run_at"}

	// Baseline: as many jobs published straight to JOBS at once.
	buser := "schedraw" + strconv.FormatInt(time.Now().Unix()%100000, 10)
	published := make(map[string]time.Time, n)
	run := fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffff)
	for i := range n {
		id := fmt.Sprintf("sr%s-%d", run, i)
		j := envelope.Job{ID: id, User: buser, Kind: "image", Priority: envelope.PriorityNormal, Input: []byte(`{}`), CreatedAt: time.Now().UTC()}
		m, err := envelope.NewJobMsg(j, "/beamline/beambench", "")
		if err != nil {
			return err
		}
		published[id] = time.Now()
		if err := publishAsync(ctx, t, m); err != nil {
			return err
		}
	}
	bfirst, err := firstEvents(ctx, t, buser, n, 2*time.Minute)
	if err != nil {
		return err
	}
	var base []time.Duration
	for id, at := range bfirst {
		base = append(base, at.Sub(published[id]))
	}
	rep.addVs("jobctl", "scheduled start delay p50", quantileMS(start, .5), "ms", quantileMS(base, .5), p)
	rep.addVs("jobctl", "scheduled start delay p99", quantileMS(start, .99), "ms", quantileMS(base, .99), p)
	rep.add("jobctl", "scheduled fire delay p50", quantileMS(fire, .5), "ms", p)
	rep.add("jobctl", "scheduled fire delay p99", quantileMS(fire, .99), "ms", p)
	if len(early) > 0 {
		return fmt.Errorf("%d scheduled jobs started before their run_at", len(early))
	}
	return nil
}

func jobctlList(ctx context.Context, t *target, o *options, rep *reporter) error {
	n := o.jcListJobs
	user := "listbench" + strconv.FormatInt(time.Now().Unix()%100000, 10)
	others := n / 5
	run := fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffff)
	// Index entries and succeeded snapshots written straight to JOBINDEX
	// and job_status, as ingest and the processor write them: a user with
	// n finished jobs, among others' entries (one in six), the user's
	// jobs in single entries (as single submissions write them) or in
	// bundles of per jobs (as a batch writes them).
	per := min(max(o.jcListBundle, 1), 100)
	start := time.Now()
	var bundle []byte
	inBundle, entries := 0, 0
	publishEntry := func(m *nats.Msg) error {
		entries++
		if err := publishAsync(ctx, t, m); err != nil {
			return err
		}
		if entries%2000 == 1999 {
			select {
			case <-t.js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				return errors.New("index entries: PubAcks missing after a minute")
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	flush := func() error {
		if inBundle == 0 {
			return nil
		}
		m := nats.NewMsg(envelope.IndexSubject(user, "image"))
		m.Data = bundle
		m.Header.Set(envelope.HeaderIndexBundle, strconv.Itoa(inBundle))
		bundle, inBundle = nil, 0
		return publishEntry(m)
	}
	for i := range n + others {
		u := user
		if i%6 == 5 && others > 0 {
			u = "listother"
		}
		j := envelope.Job{ID: fmt.Sprintf("lb%s-%d", run, i), User: u, Kind: "image", Priority: envelope.PriorityNormal,
			Input: []byte(`{}`), CreatedAt: time.Now().UTC()}
		body, err := envelope.EncodeJob(j, "/beamline/beambench")
		if err != nil {
			return err
		}
		snap := envelope.NewSnapshot(j)
		snap.Status, snap.Seq = envelope.StatusSucceeded, 1
		sb, err := snap.Marshal()
		if err != nil {
			return err
		}
		if err := publishAsync(ctx, t, &nats.Msg{Subject: envelope.KVKeySubject(streams.JobStatus, j.ID), Data: sb}); err != nil {
			return err
		}
		if u == user && per > 1 {
			bundle = envelope.AppendIndexRecord(bundle, j.ID, body)
			if inBundle++; inBundle == per {
				if err := flush(); err != nil {
					return err
				}
			}
			continue
		}
		m := nats.NewMsg(envelope.IndexSubject(j.User, j.Kind))
		m.Data = body
		m.Header.Set(envelope.HeaderMsgID, j.ID)
		if err := publishEntry(m); err != nil {
			return err
		}
	}
	if err := flush(); err != nil {
		return err
	}
	select {
	case <-t.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		return errors.New("index entries: PubAcks missing after a minute")
	}
	fill := time.Since(start)
	st, err := t.js.Stream(ctx, streams.JobIndex)
	if err != nil {
		return err
	}
	state := st.CachedInfo().State
	lo := state.LastSeq - uint64(entries) + 200 // deep enough for a full page
	tok := t.token(user)
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 14))
	kvStream := "KV_" + streams.JobStatus
	rdIndex, rdKV := natsx.NewDirectReader(t.js, streams.JobIndex), natsx.NewDirectReader(t.js, kvStream)
	var api, raw []time.Duration
	firstPage := 0
	for r := range o.jcListReqs {
		q := url.Values{"limit": {"50"}}
		cursor := uint64(0)
		if r%3 != 0 {
			cursor = lo + rnd.Uint64N(state.LastSeq-lo)
			q.Set("cursor", strconv.FormatUint(cursor, 10))
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.ingestURL+"/v1/jobs?"+q.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		t0 := time.Now()
		resp, err := t.http.Do(req)
		if err != nil {
			return err
		}
		var page struct {
			Jobs []json.RawMessage `json:"jobs"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		d := time.Since(t0)
		if err != nil || resp.StatusCode != http.StatusOK || len(page.Jobs) != 50 {
			return fmt.Errorf("GET /v1/jobs (cursor %d): %d, %d jobs, %v", cursor, resp.StatusCode, len(page.Jobs), err)
		}
		api = append(api, d)
		if cursor == 0 {
			firstPage++
		}

		// The raw reads of a page: 50 entries forward from a sequence, and
		// their snapshots in one multi_last.
		from := max(state.FirstSeq, lo+rnd.Uint64N(state.LastSeq-lo)-300)
		t0 = time.Now()
		var keys []string
		if _, _, err := rdIndex.Get(ctx, natsx.DirectGet{Seq: from, NextFor: envelope.UserIndexFilter(user), Batch: (50+per-1)/per + 1, MaxBytes: natsx.DirectMaxBytes},
			func(m *jetstream.RawStreamMsg) bool {
				if m.Header.Get(envelope.HeaderIndexBundle) == "" {
					keys = append(keys, envelope.KVKeySubject(streams.JobStatus, m.Header.Get(envelope.HeaderMsgID)))
				} else if recs, err := envelope.DecodeIndexBundle(m.Data); err == nil {
					for _, r := range recs {
						keys = append(keys, envelope.KVKeySubject(streams.JobStatus, r.ID))
					}
				}
				keys = keys[:min(len(keys), 50)]
				return len(keys) < 50
			}); err != nil {
			return err
		}
		got := 0
		if _, _, err := rdKV.Get(ctx, natsx.DirectGet{MultiLast: keys, Batch: 50, MaxBytes: natsx.DirectMaxBytes},
			func(*jetstream.RawStreamMsg) bool { got++; return true }); err != nil {
			return err
		}
		raw = append(raw, time.Since(t0))
		if got != len(keys) || got == 0 {
			return fmt.Errorf("raw page: %d entries, %d snapshots", len(keys), got)
		}
	}
	p := map[string]any{"user_jobs": n, "jobs_per_entry": per, "index_entries": entries, "other_entries": others, "requests": len(api), "first_page_requests": firstPage,
		"limit": 50, "fill_s": fill.Seconds(), "baseline": "direct get of 50 jobs' entries + multi_last of their snapshots"}
	rep.addVs("jobctl", "GET /v1/jobs p50", quantileMS(api, .5), "ms", quantileMS(raw, .5), p)
	rep.addVs("jobctl", "GET /v1/jobs p99", quantileMS(api, .99), "ms", quantileMS(raw, .99), p)
	return nil
}
