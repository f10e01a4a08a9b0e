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

// ReadBatch calls fn for the messages on subject (may be a wildcard) stored
// at or after seq, in stream order: one round trip, at most DirectBatch
// messages. next is the seq to continue from and more whether the stream
// holds more matching messages after them (as the answering server stored
// it). A caller that must not hold a lock across round trips reads this way.
func (r *DirectReader) ReadBatch(ctx context.Context, subject string, seq uint64, fn func(*jetstream.RawStreamMsg)) (next uint64, more bool, err error) {
	next, more, _, err = r.readOnce(ctx, subject, max(seq, 1), func(m *jetstream.RawStreamMsg) bool {
		fn(m)
		return true
	})
	return next, more, err
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
	b, err := r.Start(ctx, req)
	if err != nil {
		return 0, false, err
	}
	defer b.Close()
	for {
		m, err := b.Next()
		if err != nil || m == nil {
			return b.Pending, false, err
		}
		if !fn(m) {
			return 0, true, nil
		}
	}
}

// Batch is one direct-get request whose answer is read message by message
// as it arrives (Next), so a caller can use the first messages while the
// server still sends the rest. Close it when done.
type Batch struct {
	// Pending is, at the end of a batch, how many more messages match.
	Pending uint64
	ctx     context.Context
	r       *DirectReader
	multi   bool
	ch      chan *nats.Msg
	sub     *nats.Subscription
	done    bool
}

// Start sends one direct-get request; Next reads its answer.
func (r *DirectReader) Start(ctx context.Context, req DirectGet) (*Batch, error) {
	// A channel sized for one answer (the batch and its end-of-batch
	// status), not SubscribeSync's: that allocates a channel of
	// SubChanLen (64Ki) slots, 512 KiB per read, and the notifier's
	// sweeper reads every topic every few seconds while events flow — it
	// was 92 % of the bytes allocated and most of the GC work under load.
	inbox := r.nc.NewRespInbox()
	b := &Batch{ctx: ctx, r: r, multi: len(req.MultiLast) > 0, ch: make(chan *nats.Msg, max(req.Batch, 1)+2)}
	var err error
	if b.sub, err = r.nc.ChanSubscribe(inbox, b.ch); err != nil {
		return nil, err
	}
	data, _ := json.Marshal(req)
	if err := r.nc.PublishRequest(r.subject, inbox, data); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// Next returns the next message of the answer, nil at its end (the end of
// the batch, or "not found": then Pending is 0).
func (b *Batch) Next() (*jetstream.RawStreamMsg, error) {
	for !b.done {
		var m *nats.Msg
		select {
		case m = <-b.ch:
		case <-b.ctx.Done():
			b.done = true
			return nil, fmt.Errorf("%w: %w", ErrDirectGet, b.ctx.Err())
		}
		if len(m.Data) == 0 && m.Header.Get("Status") != "" {
			b.done = true
			switch m.Header.Get("Status") {
			case "404": // nothing matches
				return nil, nil
			case "204": // end of batch
				b.Pending, _ = strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
				return nil, nil
			case "503":
				return nil, fmt.Errorf("%w: %w", ErrDirectGet, nats.ErrNoResponders)
			default:
				return nil, fmt.Errorf("%w: status %s %s", ErrDirectGet, m.Header.Get("Status"), m.Header.Get("Description"))
			}
		}
		sm, err := rawOf(m)
		if err != nil {
			b.done = true
			return nil, err
		}
		if b.r.Hide != nil && b.r.Hide(sm) {
			// Answer like a replica that has not stored sm yet.
			if b.multi {
				continue
			}
			b.done = true
			return nil, nil
		}
		return sm, nil
	}
	return nil, nil
}

// Close stops reading the answer.
func (b *Batch) Close() {
	b.done = true
	if b.sub != nil {
		_ = b.sub.Unsubscribe()
		b.sub = nil
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
