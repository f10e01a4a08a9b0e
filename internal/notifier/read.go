package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// readBatch is how many messages one direct-get request asks for.
const readBatch = 256

// readMaxBytes bounds the payload bytes one direct-get batch may carry.
const readMaxBytes = 4 << 20

// directGetRequest is the JetStream direct-get request; batch and
// next_by_subj (which may be a wildcard) make one round trip read up to
// batch messages in stream order; multi_last with up_to_seq reads the last
// message at or below that seq of each subject.
type directGetRequest struct {
	Seq       uint64   `json:"seq,omitempty"`
	LastFor   string   `json:"last_by_subj,omitempty"`
	NextFor   string   `json:"next_by_subj,omitempty"`
	Batch     int      `json:"batch,omitempty"`
	MaxBytes  int      `json:"max_bytes,omitempty"`
	MultiLast []string `json:"multi_last,omitempty"`
	UpToSeq   uint64   `json:"up_to_seq,omitempty"`
}

// errStreamRead is wrapped by every unexpected direct-get answer.
var errStreamRead = errors.New("notifier: reading EVENTS")

// readFrom calls fn for every message on subject (may be a wildcard) stored
// at or after seq, in stream order, until the end of the stream or fn
// returns false. It uses batched direct gets (one round trip per
// readBatch messages), so it costs no consumer. end reports whether the
// read reached the end of the stream (rather than fn stopping it).
func (s *Service) readFrom(ctx context.Context, subject string, seq uint64, fn func(*jetstream.RawStreamMsg) bool) (end bool, err error) {
	if seq == 0 {
		seq = 1
	}
	for {
		next, more, stopped, err := s.readOnce(ctx, subject, seq, fn)
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
func (s *Service) readOnce(ctx context.Context, subject string, seq uint64, fn func(*jetstream.RawStreamMsg) bool) (next uint64, more, stopped bool, err error) {
	next = seq
	n := 0
	pending, stopped, err := s.direct(ctx, directGetRequest{Seq: seq, NextFor: subject, Batch: readBatch, MaxBytes: readMaxBytes}, func(m *jetstream.RawStreamMsg) bool {
		n++
		next = m.Sequence + 1
		return fn(m)
	})
	return next, pending > 0 && n > 0, stopped, err
}

// direct sends one batched direct-get request and calls fn for each
// message of the answer until the end of the batch (pending: how many
// more match), "not found" (pending 0), or fn returns false (stopped).
func (s *Service) direct(ctx context.Context, r directGetRequest, fn func(*jetstream.RawStreamMsg) bool) (pending uint64, stopped bool, err error) {
	// A channel sized for one answer (the batch and its end-of-batch
	// status), not SubscribeSync's: that allocates a channel of
	// SubChanLen (64Ki) slots, 512 KiB per read, and the sweeper reads
	// every topic every few seconds while events flow — it was 92 % of the
	// bytes allocated and most of the GC work under load.
	inbox := s.nc.NewRespInbox()
	ch := make(chan *nats.Msg, max(r.Batch, 1)+2)
	ns, err := s.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return 0, false, err
	}
	defer func() { _ = ns.Unsubscribe() }()
	req, _ := json.Marshal(r)
	if err := s.nc.PublishRequest(s.directGet, inbox, req); err != nil {
		return 0, false, err
	}
	for {
		var m *nats.Msg
		select {
		case m = <-ch:
		case <-ctx.Done():
			return 0, false, fmt.Errorf("%w: %w", errStreamRead, ctx.Err())
		}
		if len(m.Data) == 0 && m.Header.Get("Status") != "" {
			switch m.Header.Get("Status") {
			case "404": // nothing matches
				return 0, false, nil
			case "204": // end of batch
				pending, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
				return pending, false, nil
			case "503":
				return 0, false, fmt.Errorf("%w: %w", errStreamRead, nats.ErrNoResponders)
			default:
				return 0, false, fmt.Errorf("%w: status %s %s", errStreamRead, m.Header.Get("Status"), m.Header.Get("Description"))
			}
		}
		sm, err := rawOf(m)
		if err != nil {
			return 0, false, err
		}
		if hide := s.cfg.hideDirect; hide != nil && hide(sm) {
			// Tests: answer like a replica that has not stored sm yet.
			if len(r.MultiLast) > 0 {
				continue
			}
			return 0, false, nil
		}
		if !fn(sm) {
			return 0, true, nil
		}
	}
}

// multiLastChunk is how many subjects one multi_last request names (the
// server answers at most 1024 messages per request).
const multiLastChunk = 256

// lastUpTo returns, for each of subjects that has one, the job seq
// (Beamline-Seq) of its last event at or below stream seq upTo.
func (s *Service) lastUpTo(ctx context.Context, subjects []string, upTo uint64) (map[string]uint64, error) {
	out := make(map[string]uint64, len(subjects))
	err := s.multiLast(ctx, subjects, upTo, func(m *jetstream.RawStreamMsg) {
		if seq, ok := envelope.SeqOf(m.Header); ok {
			out[m.Subject] = seq
		}
	})
	return out, err
}

// lastStreamSeqUpTo returns, for each of subjects that has one, the stream
// seq of its last event at or below stream seq upTo: one request per
// multiLastChunk subjects.
func (s *Service) lastStreamSeqUpTo(ctx context.Context, subjects []string, upTo uint64) (map[string]uint64, error) {
	out := make(map[string]uint64, len(subjects))
	err := s.multiLast(ctx, subjects, upTo, func(m *jetstream.RawStreamMsg) { out[m.Subject] = m.Sequence })
	return out, err
}

// multiLast calls fn with the last message at or below stream seq upTo of
// each of subjects that has one.
func (s *Service) multiLast(ctx context.Context, subjects []string, upTo uint64, fn func(*jetstream.RawStreamMsg)) error {
	for len(subjects) > 0 {
		chunk := subjects[:min(len(subjects), multiLastChunk)]
		subjects = subjects[len(chunk):]
		_, _, err := s.direct(ctx, directGetRequest{MultiLast: chunk, UpToSeq: upTo, Batch: len(chunk), MaxBytes: readMaxBytes}, func(m *jetstream.RawStreamMsg) bool {
			fn(m)
			return true
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// rawOf turns a direct-get answer into a stream message.
func rawOf(m *nats.Msg) (*jetstream.RawStreamMsg, error) {
	seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	subj := m.Header.Get(jetstream.SubjectHeader)
	if err != nil || subj == "" {
		return nil, fmt.Errorf("%w: direct get answer without subject or sequence", errStreamRead)
	}
	ts, _ := time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
	return &jetstream.RawStreamMsg{Subject: subj, Sequence: seq, Header: m.Header, Data: m.Data, Time: ts}, nil
}

// directGetSubject is the direct-get API subject of stream for js.
func directGetSubject(js jetstream.JetStream, stream string) string {
	return natsx.APISubject(js, "DIRECT.GET."+stream)
}

// nextOnLeader returns the stream seq of the first EVENTS message on
// filter (may be a wildcard) at or after seq, 0 when there is none. It asks
// $JS.API.STREAM.MSG.GET, which only the stream's leader answers, never
// DIRECT.GET: a replica joins the direct-get responders while still
// catching up, and its "nothing there" proves nothing.
func (s *Service) nextOnLeader(ctx context.Context, filter string, seq uint64) (uint64, error) {
	m, err := s.msgOnLeader(ctx, natsx.MsgGet{Seq: seq, NextFor: filter})
	if err != nil || m == nil {
		return 0, err
	}
	return m.Sequence, nil
}

// msgOnLeader asks the EVENTS leader for one message (natsx.GetOnLeader);
// nil when there is none.
func (s *Service) msgOnLeader(ctx context.Context, r natsx.MsgGet) (*jetstream.RawStreamMsg, error) {
	m, err := natsx.GetOnLeader(ctx, s.js, streams.Events, r)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errStreamRead, err)
	}
	return m, nil
}

// readConfirmed is readFrom for a join, whose reply must cover every event
// on filter up to upTo (the topic's position when the subscriber was
// added; later events reach it live): it calls fn for every message on
// filter stored at or after from, in stream order, and does not take a
// direct get's "end of stream" for proof. The answer may come from a
// replica still catching up, so when the read ends below upTo the leader
// is asked ($JS.API.STREAM.MSG.GET next_by_subj, as reconcile does)
// whether anything on filter lies in between; if so that message (from the
// leader's answer) goes to fn and the read goes on after it.
func (s *Service) readConfirmed(ctx context.Context, filter string, from, upTo uint64, fn func(*jetstream.RawStreamMsg) bool) error {
	next := max(from, 1)
	read := func(m *jetstream.RawStreamMsg) bool {
		next = m.Sequence + 1
		return fn(m)
	}
	for {
		end, err := s.readFrom(ctx, filter, next, read)
		if err != nil || !end || next > upTo {
			return err // stopped by fn, or past upTo
		}
		m, err := s.msgOnLeader(ctx, natsx.MsgGet{Seq: next, NextFor: filter})
		if err != nil || m == nil || m.Sequence > upTo {
			return err
		}
		if !read(m) {
			return nil
		}
	}
}
