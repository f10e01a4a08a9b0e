package envelope

import (
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// NATS header names that travel with Beamline messages.
const (
	// HeaderMsgID is JetStream's de-duplication id.
	HeaderMsgID = nats.MsgIdHdr
	// HeaderTraceparent and HeaderTracestate carry W3C trace context.
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
	// HeaderSeq carries an event's seq so readers can filter without decoding.
	HeaderSeq = "Beamline-Seq"
	// HeaderType carries the envelope type, for the same reason.
	HeaderType = "Beamline-Type"
)

// JetStream message schedule headers (nats-server 2.12+, ADR-51) of a
// scheduled job's schedule message.
const (
	HeaderSchedule       = "Nats-Schedule"
	HeaderScheduleTarget = "Nats-Schedule-Target"
	HeaderScheduleTTL    = "Nats-Schedule-TTL"
	// HeaderScheduleTimeZone is the IANA zone of a cron schedule.
	HeaderScheduleTimeZone = "Nats-Schedule-Time-Zone"
	// HeaderScheduleNext is set by the server on each message a repeating
	// schedule fires: when the schedule fires next (RFC 3339, nanoseconds),
	// or ScheduleNextPurge on a one-shot schedule's firing.
	HeaderScheduleNext = "Nats-Schedule-Next"
	// ScheduleNextPurge is HeaderScheduleNext on a one-shot firing.
	ScheduleNextPurge = "purge"
)

// FiredTTL is how long the fired copy of a scheduled job stays in
// SCHEDULED (Nats-Schedule-TTL) once JOBS has sourced it; JOBS, without
// per-message TTLs, ignores the header on its own copy.
const FiredTTL = "168h"

// Headers of a dead-lettered copy on dlq.<kind>; its body is the original
// message body, unchanged, and its Nats-Msg-Id is dead:<job> (or
// invalid:<kind>:<stream seq> for a message that is no job envelope).
const (
	// HeaderDeadReason says why the job died (at most 1 KiB, one line).
	HeaderDeadReason = "Beamline-Dead-Reason"
	// HeaderAttempts is how many runs the job had.
	HeaderAttempts = "Beamline-Attempts"
	// HeaderOriginalSubject is the subject the job was published to.
	HeaderOriginalSubject = "Beamline-Original-Subject"
)

// NewJobMsg builds the NATS message that submits j: subject
// jobs.<priority>.<kind>.<job>, the encoded envelope, and Nats-Msg-Id = job id so a
// re-publish within the stream's duplicate window creates no second job.
// traceparent may be empty.
func NewJobMsg(j Job, source, traceparent string) (*nats.Msg, error) {
	b, err := EncodeJob(j, source)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(j.Subject())
	m.Data = b
	m.Header.Set(HeaderMsgID, j.ID)
	m.Header.Set(HeaderType, string(TypeSubmitted))
	if traceparent != "" {
		m.Header.Set(HeaderTraceparent, traceparent)
	}
	return m, nil
}

// NewScheduledJobMsg builds the schedule message of a job due at runAt:
// subject sched.<job>, the same envelope as NewJobMsg, Nats-Msg-Id = job
// id, and the message schedule "@at <runAt>" (RFC 3339 with nanoseconds:
// the server parses the fraction, so the job is not due up to a second
// early) whose target is ScheduleFireSubject.
func NewScheduledJobMsg(j Job, source, traceparent string, runAt time.Time) (*nats.Msg, error) {
	m, err := NewJobMsg(j, source, traceparent)
	if err != nil {
		return nil, err
	}
	m.Subject = ScheduleSubject(j.ID)
	m.Header.Set(HeaderSchedule, "@at "+runAt.UTC().Format(time.RFC3339Nano))
	m.Header.Set(HeaderScheduleTarget, ScheduleFireSubject(j.Priority, j.Kind, j.ID))
	m.Header.Set(HeaderScheduleTTL, FiredTTL)
	return m, nil
}

// ScheduledAt reads the due time of a schedule message ("@at <time>").
func ScheduledAt(h nats.Header) (time.Time, bool) {
	v, ok := strings.CutPrefix(h.Get(HeaderSchedule), "@at ")
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	return t, err == nil
}

// NewEventMsg builds the NATS message of an event: subject
// events.<user>.<job>, Nats-Msg-Id = EventID, and the Beamline-Seq header.
func NewEventMsg(t Type, s Snapshot, source, traceparent string) (*nats.Msg, error) {
	m, _, err := EncodeEventMsg(t, s, source, traceparent)
	return m, err
}

// EncodeEventMsg is NewEventMsg that also returns the snapshot's JSON, the
// event's data, byte for byte what s.Marshal returns: a writer that stores
// the snapshot and announces it encodes it once. The envelope around it is
// written without a second pass of encoding/json over the data
// (appendEnvelope), byte for byte what Envelope.Encode writes.
func EncodeEventMsg(t Type, s Snapshot, source, traceparent string) (*nats.Msg, []byte, error) {
	e, err := NewEvent(t, s, source)
	if err != nil {
		return nil, nil, err
	}
	if err := e.validate(); err != nil {
		return nil, nil, err
	}
	b, err := appendEnvelope(make([]byte, 0, len(e.Data)+256), e)
	if err != nil {
		return nil, nil, err
	}
	if len(b) > MaxSize {
		return nil, nil, fieldErr("envelope", ErrTooLarge, "%d bytes, limit %d", len(b), MaxSize)
	}
	m := nats.NewMsg(EventSubject(s.User, s.ID))
	m.Data = b
	m.Header.Set(HeaderMsgID, e.ID)
	m.Header.Set(HeaderSeq, strconv.FormatUint(s.Seq, 10))
	m.Header.Set(HeaderType, string(t))
	if traceparent != "" {
		m.Header.Set(HeaderTraceparent, traceparent)
	}
	return m, e.Data, nil
}

// SeqOf reads the Beamline-Seq header; ok is false when it is absent or bad.
func SeqOf(h nats.Header) (seq uint64, ok bool) {
	v := h.Get(HeaderSeq)
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	return n, err == nil
}
