package envelope

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/beamline/beamline/internal/jsonscan"
)

// Job is the data of a beamline.job.submitted envelope: what a service asks
// the pipeline to do.
type Job struct {
	ID       string   `json:"id"`
	User     string   `json:"user"`
	Kind     string   `json:"kind"`
	Priority Priority `json:"priority"`
	// Input is handed to the provider as it is. It must be a JSON object when set.
	Input     json.RawMessage `json:"input,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
	// ExpiresAt, when set, is when a job not started yet ends expired
	// instead of running (checked when a processor takes it).
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// RerunOf is the job this one reruns (POST /v1/jobs/{id}/rerun).
	RerunOf string `json:"rerun_of,omitempty"`
}

// MaxInputDepth bounds how deeply a job's input nests (objects and arrays
// inside the input object, which is level 1). encoding/json refuses a
// document nested deeper than 10,000 levels, and the input travels inside
// a request body, a batch and an envelope: an input accepted near that
// limit could not be decoded by the processor that must run it.
const MaxInputDepth = 256

// ValidateInput checks a job's input, valid JSON already: a JSON object
// nested at most MaxInputDepth levels.
func ValidateInput(raw json.RawMessage) error {
	if !isObject(raw) {
		return fieldErr("input", ErrMalformed, "must be a JSON object")
	}
	if _, depth, _ := jsonscan.ObjectSpan(bytes.TrimLeft(raw, " \t\r\n"), 0); depth > MaxInputDepth {
		return fieldErr("input", ErrMalformed, "nested deeper than %d levels", MaxInputDepth)
	}
	return nil
}

// validateTokens checks what a job and its snapshots share: the id, the
// user, the kind and the priority.
func validateTokens(id, user, kind string, prio Priority) error {
	if err := ValidateID("id", id); err != nil {
		return err
	}
	if err := ValidateID("user", user); err != nil {
		return err
	}
	if err := ValidateKind(kind); err != nil {
		return err
	}
	return ValidatePriority(prio)
}

// Validate checks the tokens of j and that Input, if set, is a JSON object.
func (j *Job) Validate() error {
	if err := validateTokens(j.ID, j.User, j.Kind, j.Priority); err != nil {
		return err
	}
	if len(j.Input) > 0 {
		if err := ValidateInput(j.Input); err != nil {
			return err
		}
	}
	if j.CreatedAt.IsZero() {
		return fieldErr("created_at", ErrMissingAttribute, "")
	}
	if j.RerunOf != "" {
		if err := ValidateID("rerun_of", j.RerunOf); err != nil {
			return err
		}
	}
	return nil
}

// Subject is the subject the job is published to: jobs.<priority>.<kind>.<id>.
func (j *Job) Subject() string { return JobMsgSubject(j.Priority, j.Kind, j.ID) }

// NewJobEnvelope wraps a validated job in a submitted envelope. source names
// the submitting service as a URI reference, e.g. "/beamline/ingest".
func NewJobEnvelope(j Job, source string) (*Envelope, error) {
	if err := j.Validate(); err != nil {
		return nil, err
	}
	data, err := json.Marshal(j)
	if err != nil {
		return nil, fieldErr("input", ErrMalformed, "%v", err)
	}
	return &Envelope{
		SpecVersion:     SpecVersion,
		ID:              j.ID,
		Source:          source,
		Type:            TypeSubmitted,
		Subject:         j.ID,
		Time:            j.CreatedAt,
		DataContentType: ContentType,
		Data:            data,
	}, nil
}

// EncodeJob is NewJobEnvelope followed by Encode, in one pass: it writes the
// envelope's JSON directly instead of marshalling the job and then the
// envelope around it (two reflection passes and two copies of the input).
// Every submission goes through it, and it cost more CPU than the JetStream
// publish of the result. The output decodes to the same envelope and job;
// TestEncodeJobMatchesEncode and FuzzDecodeJob hold it to that.
func EncodeJob(j Job, source string) ([]byte, error) {
	if err := j.Validate(); err != nil {
		return nil, err
	}
	if source == "" {
		return nil, fieldErr("source", ErrMissingAttribute, "")
	}
	// AppendText is time.Time's MarshalJSON without the quotes: RFC 3339
	// with nanoseconds, refusing what RFC 3339 cannot hold (a year past
	// 9999, a zone offset of 24 hours or more).
	var tbuf [48]byte
	at, err := j.CreatedAt.AppendText(tbuf[:0])
	if err != nil {
		return nil, fieldErr("created_at", ErrMalformed, "%v", err)
	}
	src, err := json.Marshal(source)
	if err != nil {
		return nil, fieldErr("source", ErrMalformed, "%v", err)
	}
	// The id, user, kind and priority are validated tokens: no byte of
	// theirs needs escaping in a JSON string.
	b := make([]byte, 0, 384+len(src)+len(j.Input))
	b = append(b, `{"specversion":"`+SpecVersion+`","id":"`...)
	b = append(b, j.ID...)
	b = append(b, `","source":`...)
	b = append(b, src...)
	b = append(b, `,"type":"`+string(TypeSubmitted)+`","subject":"`...)
	b = append(b, j.ID...)
	b = append(b, `","time":"`...)
	b = append(b, at...)
	b = append(b, `","datacontenttype":"`+ContentType+`","data":{"id":"`...)
	b = append(b, j.ID...)
	b = append(b, `","user":"`...)
	b = append(b, j.User...)
	b = append(b, `","kind":"`...)
	b = append(b, j.Kind...)
	b = append(b, `","priority":"`...)
	b = append(b, j.Priority...)
	b = append(b, '"')
	if len(j.Input) > 0 {
		b = append(b, `,"input":`...)
		buf := bytes.NewBuffer(b)
		if err := json.Compact(buf, j.Input); err != nil {
			return nil, fieldErr("input", ErrMalformed, "%v", err)
		}
		b = buf.Bytes()
	}
	b = append(b, `,"created_at":"`...)
	b = append(b, at...)
	b = append(b, '"')
	if j.ExpiresAt != nil {
		exp, err := j.ExpiresAt.AppendText(tbuf[:0])
		if err != nil {
			return nil, fieldErr("expires_at", ErrMalformed, "%v", err)
		}
		b = append(b, `,"expires_at":"`...)
		b = append(b, exp...)
		b = append(b, '"')
	}
	if j.RerunOf != "" { // a validated token
		b = append(b, `,"rerun_of":"`...)
		b = append(b, j.RerunOf...)
		b = append(b, '"')
	}
	b = append(b, `}}`...)
	if len(b) > MaxSize {
		return nil, fieldErr("envelope", ErrTooLarge, "%d bytes, limit %d", len(b), MaxSize)
	}
	return b, nil
}

// DecodeJob decodes a submitted envelope and validates its job. The envelope
// id must equal the job id, so a message cannot claim one id and carry another.
func DecodeJob(b []byte) (*Envelope, Job, error) {
	if len(b) > MaxSize {
		return nil, Job{}, fieldErr("envelope", ErrTooLarge, "%d bytes, limit %d", len(b), MaxSize)
	}
	e, j, ok := scanJob(b)
	if !ok {
		return decodeJobJSON(b)
	}
	if err := e.validate(); err != nil {
		return nil, Job{}, err
	}
	return checkJob(e, j)
}

// decodeJobJSON is DecodeJob with encoding/json, for any layout scanJob
// does not read.
func decodeJobJSON(b []byte) (*Envelope, Job, error) {
	e, err := Decode(b)
	if err != nil {
		return nil, Job{}, err
	}
	if e.Type != TypeSubmitted {
		return nil, Job{}, fieldErr("type", ErrUnknownType, "%q is not %q", string(e.Type), string(TypeSubmitted))
	}
	var j Job
	if err := json.Unmarshal(e.Data, &j); err != nil {
		return nil, Job{}, fieldErr("data", ErrMalformed, "%v", err)
	}
	return checkJob(e, j)
}

// checkJob is what DecodeJob asks of a decoded envelope and job.
func checkJob(e *Envelope, j Job) (*Envelope, Job, error) {
	if e.Type != TypeSubmitted {
		return nil, Job{}, fieldErr("type", ErrUnknownType, "%q is not %q", string(e.Type), string(TypeSubmitted))
	}
	if err := j.Validate(); err != nil {
		return nil, Job{}, err
	}
	if e.ID != j.ID {
		return nil, Job{}, fieldErr("id", ErrMalformed, "envelope id %q differs from job id %q", e.ID, j.ID)
	}
	return e, j, nil
}
