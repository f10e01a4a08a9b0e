package natsx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bounds of one batched direct get.
const (
	// DirectBatch is how many messages one ReadFrom request asks for.
	DirectBatch = 256
	// DirectMaxBytes bounds the payload bytes one batch may carry.
	DirectMaxBytes = 4 << 20
	// multiLastChunk is how many subjects one multi_last request names
	// (the server answers at most 1024 messages per request).
	multiLastChunk = 256
)

// ErrDirectGet wraps every failed or unexpected direct-get answer.
var ErrDirectGet = errors.New("natsx: stream direct get")

// DirectGet is one JetStream direct-get request; batch and next_by_subj
// (which may be a wildcard) make one round trip read up to batch messages
// in stream order; multi_last with up_to_seq reads the last message at or
// below that seq of each subject.
type DirectGet struct {
	Seq       uint64   `json:"seq,omitempty"`
	LastFor   string   `json:"last_by_subj,omitempty"`
	NextFor   string   `json:"next_by_subj,omitempty"`
	Batch     int      `json:"batch,omitempty"`
	MaxBytes  int      `json:"max_bytes,omitempty"`
	MultiLast []string `json:"multi_last,omitempty"`
	UpToSeq   uint64   `json:"up_to_seq,omitempty"`
	// StartTime starts a batch at the first message stored at or after
	// it (instead of Seq).
	StartTime *time.Time `json:"start_time,omitempty"`
}

// DirectReader reads one stream with batched direct gets: no consumer, one
// round trip per batch. Any replica may answer a direct get, also one still
// catching up, so its "nothing (more) there" proves nothing; a caller that
// needs proof asks the leader (GetOnLeader).
type DirectReader struct {
	nc      *nats.Conn
	subject string // $JS.API.DIRECT.GET.<stream>
	// Hide, when set, hides from every answer the first message it
	// returns true for and what follows it, as a replica that has not
	// stored them yet answers (tests only).
	Hide func(m *jetstream.RawStreamMsg) bool
}

// NewDirectReader reads stream through js's connection and API prefix.
func NewDirectReader(js jetstream.JetStream, stream string) *DirectReader {
	return &DirectReader{nc: js.Conn(), subject: APISubject(js, "DIRECT.GET."+stream)}
}

// ReadFrom calls fn for every message on subject (may be a wildcard)
// stored at or after seq, in stream order, until the end of the stream or
// fn returns false, one batch of DirectBatch messages per round trip. end
// reports whether the read reached the end of the stream (as the answering
// server stored it) rather than fn stopping it.
func (r *DirectReader) ReadFrom(ctx context.Context, subject string, seq uint64, fn func(*jetstream.RawStreamMsg) bool) (end bool, err error) {
	if seq == 0 {
		seq = 1
	}
	for {
		next, more, stopped, err := r.readOnce(ctx, subject, seq, fn)
		if err != nil {
			return false, err
		}
		if stopped {
			return false, nil
		}
		if !more {
			return true, nil
		}
		seq = next
	}
}

// readOnce reads one batch from seq. next is the seq to continue from, more
// whether the stream holds more matching messages, stopped whether fn
// returned false.
func (r *DirectReader) readOnce(ctx context.Context, subject string, seq uint64, fn func(*jetstream.RawStreamMsg) bool) (next uint64, more, stopped bool, err error) {
	next = seq
	n := 0
	pending, stopped, err := r.Get(ctx, DirectGet{Seq: seq, NextFor: subject, Batch: DirectBatch, MaxBytes: DirectMaxBytes}, func(m *jetstream.RawStreamMsg) bool {
		n++
		next = m.Sequence + 1
		return fn(m)
	})
	return next, pending > 0 && n > 0, stopped, err
}

// MultiLast calls fn with the last message at or below stream seq upTo of
// each of subjects that has one: one request per 256 subjects.
func (r *DirectReader) MultiLast(ctx context.Context, subjects []string, upTo uint64, fn func(*jetstream.RawStreamMsg)) error {
	for len(subjects) > 0 {
		chunk := subjects[:min(len(subjects), multiLastChunk)]
		subjects = subjects[len(chunk):]
		_, _, err := r.Get(ctx, DirectGet{MultiLast: chunk, UpToSeq: upTo, Batch: len(chunk), MaxBytes: DirectMaxBytes}, func(m *jetstream.RawStreamMsg) bool {
			fn(m)
			return true
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Get sends one batched direct-get request and calls fn for each message
// of the answer until the end of the batch (pending: how many more match),
// "not found" (pending 0), or fn returns false (stopped).
func (r *DirectReader) Get(ctx context.Context, req DirectGet, fn func(*jetstream.RawStreamMsg) bool) (pending uint64, stopped bool, err error) {
	// A channel sized for one answer (the batch and its end-of-batch
	// status), not SubscribeSync's: that allocates a channel of
	// SubChanLen (64Ki) slots, 512 KiB per read, and the notifier's
	// sweeper reads every topic every few seconds while events flow — it
	// was 92 % of the bytes allocated and most of the GC work under load.
	inbox := r.nc.NewRespInbox()
	ch := make(chan *nats.Msg, max(req.Batch, 1)+2)
	ns, err := r.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return 0, false, err
	}
	defer func() { _ = ns.Unsubscribe() }()
	b, _ := json.Marshal(req)
	if err := r.nc.PublishRequest(r.subject, inbox, b); err != nil {
		return 0, false, err
	}
	for {
		var m *nats.Msg
		select {
		case m = <-ch:
		case <-ctx.Done():
			return 0, false, fmt.Errorf("%w: %w", ErrDirectGet, ctx.Err())
		}
		if len(m.Data) == 0 && m.Header.Get("Status") != "" {
			switch m.Header.Get("Status") {
			case "404": // nothing matches
				return 0, false, nil
			case "204": // end of batch
				pending, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
				return pending, false, nil
			case "503":
				return 0, false, fmt.Errorf("%w: %w", ErrDirectGet, nats.ErrNoResponders)
			default:
				return 0, false, fmt.Errorf("%w: status %s %s", ErrDirectGet, m.Header.Get("Status"), m.Header.Get("Description"))
			}
		}
		sm, err := rawOf(m)
		if err != nil {
			return 0, false, err
		}
		if r.Hide != nil && r.Hide(sm) {
			// Answer like a replica that has not stored sm yet.
			if len(req.MultiLast) > 0 {
				continue
			}
			return 0, false, nil
		}
		if !fn(sm) {
			return 0, true, nil
		}
	}
}

// rawOf turns a direct-get answer into a stream message.
func rawOf(m *nats.Msg) (*jetstream.RawStreamMsg, error) {
	seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	subj := m.Header.Get(jetstream.SubjectHeader)
	if err != nil || subj == "" {
		return nil, fmt.Errorf("%w: an answer without subject or sequence", ErrDirectGet)
	}
	ts, _ := time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
	return &jetstream.RawStreamMsg{Subject: subj, Sequence: seq, Header: m.Header, Data: m.Data, Time: ts}, nil
}
