package notifier

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/phoenix"
	"github.com/beamline/beamline/pkg/envelope"
)

// Studio rooms (studio:<room>) and the two-way events of presence topics
// (docs/phoenix-protocol.md#11-beamline-topics-and-payloads): members of a
// room see each other (presence) and broadcast small messages, which
// travel between notifiers on beamline.studio.<room>.

// Reasons of the studio and presence replies.
const (
	reasonBadRoom     = "invalid room name: '.', '*' and '>' are not allowed"
	reasonMsgTooLarge = "message too large"
	reasonBadMsg      = "message must be a JSON object"
	reasonBadDevice   = "invalid device"
	reasonTerminal    = "already terminal"
)

// presenceParams are the presence fields of a join's params:
// {"device": "<≤ 32 chars>", "presence": {…client meta…}}.
type presenceParams struct {
	device string
	meta   json.RawMessage
	// listen: the params name "device" or "presence", so the client wants
	// presence_state and presence_diff on a job: topic (studio: topics
	// always send them). Every connection counts as present either way.
	listen bool
}

// parsePresenceParams reads the presence fields of a join payload (already
// known to be a JSON object); reason is a join error reason.
func parsePresenceParams(payload []byte, maxMeta int) (pp presenceParams, reason string) {
	var p struct {
		Device   *string         `json:"device"`
		Presence json.RawMessage `json:"presence"`
	}
	if json.Unmarshal(payload, &p) != nil {
		return pp, reasonBadMeta
	}
	pp.listen = p.Device != nil || p.Presence != nil
	if p.Device != nil {
		if len(*p.Device) > 32 || !utf8.ValidString(*p.Device) {
			return pp, reasonBadDevice
		}
		pp.device = *p.Device
	}
	pp.meta, reason = checkMeta(p.Presence, maxMeta)
	return pp, reason
}

// checkMeta validates a client meta: absent/null, or a JSON object of at
// most maxMeta bytes once compacted.
func checkMeta(raw json.RawMessage, maxMeta int) (json.RawMessage, string) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, ""
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil || buf.Len() == 0 || buf.Bytes()[0] != '{' {
		return nil, reasonBadMeta
	}
	if buf.Len() > maxMeta {
		return nil, reasonMetaTooLarge
	}
	return buf.Bytes(), ""
}

// openStudio lets p into a room its token's rooms claim names (admins
// into any).
func (s *Service) openStudio(p auth.Principal, sb *sub, room string) joinResult {
	if envelope.ValidateRoom(room) != nil {
		return joinResult{reason: reasonInvalid}
	}
	if !p.Admin && !p.Rooms.Allows(room) {
		return joinResult{reason: reasonUnauthorized}
	}
	if err := s.hub.add(sb, ""); err != nil {
		return joinResult{reason: reasonUnavailable}
	}
	return joinResult{response: json.RawMessage(`{}`)}
}

// trackJoin tracks the presence of a session's new subscription and adds
// the presence_state push behind the join reply.
func (c *session) trackJoin(sb *sub, pp presenceParams, res *joinResult) {
	if c.presence.onlineAt == 0 {
		c.presence.onlineAt = time.Now().UnixMilli()
	}
	c.presence.device = pp.device
	listen := pp.listen || sb.kind == kindStudio
	if ev := c.s.presence.track(sb, presenceKey(c.p), c.presence, pp.meta, listen); ev != nil {
		res.replay = append(res.replay, ev)
	}
}

// guestKey is the presence key of share-token holders, who have no user id.
const guestKey = "guest"

func presenceKey(p auth.Principal) string {
	if p.User == "" {
		return guestKey
	}
	return p.User
}

// unsubscribe ends sb's subscription on this notifier: its topic and its
// presence.
func (s *Service) unsubscribe(sb *sub) {
	s.hub.remove(sb)
	s.presence.untrack(sb)
}

// handleTwoWay answers the client events of presence topics; it reports
// false for an event it does not know.
func (c *session) handleTwoWay(sb *sub, f phoenix.Frame) bool {
	switch {
	case f.Event == "presence" && sb.kind.hasPresence():
		var p struct {
			Meta json.RawMessage `json:"meta"`
		}
		if json.Unmarshal(f.Payload, &p) != nil {
			c.replyError(f, reasonBadMeta)
			return true
		}
		meta, reason := checkMeta(p.Meta, c.s.cfg.PresenceMetaMax)
		if reason != "" {
			c.replyError(f, reason)
			return true
		}
		c.s.presence.update(sb, c.presence, meta)
		c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "ok", nil))
	case f.Event == "msg" && sb.kind == kindStudio:
		c.studioMsg(sb, f)
	case f.Event == "cancel" && sb.kind == kindJob:
		c.cancelJob(f)
	default:
		return false
	}
	return true
}

func (c *session) replyError(f phoenix.Frame, reason string) {
	c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "error", phoenix.ErrorReason(reason)))
}

// studioMsg broadcasts a member's message to the room on every notifier
// as event "msg" {"from": <user>, "body": <payload>}; the sender gets it
// too. Over the size or the rate limit it gets an error reply instead.
func (c *session) studioMsg(sb *sub, f phoenix.Frame) {
	s := c.s
	if f.Binary {
		c.replyError(f, reasonBadMsg)
		return
	}
	if len(f.Payload) > s.cfg.StudioMsgMax {
		c.replyError(f, reasonMsgTooLarge)
		return
	}
	var body bytes.Buffer
	if json.Compact(&body, f.Payload) != nil || body.Len() == 0 || body.Bytes()[0] != '{' {
		c.replyError(f, reasonBadMsg)
		return
	}
	if !sb.msgRate.allow(float64(s.cfg.StudioRate)) {
		c.replyError(f, reasonRateLimited)
		return
	}
	room := strings.TrimPrefix(sb.topic, "studio:")
	b := make([]byte, 0, body.Len()+len(c.p.User)+24)
	b = append(b, `{"from":`...)
	b = appendJSONString(b, c.p.User)
	b = append(b, `,"body":`...)
	b = append(b, body.Bytes()...)
	b = append(b, '}')
	if err := s.nc.Publish(envelope.StudioSubject(room), b); err != nil {
		c.replyError(f, reasonUnavailable)
		return
	}
	c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "ok", nil))
}

func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s)
	return append(b, q...)
}

// onStudio hands a room message from any notifier to the room's members
// here.
func (s *Service) onStudio(m *nats.Msg) {
	room, ok := envelope.RoomOfStudioSubject(m.Subject)
	if !ok || len(m.Data) == 0 || m.Data[0] != '{' || !json.Valid(m.Data) {
		return
	}
	s.hub.dispatch("studio:"+room, &event{name: "msg", payload: m.Data})
}

// bucket is a token bucket: rate a second, a burst of twice that.
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) allow(rate float64) bool {
	now := time.Now()
	if b.last.IsZero() {
		b.tokens = 2 * rate
	} else {
		b.tokens = min(2*rate, b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// cancelJob answers a cancel push on job:<id>: the job is cancelled as
// DELETE /v1/jobs/{id} does it (jobstore.Store.Cancel); the reply is ok
// {"job": <cancelled snapshot>} or an error reason.
func (c *session) cancelJob(f phoenix.Frame) {
	s := c.s
	id := strings.TrimPrefix(f.Topic, "job:")
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	snap, rev, err := s.store.Lookup(ctx, id)
	switch {
	case errors.Is(err, jobstore.ErrNotFound):
		c.replyError(f, reasonNotFound)
		return
	case err != nil:
		s.log.Warn("cancel push: reading job", "job", id, "err", err)
		c.replyError(f, reasonUnavailable)
		return
	case snap.User != c.p.User && !c.p.Admin:
		c.replyError(f, reasonUnauthorized)
		return
	}
	log := s.log.With("job", id, "user", snap.User)
	next, err := s.store.Cancel(ctx, snap, rev, func(msg string, err error) { log.Warn(msg, "err", err) })
	switch {
	case errors.Is(err, jobstore.ErrTerminal):
		c.replyError(f, reasonTerminal)
		return
	case err != nil:
		log.Warn("cancel push refused", "err", err)
		c.replyError(f, reasonUnavailable)
		return
	}
	log.Info("job cancelled", "by", c.p.User, "via", "notifier", "seq", next.Seq)
	resp, err := json.Marshal(map[string]any{"job": next})
	if err != nil {
		c.replyError(f, reasonUnavailable)
		return
	}
	c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "ok", resp))
}
