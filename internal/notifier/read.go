package notifier

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// errStreamRead is wrapped by every failed read of EVENTS.
var errStreamRead = errors.New("notifier: reading EVENTS")

// eventsReader reads the EVENTS stream for the hub and the joins: batched
// direct gets (natsx.DirectReader), which cost no consumer but may be
// answered by a replica still catching up, and the leader's answer
// (natsx.GetOnLeader) where a direct get's "nothing there" is no proof.
type eventsReader struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	direct *natsx.DirectReader
}

func newEventsReader(js jetstream.JetStream, stream jetstream.Stream) *eventsReader {
	return &eventsReader{js: js, stream: stream, direct: natsx.NewDirectReader(js, streams.Events)}
}

// info returns the stream's state.
func (e *eventsReader) info(ctx context.Context) (*jetstream.StreamInfo, error) {
	return e.stream.Info(ctx)
}

// readFrom calls fn for every message on subject (may be a wildcard) stored
// at or after seq, in stream order, until the end of the stream or fn
// returns false (natsx.DirectReader.ReadFrom). end reports whether the read
// reached the end of the stream (rather than fn stopping it).
func (e *eventsReader) readFrom(ctx context.Context, subject string, seq uint64, fn func(*jetstream.RawStreamMsg) bool) (end bool, err error) {
	end, err = e.direct.ReadFrom(ctx, subject, seq, fn)
	if err != nil {
		return false, fmt.Errorf("%w: %w", errStreamRead, err)
	}
	return end, nil
}

// readBatch reads one batch of the messages on subject from seq
// (natsx.DirectReader.ReadBatch): next is the seq to continue from, more
// whether the stream holds more.
func (e *eventsReader) readBatch(ctx context.Context, subject string, seq uint64, fn func(*jetstream.RawStreamMsg)) (next uint64, more bool, err error) {
	next, more, err = e.direct.ReadBatch(ctx, subject, seq, fn)
	if err != nil {
		return 0, false, fmt.Errorf("%w: %w", errStreamRead, err)
	}
	return next, more, nil
}

// multiLast calls fn with the last message at or below stream seq upTo of
// each of subjects that has one.
func (e *eventsReader) multiLast(ctx context.Context, subjects []string, upTo uint64, fn func(*jetstream.RawStreamMsg)) error {
	if err := e.direct.MultiLast(ctx, subjects, upTo, fn); err != nil {
		return fmt.Errorf("%w: %w", errStreamRead, err)
	}
	return nil
}

// lastUpTo returns, for each of subjects that has one, the job seq
// (Beamline-Seq) of its last event at or below stream seq upTo.
func (e *eventsReader) lastUpTo(ctx context.Context, subjects []string, upTo uint64) (map[string]uint64, error) {
	out := make(map[string]uint64, len(subjects))
	err := e.multiLast(ctx, subjects, upTo, func(m *jetstream.RawStreamMsg) {
		if seq, ok := envelope.SeqOf(m.Header); ok {
			out[m.Subject] = seq
		}
	})
	return out, err
}

// lastStreamSeqUpTo returns, for each of subjects that has one, the stream
// seq of its last event at or below stream seq upTo: one request per
// multiLastChunk subjects.
func (e *eventsReader) lastStreamSeqUpTo(ctx context.Context, subjects []string, upTo uint64) (map[string]uint64, error) {
	out := make(map[string]uint64, len(subjects))
	err := e.multiLast(ctx, subjects, upTo, func(m *jetstream.RawStreamMsg) { out[m.Subject] = m.Sequence })
	return out, err
}

// nextOnLeader returns the stream seq of the first EVENTS message on
// filter (may be a wildcard) at or after seq, 0 when there is none. It asks
// $JS.API.STREAM.MSG.GET, which only the stream's leader answers, never
// DIRECT.GET: a replica joins the direct-get responders while still
// catching up, and its "nothing there" proves nothing.
func (e *eventsReader) nextOnLeader(ctx context.Context, filter string, seq uint64) (uint64, error) {
	m, err := e.msgOnLeader(ctx, natsx.MsgGet{Seq: seq, NextFor: filter})
	if err != nil || m == nil {
		return 0, err
	}
	return m.Sequence, nil
}

// msgOnLeader asks the EVENTS leader for one message (natsx.GetOnLeader);
// nil when there is none.
func (e *eventsReader) msgOnLeader(ctx context.Context, r natsx.MsgGet) (*jetstream.RawStreamMsg, error) {
	m, err := natsx.GetOnLeader(ctx, e.js, streams.Events, r)
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
func (e *eventsReader) readConfirmed(ctx context.Context, filter string, from, upTo uint64, fn func(*jetstream.RawStreamMsg) bool) error {
	next := max(from, 1)
	read := func(m *jetstream.RawStreamMsg) bool {
		next = m.Sequence + 1
		return fn(m)
	}
	for {
		end, err := e.readFrom(ctx, filter, next, read)
		if err != nil || !end || next > upTo {
			return err // stopped by fn, or past upTo
		}
		m, err := e.msgOnLeader(ctx, natsx.MsgGet{Seq: next, NextFor: filter})
		if err != nil || m == nil || m.Sequence > upTo {
			return err
		}
		if !read(m) {
			return nil
		}
	}
}
