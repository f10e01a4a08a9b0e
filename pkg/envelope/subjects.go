package envelope

import "strings"

// Every NATS subject and KV key of the wire format is built and parsed here;
// subjects.md lists them with their streams, publishers and readers.

// Subject prefixes (first tokens).
const (
	jobsToken   = "jobs"
	eventsToken = "events"
	cancelToken = "cancel"
	dlqToken    = "dlq"
	hooksToken  = "webhooks"
	indexToken  = "jobindex"
	schedToken  = "sched"
	fireToken   = "schedfire"
	cronToken   = "cron"
	cronFire    = "cronfire"
)

// LivePrefix is what the EVENTS stream puts before an event's subject when it
// re-publishes the stored event on core NATS (streams/events.json:
// "republish": events.> → live.events.>).
const LivePrefix = "live."

// CancelFilter matches every cancel notice: cancel.<user>.<job>.
const CancelFilter = cancelToken + ".*.*"

// JobSubject is the queue of a priority and kind: jobs.<priority>.<kind>.
// A job published here (as publishers from before the one-write submission
// do) is accepted and processed like any other, but it cannot be read before
// a processor picks it up. JOBS does not store it under this subject: its
// subject transform (streams/jobs.json) appends QueueToken, so every message
// JOBS holds has four tokens and the processor's consumer for a priority and
// kind needs one filter, JobFilter.
func JobSubject(p Priority, kind string) string { return jobsToken + "." + string(p) + "." + kind }

// QueueToken is the fourth token under which JOBS stores a job published to
// its queue's subject (JobSubject): jobs.<priority>.<kind>.~queue. It is not
// a job id: ValidateID refuses '~', so no job subject can collide with it.
const QueueToken = "~queue"

// JobFilter matches every message JOBS stores for a priority and kind,
// jobs.<priority>.<kind>.*: the job subjects (JobMsgSubject) and the queue's
// stored subject (QueueToken). It is the filter of the processor's consumer.
func JobFilter(p Priority, kind string) string { return JobSubject(p, kind) + ".*" }

// PublishedJobSubject is the subject a JOBS message was published to, given
// the subject JOBS stored it under: a queue's stored subject loses its
// QueueToken; any other subject is returned as it is.
func PublishedJobSubject(stored string) string {
	if q, ok := strings.CutSuffix(stored, "."+QueueToken); ok {
		return q
	}
	return stored
}

// JobMsgSubject is the subject a job is published to:
// jobs.<priority>.<kind>.<job>. The job id in the subject is what lets a
// queued job be read straight from JOBS (JobLookupSubject) before any
// processor has written its snapshot.
func JobMsgSubject(p Priority, kind, job string) string {
	return JobSubject(p, kind) + "." + job
}

// JobLookupSubject matches the message of one job in JOBS whatever its
// priority and kind: jobs.*.*.<job>.
func JobLookupSubject(job string) string { return jobsToken + ".*.*." + job }

// EventSubject is the subject of a job's events: events.<user>.<job>.
func EventSubject(user, job string) string { return eventsToken + "." + user + "." + job }

// UserEventsSubject matches the events of every job of a user:
// events.<user>.*.
func UserEventsSubject(user string) string { return EventSubject(user, "*") }

// IsJobEventSubject reports whether subject is the event subject of one job
// (events.<user>.<job>), as opposed to a wildcard such as UserEventsSubject.
func IsJobEventSubject(subject string) bool {
	_, job, ok := splitEventSubject(subject)
	return ok && job != "*" && job != ">"
}

// ParseEventSubject splits events.<user>.<job>, validating both tokens.
func ParseEventSubject(subject string) (user, job string, err error) {
	user, job, ok := splitEventSubject(subject)
	if !ok {
		return "", "", fieldErr("subject", ErrInvalidToken, "%q is not events.<user>.<job>", subject)
	}
	if err := ValidateID("user", user); err != nil {
		return "", "", err
	}
	if err := ValidateID("job", job); err != nil {
		return "", "", err
	}
	return user, job, nil
}

// splitEventSubject cuts events.<user>.<job> into its two non-empty tokens
// without allocating (the notifier asks for every live event).
func splitEventSubject(subject string) (user, job string, ok bool) {
	rest, ok := strings.CutPrefix(subject, eventsToken+".")
	if !ok {
		return "", "", false
	}
	user, job, ok = strings.Cut(rest, ".")
	if !ok || user == "" || job == "" || strings.IndexByte(job, '.') >= 0 {
		return "", "", false
	}
	return user, job, true
}

// LiveSubject is the core-NATS subject on which EVENTS re-publishes the
// events stored on subject (an event subject or a wildcard of them):
// live.events.<user>.<job>.
func LiveSubject(subject string) string { return LivePrefix + subject }

// EventSubjectOfLive is the inverse of LiveSubject: the stored event's
// subject, and false when live is not a re-published subject.
func EventSubjectOfLive(live string) (string, bool) { return strings.CutPrefix(live, LivePrefix) }

// CancelSubject is the core-NATS subject (not stored) ingest publishes to,
// with an empty body, after it cancelled a job, so that a processor running
// the job cancels its context: cancel.<user>.<job>.
func CancelSubject(user, job string) string { return cancelToken + "." + user + "." + job }

// ParseCancelSubject splits cancel.<user>.<job>, validating both tokens.
func ParseCancelSubject(subject string) (user, job string, err error) {
	parts := strings.Split(subject, ".")
	if len(parts) != 3 || parts[0] != cancelToken {
		return "", "", fieldErr("subject", ErrInvalidToken, "%q is not cancel.<user>.<job>", subject)
	}
	if err := ValidateID("user", parts[1]); err != nil {
		return "", "", err
	}
	if err := ValidateID("job", parts[2]); err != nil {
		return "", "", err
	}
	return parts[1], parts[2], nil
}

// DLQSubject is the dead-letter subject of a kind: dlq.<kind>.
func DLQSubject(kind string) string { return dlqToken + "." + kind }

// DLQMarkerKey is the job_status KV key that records that a dead job's DLQ
// copy is stored: dlq.<job>. No job id has a dot, so it never collides with
// a job's own key.
func DLQMarkerKey(job string) string { return dlqToken + "." + job }

// ParseJobSubject splits jobs.<priority>.<kind>[.<job>], validating every
// token; job is empty for a job published to its queue's subject, whether
// as published (jobs.<priority>.<kind>) or as JOBS stores it
// (jobs.<priority>.<kind>.~queue, QueueToken).
func ParseJobSubject(subject string) (p Priority, kind, job string, err error) {
	parts := strings.Split(subject, ".")
	if (len(parts) != 3 && len(parts) != 4) || parts[0] != jobsToken {
		return "", "", "", fieldErr("subject", ErrInvalidToken, "%q is not jobs.<priority>.<kind>[.<job>]", subject)
	}
	p, kind = Priority(parts[1]), parts[2]
	if err := ValidatePriority(p); err != nil {
		return "", "", "", err
	}
	if err := ValidateKind(kind); err != nil {
		return "", "", "", err
	}
	if len(parts) == 4 && parts[3] != QueueToken {
		job = parts[3]
		if err := ValidateID("job", job); err != nil {
			return "", "", "", err
		}
	}
	return p, kind, job, nil
}

// Webhook APIs: the second token of a webhook subject, one per remote API
// whose webhooks ingest receives (not a provider's configured name, which
// may hold a ':' or a '/').
const (
	WebhookCog       = "cog"
	WebhookReplicate = "replicate"
)

// Kinds of webhook delivery: the last token of a webhook subject.
const (
	// webhookUpdate is a delivery about work still running (start, output,
	// logs).
	webhookUpdate = "update"
	// webhookFinal is a delivery of a terminal state (succeeded, failed,
	// canceled): kept on its own subject so that a job's last one is one
	// direct get (last by subject) away.
	webhookFinal = "final"
)

// WebhookFilter matches every stored webhook delivery:
// webhooks.<api>.<job>.<update|final>.
const WebhookFilter = hooksToken + ".*.*.*"

// WebhookSubject is the subject ingest stores a webhook delivery on:
// webhooks.<api>.<job>.final for a terminal state, else
// webhooks.<api>.<job>.update. api is WebhookCog or WebhookReplicate.
func WebhookSubject(api, job string, final bool) string {
	last := webhookUpdate
	if final {
		last = webhookFinal
	}
	return hooksToken + "." + api + "." + job + "." + last
}

// ParseWebhookSubject splits webhooks.<api>.<job>.<update|final>,
// validating every token.
func ParseWebhookSubject(subject string) (api, job string, final bool, err error) {
	parts := strings.Split(subject, ".")
	if len(parts) != 4 || parts[0] != hooksToken || (parts[3] != webhookUpdate && parts[3] != webhookFinal) {
		return "", "", false, fieldErr("subject", ErrInvalidToken, "%q is not webhooks.<api>.<job>.<update|final>", subject)
	}
	if parts[1] != WebhookCog && parts[1] != WebhookReplicate {
		return "", "", false, fieldErr("subject", ErrInvalidToken, "%q: unknown webhook api %q", subject, parts[1])
	}
	if err := ValidateID("job", parts[2]); err != nil {
		return "", "", false, err
	}
	return parts[1], parts[2], parts[3] == webhookFinal, nil
}

// Presence and studio rooms (core NATS, not stored; the notifiers only).
const (
	presencePrefix = "beamline.presence."
	studioPrefix   = "beamline.studio."
)

// PresenceFilter matches every notifier's presence messages:
// beamline.presence.<node>.
const PresenceFilter = presencePrefix + "*"

// PresenceSubject is where the notifier named node publishes its presence
// diffs and heartbeats: beamline.presence.<node>.
func PresenceSubject(node string) string { return presencePrefix + node }

// StudioFilter matches the messages of every studio room:
// beamline.studio.<room>.
const StudioFilter = studioPrefix + "*"

// StudioSubject is where the members' messages of a studio room travel
// between notifiers: beamline.studio.<room>. room must have passed
// ValidateRoom.
func StudioSubject(room string) string { return studioPrefix + room }

// RoomOfStudioSubject is the inverse of StudioSubject; false when subject
// is not a valid room's.
func RoomOfStudioSubject(subject string) (string, bool) {
	room, ok := strings.CutPrefix(subject, studioPrefix)
	if !ok || ValidateRoom(room) != nil {
		return "", false
	}
	return room, true
}

// ValidateRoom checks a studio room name: it becomes a subject token, so
// it follows the id rules; a '.', '*' or '>' gets its own message.
func ValidateRoom(room string) error {
	if strings.ContainsAny(room, ".*>") {
		return fieldErr("room", ErrInvalidToken, "a room name may not contain '.', '*' or '>'")
	}
	return ValidateID("room", room)
}

// IndexSubject is where ingest records that it accepted a job of user and
// kind (stream JOBINDEX; an entry names one job or, as a bundle, several:
// see HeaderIndexBundle): jobindex.<user>.<kind>. A user's jobs are read
// newest first from there (GET /v1/jobs).
func IndexSubject(user, kind string) string { return indexToken + "." + user + "." + kind }

// UserIndexFilter matches the index entries of every kind of a user:
// jobindex.<user>.*.
func UserIndexFilter(user string) string { return IndexSubject(user, "*") }

// KVKeySubject is the subject of a key of the job_status bucket:
// $KV.job_status.<key>.
func KVKeySubject(bucket, key string) string { return "$KV." + bucket + "." + key }

// ScheduleSubject holds a scheduled job's schedule message (stream
// SCHEDULED) until it is due: sched.<job>. Its body is the job's submitted
// envelope; its Nats-Schedule-Target is ScheduleFireSubject.
func ScheduleSubject(job string) string { return schedToken + "." + job }

// ScheduleFireSubject is where the server puts a scheduled job when it is
// due: schedfire.<job>.<priority>.<kind>. JOBS sources these, rewritten to
// JobMsgSubject (streams/jobs.json), so the job is then queued like any
// other.
func ScheduleFireSubject(p Priority, kind, job string) string {
	return fireToken + "." + job + "." + string(p) + "." + kind
}

// ScheduleFireLookup matches the fired copy of one job whatever its
// priority and kind: schedfire.<job>.*.*.
func ScheduleFireLookup(job string) string { return fireToken + "." + job + ".*.*" }

// CronSubject holds a user's repeating schedule (stream SCHEDULED, a cron
// or @every message schedule): cron.<user>.<name>; the name is a token
// like a job id.
func CronSubject(user, name string) string { return cronToken + "." + user + "." + name }

// CronFireSubject is where the server puts each firing of a schedule:
// cronfire.<user>.<name>; ingest turns each into one job.
func CronFireSubject(user, name string) string { return cronFire + "." + user + "." + name }
