package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// A schedule (POST /v1/schedules) is one message on cron.<user>.<name> in
// SCHEDULED with a repeating JetStream message schedule (6-field cron with
// seconds, or @every) whose target is cronfire.<user>.<name>: the server
// fires it, no timer of ours. Each firing is turned into one job by
// ingest's durable consumer on cronfire.> (runCron), with an id derived
// from the schedule's user, name and the firing's Nats-Schedule-Next (firingKey), so a redelivered
// firing, or two ingests, make one job. docs/design.md#repeating-schedules

// cronConsumer is the durable consumer of schedule firings, shared by
// every ingest.
const cronConsumer = "ingest-cron"

// scheduleRecord is a schedule's message body, copied by the server into
// every firing.
type scheduleRecord struct {
	Name      string        `json:"name"`
	User      string        `json:"user"`
	Cron      string        `json:"cron,omitempty"`
	Every     string        `json:"every,omitempty"`
	TimeZone  string        `json:"time_zone,omitempty"`
	Job       submitRequest `json:"job"`
	CreatedAt time.Time     `json:"created_at"`
}

// scheduleRequest is POST /v1/schedules's body.
type scheduleRequest struct {
	Name     string          `json:"name"`
	Cron     string          `json:"cron"`
	Every    string          `json:"every"`
	TimeZone string          `json:"time_zone"`
	Job      json.RawMessage `json:"job"`
}

// decodeSchedule checks a schedule request; the job is checked by the
// submission's own code (checkRequest), without run_at, delay_ms or an
// idempotency key (each firing has its own id).
func (s *Service) decodeSchedule(b []byte, user string) (scheduleRecord, *apiError) {
	var req scheduleRequest
	if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' {
		return scheduleRecord{}, newError(http.StatusBadRequest, CodeInvalidJSON, "body must be a JSON object")
	}
	if aerr := decodeStrict(b, &req, "schedule"); aerr != nil {
		return scheduleRecord{}, aerr
	}
	if err := envelope.ValidateID("name", req.Name); err != nil {
		return scheduleRecord{}, newError(http.StatusBadRequest, CodeInvalidName, "name must be 1 to 64 of A-Z a-z 0-9 _ - (no '.', '*', '>' or space)")
	}
	rec := scheduleRecord{Name: req.Name, User: user, TimeZone: req.TimeZone, CreatedAt: time.Now().UTC()}
	switch {
	case (req.Cron == "") == (req.Every == ""):
		return rec, newError(http.StatusBadRequest, CodeInvalidCron, "give cron or every, one of them")
	case req.Every != "":
		d, err := time.ParseDuration(req.Every)
		if err != nil || d < time.Second {
			return rec, newError(http.StatusBadRequest, CodeInvalidCron, "every must be a duration of at least 1s, e.g. 90s or 1h")
		}
		if req.TimeZone != "" {
			return rec, newError(http.StatusBadRequest, CodeInvalidCron, "time_zone goes with cron, not every")
		}
		rec.Every = req.Every
	default:
		if len(strings.Fields(req.Cron)) != 6 && !strings.HasPrefix(req.Cron, "@") {
			return rec, newError(http.StatusBadRequest, CodeInvalidCron, "cron must have 6 fields (seconds first), e.g. \"0 */5 * * * *\"")
		}
		rec.Cron = req.Cron
	}
	if req.TimeZone != "" {
		if _, err := time.LoadLocation(req.TimeZone); err != nil {
			return rec, newError(http.StatusBadRequest, CodeInvalidCron, "time_zone is not a known IANA zone")
		}
	}
	if len(req.Job) == 0 {
		return rec, newError(http.StatusBadRequest, CodeInvalidJSON, "job is required")
	}
	job, aerr := s.checkRequest(req.Job)
	if aerr != nil {
		aerr.Message = "job: " + aerr.Message
		return rec, aerr
	}
	if job.RunAt != nil || job.DelayMs != nil || job.IdempotencyKey != nil {
		return rec, newError(http.StatusBadRequest, CodeInvalidSchedule, "job: run_at, delay_ms and idempotency_key do not go in a schedule's job")
	}
	rec.Job = job
	return rec, nil
}

// pattern is the schedule's Nats-Schedule value.
func (rec scheduleRecord) pattern() string {
	if rec.Every != "" {
		return "@every " + rec.Every
	}
	return rec.Cron
}

// createSchedule handles POST /v1/schedules: 201 with the schedule, stored
// (replacing one of the same name: a schedule subject keeps its latest).
func (s *Service) createSchedule(w http.ResponseWriter, r *http.Request) {
	p, aerr := s.authenticate(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if aerr := checkJSON(r); aerr != nil {
		writeError(w, aerr)
		return
	}
	body, aerr := s.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	rec, aerr := s.decodeSchedule(body, p.User)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	b, _ := json.Marshal(rec)
	m := nats.NewMsg(envelope.CronSubject(rec.User, rec.Name))
	m.Data = b
	m.Header.Set(envelope.HeaderSchedule, rec.pattern())
	m.Header.Set(envelope.HeaderScheduleTarget, envelope.CronFireSubject(rec.User, rec.Name))
	m.Header.Set(envelope.HeaderScheduleTTL, envelope.FiredTTL)
	if rec.TimeZone != "" {
		m.Header.Set(envelope.HeaderScheduleTimeZone, rec.TimeZone)
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	if _, err := s.js.PublishMsg(ctx, m, jetstream.WithExpectStream(streams.Scheduled)); err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.Code == http.StatusBadRequest {
			// The server's own parser refused the pattern or the zone.
			writeError(w, newError(http.StatusBadRequest, CodeInvalidCron, "the schedule is refused: "+apiErr.Description))
			return
		}
		s.log.Warn("schedule not stored", "user", rec.User, "name", rec.Name, "err", err)
		writeError(w, classifyNATS(err))
		return
	}
	s.log.Info("schedule stored", "user", rec.User, "name", rec.Name, "pattern", rec.pattern(), "tz", rec.TimeZone)
	httpx.WriteJSON(w, http.StatusCreated, rec)
}

// scheduleList is GET /v1/schedules's answer.
type scheduleList struct {
	Schedules []scheduleRecord `json:"schedules"`
}

// listSchedules handles GET /v1/schedules: the caller's schedules (an
// admin's: user='s), read in one multi_last direct get.
func (s *Service) listSchedules(w http.ResponseWriter, r *http.Request) {
	p, aerr := s.authenticate(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	user, aerr := s.scheduleUser(r, p.User, p.Admin)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	out := scheduleList{Schedules: []scheduleRecord{}}
	rd := natsx.NewDirectReader(s.js, streams.Scheduled)
	_, _, err := rd.Get(ctx, natsx.DirectGet{MultiLast: []string{envelope.CronSubject(user, "*")}, Batch: 1024, MaxBytes: natsx.DirectMaxBytes},
		func(m *jetstream.RawStreamMsg) bool {
			var rec scheduleRecord
			if m.Header.Get(envelope.HeaderSchedule) != "" && json.Unmarshal(m.Data, &rec) == nil {
				out.Schedules = append(out.Schedules, rec)
			}
			return true
		})
	if err != nil {
		s.log.Warn("listing schedules failed", "user", user, "err", err)
		writeError(w, unavailable())
		return
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

// deleteSchedule handles DELETE /v1/schedules/{name}: the schedule's
// message is purged, so it fires no more. 404 when the caller has none of
// that name.
func (s *Service) deleteSchedule(w http.ResponseWriter, r *http.Request) {
	p, aerr := s.authenticate(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	name := r.PathValue("name")
	if err := envelope.ValidateID("name", name); err != nil {
		writeError(w, newError(http.StatusBadRequest, CodeInvalidName, fieldMessage(err)))
		return
	}
	user, aerr := s.scheduleUser(r, p.User, p.Admin)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	subj := envelope.CronSubject(user, name)
	m, err := natsx.GetOnLeader(ctx, s.js, streams.Scheduled, natsx.MsgGet{LastFor: subj})
	if err == nil && (m == nil || m.Header.Get(envelope.HeaderSchedule) == "") {
		writeError(w, newError(http.StatusNotFound, CodeNotFound, "no schedule "+name))
		return
	}
	var st jetstream.Stream
	if err == nil {
		st, err = s.js.Stream(ctx, streams.Scheduled)
	}
	if err == nil {
		err = st.Purge(ctx, jetstream.WithPurgeSubject(subj))
	}
	if err != nil {
		s.log.Warn("schedule not deleted", "user", user, "name", name, "err", err)
		writeError(w, unavailable())
		return
	}
	s.log.Info("schedule deleted", "user", user, "name", name, "by", p.User)
	w.WriteHeader(http.StatusNoContent)
}

// scheduleUser is whose schedules a request names: the caller's, or for
// an admin the user= query parameter's.
func (s *Service) scheduleUser(r *http.Request, self string, admin bool) (string, *apiError) {
	u := r.URL.Query().Get("user")
	if u == "" || u == self {
		return self, nil
	}
	if err := envelope.ValidateID("user", u); err != nil {
		return "", newError(http.StatusBadRequest, CodeInvalidQuery, fieldMessage(err))
	}
	if !admin {
		return "", newError(http.StatusForbidden, CodeForbidden, "only an admin may name another user")
	}
	return u, nil
}

// runCron turns each schedule firing into one job until ctx is done.
func (s *Service) runCron(ctx context.Context) error {
	c, err := s.js.CreateOrUpdateConsumer(ctx, streams.Scheduled, jetstream.ConsumerConfig{
		Durable:       cronConsumer,
		Description:   "ingest: each schedule firing (cronfire.<user>.<name>) becomes one job",
		FilterSubject: envelope.CronFireSubject("*", "*"),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: 256,
	})
	if err != nil {
		return err
	}
	cc, err := c.Consume(func(m jetstream.Msg) { s.fire(ctx, m) })
	if err != nil {
		return err
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	return nil
}

// firingKey is the idempotency key of one firing, from what the server
// stamps on the fired message itself rather than from when it was stored
// (a stored time rounded to the second could merge two firings of an
// "every 1s" schedule, or split none, as the fire lag drifts around the
// half second): the schedule's name and creation time (a schedule created
// again under the same name is another schedule) and the firing's
// Nats-Schedule-Next, the time the server computed for the schedule's next
// firing when it fired this one. The server fires a schedule at the time
// the previous firing named and names a later one each time, so each
// firing has its own value, and a redelivered firing (or one two ingests
// race for) carries the same. A firing without the header (not fired by a
// server: published by hand) falls back to its stream sequence, as unique
// and as stable. next is what the key used, for the log.
func firingKey(rec scheduleRecord, h nats.Header, streamSeq uint64) (key, next string) {
	key = "beamline-schedule-v2\x00" + rec.Name + "\x00" + rec.CreatedAt.UTC().Format(time.RFC3339Nano) + "\x00"
	if next = h.Get(envelope.HeaderScheduleNext); next != "" && next != envelope.ScheduleNextPurge {
		return key + "next " + next, next
	}
	return key + "seq " + strconv.FormatUint(streamSeq, 10), ""
}

// fire makes the job of one firing: id from the schedule's user and the
// firing's identity (firingKey), published like a keyed submission; acked
// once stored, Nak'd to be retried otherwise.
func (s *Service) fire(ctx context.Context, m jetstream.Msg) {
	var rec scheduleRecord
	meta, err := m.Metadata()
	if err != nil || json.Unmarshal(m.Data(), &rec) != nil || envelope.ValidateID("user", rec.User) != nil {
		s.log.Error("a schedule firing that is no schedule; dropped", "subject", m.Subject(), "err", err)
		if err := m.Term(); err != nil {
			s.log.Warn("term failed", "subject", m.Subject(), "err", err)
		}
		return
	}
	key, next := firingKey(rec, m.Headers(), meta.Sequence.Stream)
	req := rec.Job
	req.IdempotencyKey = &key
	job := newJob(rec.User, req)
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RequestTimeout)
	defer cancel()
	log := s.log.With("schedule", rec.Name, "user", rec.User, "job", job.ID,
		"stored_at", meta.Timestamp.UTC(), "schedule_next", next, "stream_seq", meta.Sequence.Stream)
	_, found, aerr := s.keyedExisting(fctx, job)
	if aerr == nil && !found {
		var msg *nats.Msg
		msg, _, aerr = s.jobMsg(fctx, job, time.Time{})
		if aerr == nil {
			if _, err := s.js.PublishMsg(fctx, msg, jetstream.WithExpectStream(streams.Jobs)); err != nil {
				aerr = classifyNATS(err)
			} else {
				s.index(fctx, job, nil)
			}
		}
	}
	if aerr != nil {
		log.Warn("schedule firing not stored; will retry", "code", aerr.Code)
		if err := m.NakWithDelay(time.Second); err != nil {
			log.Warn("nak failed", "err", err)
		}
		return
	}
	log.Log(fctx, slog.LevelInfo, "schedule fired", "existing", found)
	if err := m.Ack(); err != nil {
		log.Warn("ack of a firing failed; its redelivery makes the same job", "err", err)
	}
}
