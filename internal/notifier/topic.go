package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/pkg/envelope"
)

// topicKind is what a topic carries.
type topicKind int

const (
	kindUnknown topicKind = iota
	kindJob               // job:<id>: one job, owner or admin
	kindUser              // user:<id>: all of one user's jobs, that user or admin
	kindAdmin             // admin:metrics: live pipeline figures, admin only
)

// AdminMetricsTopic is the server-fed topic for admin dashboards (see
// Service.Broadcast).
const AdminMetricsTopic = "admin:metrics"

func (k topicKind) String() string {
	switch k {
	case kindJob:
		return "job"
	case kindUser:
		return "user"
	case kindAdmin:
		return "admin"
	}
	return "unknown"
}

// parseTopic splits a topic; reason is a join error reason when it is not
// one we serve.
func parseTopic(t string) (kind topicKind, id, reason string) {
	if t == AdminMetricsTopic {
		return kindAdmin, "", ""
	}
	prefix, id, ok := strings.Cut(t, ":")
	switch {
	case ok && prefix == "job":
		kind = kindJob
	case ok && prefix == "user":
		kind = kindUser
	default:
		return kindUnknown, "", reasonUnmatched
	}
	if envelope.ValidateID("topic", id) != nil {
		return kind, "", reasonInvalid
	}
	return kind, id, ""
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
	case snap.User != p.User && !p.Admin:
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
		m, err := s.msgOnLeader(ctx, natsx.MsgGet{LastFor: subject})
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
