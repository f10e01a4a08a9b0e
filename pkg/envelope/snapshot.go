package envelope

import (
	"encoding/json"
	"strconv"
	"time"
)

// Status is where a job is in its lifecycle:
//
//	[scheduled →] queued → running → (progress)* → succeeded | failed | retrying → running … | dead | cancelled
//	queued → expired (not started before its expires_at)
//
// A job submitted with run_at or delay_ms is scheduled until it is due,
// then queued; it may be cancelled while scheduled.
type Status string

// The statuses.
const (
	StatusScheduled Status = "scheduled"
	StatusQueued    Status = "queued"
	StatusRunning   Status = "running"
	StatusRetrying  Status = "retrying"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusDead      Status = "dead"
	StatusCancelled Status = "cancelled"
	// StatusExpired: the job was not started before its expires_at.
	StatusExpired Status = "expired"
)

// Terminal reports whether s is final: no later event may change it.
func (s Status) Terminal() bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusDead || s == StatusCancelled || s == StatusExpired
}

// Valid reports whether s is one of the statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusScheduled, StatusQueued, StatusRunning, StatusRetrying:
		return true
	}
	return s.Terminal()
}

// Snapshot is the state of one job, as stored in the job_status KV bucket,
// returned by GET /v1/jobs/{id}, carried by every event and by the notifier's
// join reply. Seq grows by one with every event of the job, so clients
// de-duplicate and resume by it.
type Snapshot struct {
	ID       string          `json:"id"`
	User     string          `json:"user"`
	Kind     string          `json:"kind"`
	Priority Priority        `json:"priority"`
	Status   Status          `json:"status"`
	Progress int             `json:"progress"`
	Attempt  int             `json:"attempt"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
	// Preview is the latest intermediate output of the running attempt
	// (a live preview: the image forming), set by progress events; absent
	// until the provider reported one. A new attempt clears it.
	Preview   *Preview  `json:"preview,omitempty"`
	Seq       uint64    `json:"seq"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Remote is the telemetry of the job's remote work (a Cog or
	// Replicate prediction), once a run awaited it; absent for jobs of
	// other providers.
	Remote *RemoteStats `json:"remote,omitempty"`
	// RunAt is when a scheduled job is due (status scheduled only).
	RunAt *time.Time `json:"run_at,omitempty"`
	// RerunOf is the job this one reruns.
	RerunOf string `json:"rerun_of,omitempty"`
	// Provider names the provider that runs (or ran) the job's latest
	// attempt ("sim", "cog", "replicate:owner/name"), set by the processor
	// with running and kept by the attempt's later events, so each event of
	// a job's timeline says who served it; absent before the first start.
	Provider string `json:"provider,omitempty"`
}

// Preview names a running job's latest intermediate output, stored like
// its outputs (docs/design.md#live-previews). Output and URL name it for a
// client with a bearer token; SignedURL, when set, is a short-lived URL
// that needs none (for <img src>), valid until ExpiresAt.
type Preview struct {
	// Output is the stored output's name, "preview".
	Output string `json:"output"`
	// URL is where ingest serves it: /v1/jobs/<job>/outputs/preview.
	URL         string     `json:"url"`
	SignedURL   string     `json:"signed_url,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	ContentType string     `json:"content_type"`
	Size        int64      `json:"size"`
	// Digest is the SHA-256 of the bytes ("SHA-256=<base64url>"); it
	// changes with every new preview.
	Digest string `json:"digest"`
}

// RemoteStats is what the processor learnt about a job's remote work
// (docs/design.md#telemetry).
type RemoteStats struct {
	// Provider is the provider's name ("cog", "replicate:owner/name").
	Provider string `json:"provider"`
	// Starts is the remote work Beamline started for the job (new
	// predictions, not resumes): 1 unless a prediction failed, or was
	// started again, which is then visible.
	Starts int `json:"starts"`
	// QueuedMS is how long the last prediction waited at the provider
	// before it ran (its started_at − created_at), in milliseconds.
	QueuedMS int64 `json:"queued_ms,omitempty"`
	// RunMS is the last prediction's run time (its metrics.predict_time),
	// in milliseconds.
	RunMS int64 `json:"run_ms,omitempty"`
}

// NewSnapshot is the queued snapshot (seq 0) of a job that was just accepted.
func NewSnapshot(j Job) Snapshot {
	return Snapshot{
		ID:        j.ID,
		User:      j.User,
		Kind:      j.Kind,
		Priority:  j.Priority,
		Status:    StatusQueued,
		CreatedAt: j.CreatedAt,
		UpdatedAt: j.CreatedAt,
		RerunOf:   j.RerunOf,
	}
}

// NewScheduledSnapshot is the snapshot (seq 0) of a job accepted to run at
// runAt.
func NewScheduledSnapshot(j Job, runAt time.Time) Snapshot {
	s := NewSnapshot(j)
	s.Status = StatusScheduled
	at := runAt.UTC()
	s.RunAt = &at
	return s
}

// Validate checks the tokens, the status and the progress range, and that
// the result, if any, is JSON.
func (s *Snapshot) Validate() error { return s.validate(true) }

// validate is Validate; without checkResult it leaves the result to a
// caller whose encoding/json pass checks it anyway (json.Valid was ~3 % of
// the no-op pipeline's CPU, for a check made twice).
func (s *Snapshot) validate(checkResult bool) error {
	if err := validateTokens(s.ID, s.User, s.Kind, s.Priority); err != nil {
		return err
	}
	if !s.Status.Valid() {
		return fieldErr("status", ErrMalformed, "unknown status %q", string(s.Status))
	}
	if s.Progress < 0 || s.Progress > 100 {
		return fieldErr("progress", ErrMalformed, "%d is outside 0..100", s.Progress)
	}
	if checkResult && len(s.Result) > 0 && !json.Valid(s.Result) {
		return fieldErr("result", ErrMalformed, "not JSON")
	}
	if r := s.Remote; r != nil && (r.Starts < 0 || r.QueuedMS < 0 || r.RunMS < 0) {
		return fieldErr("remote", ErrMalformed, "negative starts or times")
	}
	return nil
}

// Marshal encodes a snapshot (for the KV bucket).
// It writes what json.Marshal writes, without its reflection.
func (s *Snapshot) Marshal() ([]byte, error) { return marshalSnapshot(s) }

// DecodeSnapshot parses and validates a snapshot from the KV bucket.
func DecodeSnapshot(b []byte) (Snapshot, error) {
	if len(b) > MaxSize {
		return Snapshot{}, fieldErr("snapshot", ErrTooLarge, "%d bytes, limit %d", len(b), MaxSize)
	}
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return Snapshot{}, fieldErr("snapshot", ErrMalformed, "%v", err)
	}
	return s, s.validate(false) // Unmarshal checked the result
}

// EventID is the envelope id (and Nats-Msg-Id) of a job's event number seq.
// Publishing the same event twice is therefore de-duplicated by JetStream.
func EventID(job string, seq uint64) string { return job + ":" + strconv.FormatUint(seq, 10) }

// NewEvent wraps a snapshot in an event envelope of type t. The envelope id
// is EventID(s.ID, s.Seq).
func NewEvent(t Type, s Snapshot, source string) (*Envelope, error) {
	if t == TypeSubmitted || !t.Known() {
		return nil, fieldErr("type", ErrUnknownType, "%q is not an event type", string(t))
	}
	if err := s.validate(false); err != nil {
		return nil, err
	}
	data, err := marshalSnapshot(&s) // checks the result as Validate would
	if err != nil {
		if len(s.Result) > 0 && !json.Valid(s.Result) {
			return nil, fieldErr("result", ErrMalformed, "not JSON")
		}
		return nil, fieldErr("data", ErrMalformed, "%v", err)
	}
	at := s.UpdatedAt
	if at.IsZero() {
		at = time.Now().UTC()
	}
	return &Envelope{
		SpecVersion:     SpecVersion,
		ID:              EventID(s.ID, s.Seq),
		Source:          source,
		Type:            t,
		Subject:         s.ID,
		Time:            at,
		DataContentType: ContentType,
		Data:            data,
	}, nil
}

// DecodeEvent decodes an event envelope and its snapshot.
func DecodeEvent(b []byte) (*Envelope, Snapshot, error) {
	e, err := Decode(b)
	if err != nil {
		return nil, Snapshot{}, err
	}
	if e.Type == TypeSubmitted {
		return nil, Snapshot{}, fieldErr("type", ErrUnknownType, "%q is not an event type", string(e.Type))
	}
	s, err := DecodeSnapshot(e.Data)
	if err != nil {
		return nil, Snapshot{}, err
	}
	return e, s, nil
}

// EventHead is what pushing an event needs of it: the envelope's type,
// time and data (the snapshot's JSON, verbatim) and the snapshot's seq and
// status, without decoding the rest of the snapshot.
type EventHead struct {
	Type   Type
	Time   time.Time
	Data   json.RawMessage
	ID     string
	Seq    uint64
	Status Status
}

// eventHead is the part of a snapshot DecodeEventHead reads.
type eventHead struct {
	ID     string `json:"id"`
	Seq    uint64 `json:"seq"`
	Status Status `json:"status"`
}

// DecodeEventHead decodes an event envelope as DecodeEvent does (the same
// checks of the envelope, the whole message parsed as JSON) but reads only
// the snapshot's id, seq and status, checked as DecodeSnapshot checks
// them. The notifier pushes a stored event's snapshot verbatim, so it has
// no use for the rest, and decoding all of it was most of the CPU and
// garbage of each live event (docs/design.md#live-events-come-from-republish).
// Whatever DecodeEvent accepts, DecodeEventHead accepts with the same
// fields (FuzzDecodeEvent checks it).
func DecodeEventHead(b []byte) (EventHead, error) {
	e, err := Decode(b)
	if err != nil {
		return EventHead{}, err
	}
	if e.Type == TypeSubmitted {
		return EventHead{}, fieldErr("type", ErrUnknownType, "%q is not an event type", string(e.Type))
	}
	var h eventHead
	if err := json.Unmarshal(e.Data, &h); err != nil {
		return EventHead{}, fieldErr("snapshot", ErrMalformed, "%v", err)
	}
	if err := ValidateID("id", h.ID); err != nil {
		return EventHead{}, err
	}
	if !h.Status.Valid() {
		return EventHead{}, fieldErr("status", ErrMalformed, "unknown status %q", string(h.Status))
	}
	return EventHead{Type: e.Type, Time: e.Time, Data: e.Data, ID: h.ID, Seq: h.Seq, Status: h.Status}, nil
}

// EventType is the envelope type for a transition into s. progress reports a
// running job's progress; started a running job's first event of an attempt.
func EventType(s Status) Type {
	switch s {
	case StatusQueued:
		return TypeSubmitted
	case StatusRunning:
		return TypeStarted
	case StatusRetrying:
		return TypeRetrying
	case StatusSucceeded:
		return TypeSucceeded
	case StatusFailed:
		return TypeFailed
	case StatusDead:
		return TypeDead
	case StatusCancelled:
		return TypeCancelled
	case StatusExpired:
		return TypeExpired
	}
	return ""
}
