package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/internal/phoenix"
	"github.com/beamline/beamline/pkg/envelope"
)

// The join flow: a phx_join (join) or an SSE stream opens a topic for one
// subscriber (open), which subscribes it to the live events and reads what
// the join reply carries, then hands it over from the join to the live
// events (handOver).

// Join failure reasons (the "reason" of the error reply; also metric labels).
const (
	reasonUnmatched    = "unmatched topic"
	reasonUnauthorized = "unauthorized"
	reasonNotFound     = "not_found"
	reasonTooMany      = "too many channels joined"
	reasonInvalid      = "invalid topic"
	reasonBadParams    = "invalid last_seq"
	reasonUnavailable  = "unavailable"
	reasonRateLimited  = "rate limited"
)

// parseJoinParams reads {"last_seq": N}; bad is true when last_seq is
// present but not a non-negative integer.
func parseJoinParams(payload []byte) (lastSeq *uint64, bad bool) {
	var p map[string]json.RawMessage
	if json.Unmarshal(payload, &p) != nil {
		return nil, true
	}
	raw, ok := p["last_seq"]
	if !ok || string(raw) == "null" {
		return nil, false
	}
	var n json.Number
	if json.Unmarshal(raw, &n) != nil {
		return nil, true
	}
	v, bad := parseSeq(n)
	if bad {
		return nil, true
	}
	return &v, false
}

func (c *session) join(f phoenix.Frame) {
	s := c.s
	kind, id, err := parseTopic(f.Topic)
	if err != "" {
		s.m.joins.WithLabelValues(kind.String(), metricLabel(err)).Inc()
		jr := f.JoinRef
		if err == reasonUnmatched {
			jr = phoenix.Ref{} // as Phoenix sends it
		}
		c.send(phoenix.Reply(jr, f.Ref, f.Topic, "error", phoenix.ErrorReason(err)))
		return
	}
	lastSeq, perr := parseJoinParams(f.Payload)
	if perr {
		s.m.joins.WithLabelValues(kind.String(), metricLabel(reasonBadParams)).Inc()
		c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "error", phoenix.ErrorReason(reasonBadParams)))
		return
	}
	var pp presenceParams
	if kind.hasPresence() {
		var reason string
		if pp, reason = parsePresenceParams(f.Payload, s.cfg.PresenceMetaMax); reason != "" {
			s.m.joins.WithLabelValues(kind.String(), metricLabel(reason)).Inc()
			c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "error", phoenix.ErrorReason(reason)))
			return
		}
	}
	old := c.lookup(f.Topic)
	if old == nil && len(c.subs) >= s.cfg.MaxChannels {
		for t := range c.subs {
			c.lookup(t) // forget channels the server ended
		}
	}
	if old == nil && len(c.subs) >= s.cfg.MaxChannels {
		s.m.joins.WithLabelValues(kind.String(), metricLabel(reasonTooMany)).Inc()
		c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "error", phoenix.ErrorReason(reasonTooMany)))
		return
	}
	sb := &sub{topic: f.Topic, kind: kind, joinRef: f.JoinRef, sink: c, replaying: true}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	res := s.open(ctx, c.p, sb, kind, id, lastSeq)
	cancel()
	s.m.joins.WithLabelValues(kind.String(), metricLabel(res.reason)).Inc()

	if old != nil { // rule 2 (docs/phoenix-protocol.md#61-server-rules): one subscription per (connection, topic)
		s.unsubscribe(old)
		c.mu.Lock()
		old.closed = true
		c.mu.Unlock()
		delete(c.subs, f.Topic)
	}
	if res.reason != "" {
		c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "error", phoenix.ErrorReason(res.reason)))
	} else {
		c.subs[f.Topic] = sb
		if kind.hasPresence() {
			c.trackJoin(sb, pp, &res)
		} else if f.Topic == AdminPresenceTopic {
			res.replay = append(res.replay, s.presence.watchAll(sb))
		}
		c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "ok", res.response))
	}
	if old != nil {
		c.send(phoenix.AppendFrame(nil, old.joinRef, old.joinRef, f.Topic, phoenix.EventClose, nil))
	}
	if res.reason != "" {
		return
	}
	// Replay what was missed, then what arrived live meanwhile, waiting
	// for room in the queue before each replayed event.
	c.mu.Lock()
	room := func() {
		for !c.closed && len(c.queue) >= s.cfg.SendQueue {
			c.cond.Wait()
		}
	}
	c.batching = true
	end := sb.handOver(res.replay, room, func(ev *event) { c.enqueueLocked(c.pushFrame(sb, ev)) })
	c.batching = false
	if end != nil { // the server ended the topic meanwhile
		c.enqueueLocked(outFrame{data: c.endFrame(sb, *end)})
	}
	c.mu.Unlock()
}

// handOver ends sb's join; the sink's lock is held. The replay, then the
// live events that arrived meanwhile, go to emit in order, each only if
// newer than what was already sent: the hand-over is gap- and
// duplicate-free because the live subscription started before the
// snapshot and the replay were read. room, when set, runs before each
// replayed event and may wait (releasing the sink's lock) for the sink to
// have room. From then on live events go to the sink directly. It returns
// how the server ended the topic during the join, if it did: the sink
// tells its client after these events.
func (sb *sub) handOver(replay []*event, room func(), emit func(*event)) *serverEnd {
	for _, ev := range replay {
		if room != nil {
			room()
		}
		if sb.fresh(ev) {
			emit(ev)
		}
	}
	sb.base = sb.last
	for _, ev := range sb.pending {
		if sb.fresh(ev) {
			emit(ev)
		}
	}
	sb.pending, sb.replaying = nil, false
	end := sb.ended
	sb.ended = nil
	return end
}

// joinResult is the outcome of opening a topic for one subscriber.
type joinResult struct {
	reason   string          // join error reason; "" means ok
	response json.RawMessage // the ok reply's response object
	replay   []*event        // missed events to push after the reply
	snapshot *envelope.Snapshot
}

// open authorizes p for the topic, subscribes sb (left in replaying state)
// and reads what the join reply carries. On error sb is not subscribed.
func (s *Service) open(ctx context.Context, p auth.Principal, sb *sub, kind topicKind, id string, lastSeq *uint64) joinResult {
	switch kind {
	case kindJob:
		return s.openJob(ctx, p, sb, id, lastSeq)
	case kindUser:
		return s.openUser(ctx, p, sb, id, lastSeq)
	case kindAdmin:
		if !p.Admin {
			return joinResult{reason: reasonUnauthorized}
		}
		if err := s.hub.add(sb, ""); err != nil {
			return joinResult{reason: reasonUnavailable}
		}
		return joinResult{response: json.RawMessage(`{}`)}
	case kindStudio:
		return s.openStudio(p, sb, id)
	}
	return joinResult{reason: reasonUnmatched}
}

func (s *Service) openJob(ctx context.Context, p auth.Principal, sb *sub, id string, lastSeq *uint64) joinResult {
	// Lookup, not Get: a job accepted but not yet written by a processor
	// has no snapshot, only its message in JOBS (queued, seq 0).
	snap, _, err := s.store.Lookup(ctx, id)
	switch {
	case errors.Is(err, jobstore.ErrNotFound):
		return joinResult{reason: reasonNotFound}
	case err != nil:
		s.log.Warn("join: reading job", "job", id, "err", err)
		return joinResult{reason: reasonUnavailable}
	case snap.User != p.User && !p.Admin && p.Share != id: // a share token watches its job only
		return joinResult{reason: reasonUnauthorized}
	}
	subject := envelope.EventSubject(snap.User, id)
	if err := s.hub.add(sb, subject); err != nil {
		s.log.Warn("join: subscribing", "job", id, "err", err)
		return joinResult{reason: reasonUnavailable}
	}
	fail := func(err error) joinResult {
		s.hub.remove(sb)
		s.log.Warn("join: reading job", "job", id, "err", err)
		return joinResult{reason: reasonUnavailable}
	}
	// Read the snapshot again now that live events are being collected:
	// anything after it is either in the replay or among them.
	if snap, _, err = s.store.Lookup(ctx, id); err != nil {
		return fail(err)
	}
	// The KV read may be answered by a replica that lags (allow_direct):
	// its snapshot may miss a change whose event is at or below the
	// topic's position, which will not come live. The leader's last event
	// of the job is the snapshot after its change; take it when newer. A
	// terminal snapshot is final: nothing is stored after it.
	if sb.joinPos > 0 && !snap.Status.Terminal() {
		m, err := s.events.msgOnLeader(ctx, natsx.MsgGet{LastFor: subject})
		if err != nil {
			return fail(err)
		}
		if m != nil {
			if k, ok := envelope.SeqOf(m.Header); ok && k > snap.Seq {
				_, newer, err := envelope.DecodeEvent(m.Data)
				if err != nil {
					return fail(err)
				}
				snap = newer
			}
		}
	}
	res := joinResult{snapshot: &snap}
	recovered := false
	sb.last = snap.Seq
	if lastSeq != nil {
		var replay []*event
		replay, recovered, err = s.replayJob(ctx, subject, *lastSeq, snap.Seq, sb.joinPos)
		if err != nil {
			return fail(err)
		}
		if recovered {
			sb.last, res.replay = *lastSeq, replay
		}
	}
	res.response, err = json.Marshal(map[string]any{"snapshot": snap, "recovered": recovered})
	if err != nil {
		return fail(err)
	}
	return res
}

func (s *Service) openUser(ctx context.Context, p auth.Principal, sb *sub, id string, lastSeq *uint64) joinResult {
	if id != p.User && !p.Admin {
		return joinResult{reason: reasonUnauthorized}
	}
	if err := s.hub.add(sb, envelope.UserEventsSubject(id)); err != nil {
		s.log.Warn("join: subscribing", "user", id, "err", err)
		return joinResult{reason: reasonUnavailable}
	}
	fail := func(err error) joinResult {
		s.hub.remove(sb)
		s.log.Warn("join: reading user jobs", "user", id, "err", err)
		return joinResult{reason: reasonUnavailable}
	}
	jobs, streamSeq, truncated, err := s.userJobs(ctx, id, sb.joinPos)
	if err != nil {
		return fail(err)
	}
	var res joinResult
	recovered := false
	sb.last = streamSeq
	// Every event up to joinMark was stored before the scan above, which
	// saw the result; later ones reach sb live.
	sb.resume = sb.joinMark
	if lastSeq != nil {
		var replay []*event
		replay, recovered, err = s.replayUser(ctx, id, *lastSeq, sb.joinPos)
		if err != nil {
			return fail(err)
		}
		if recovered {
			// The client has everything up to last_seq; the replay
			// brings the rest, in stream order, after the reply.
			sb.last, res.replay, sb.resume = *lastSeq, replay, *lastSeq
			for _, ev := range replay {
				ev.replayed = true
			}
		}
	}
	if jobs == nil {
		jobs = []json.RawMessage{}
	}
	res.response, err = json.Marshal(map[string]any{"jobs": jobs, "stream_seq": streamSeq, "recovered": recovered, "truncated": truncated, "resume_seq": sb.resume})
	if err != nil {
		return fail(err)
	}
	return res
}
func parseSeq(n json.Number) (uint64, bool) {
	i, err := n.Int64()
	if err != nil || i < 0 {
		return 0, true
	}
	return uint64(i), false
}

func metricLabel(reason string) string {
	switch reason {
	case "":
		return "ok"
	case reasonUnmatched:
		return "unmatched_topic"
	case reasonTooMany:
		return "too_many_channels"
	case reasonInvalid:
		return "invalid_topic"
	case reasonBadParams:
		return "invalid_params"
	case reasonRateLimited:
		return "rate_limited"
	case reasonBadRoom:
		return "invalid_room"
	case reasonMetaTooLarge, reasonBadMeta, reasonBadDevice:
		return "invalid_presence"
	}
	return reason
}
