package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/beamline/beamline/internal/jsonscan"
	"github.com/beamline/beamline/pkg/envelope"
)

// submitRequest is the body of POST /v1/jobs, and one item of POST
// /v1/jobs/batch.
type submitRequest struct {
	Kind     string            `json:"kind"`
	Priority envelope.Priority `json:"priority"`
	Input    json.RawMessage   `json:"input"`
	// IdempotencyKey is a batch item's own key (a single submission sends
	// the Idempotency-Key header instead and is refused with this field).
	// Present but empty is refused, like an empty header.
	IdempotencyKey *string `json:"idempotency_key,omitempty"`
	// RunAt (RFC 3339) or DelayMs schedule the job for later
	// (docs/design.md#scheduled-jobs); at most one of them.
	RunAt   *string `json:"run_at,omitempty"`
	DelayMs *int64  `json:"delay_ms,omitempty"`
	// ExpiresInMs: a job not started this long after it is due ends
	// expired (docs/design.md#expiring-jobs).
	ExpiresInMs *int64 `json:"expires_in_ms,omitempty"`

	runAt time.Time // RunAt, parsed
	due   time.Time // when the job is due; zero: now (checkRequest)
}

// key is the request's idempotency key, "" without one.
func (r submitRequest) key() string {
	if r.IdempotencyKey == nil {
		return ""
	}
	return *r.IdempotencyKey
}

var emptyObject = json.RawMessage(`{}`)

// decodeSubmit parses and checks a POST /v1/jobs body: exactly one JSON
// object with no unknown fields, a valid kind token, a priority (default
// normal) and an input that is a JSON object (absent or null means {}).
// Whether the kind is served is the caller's question. Errors are *apiError
// with status 400.
func decodeSubmit(b []byte) (submitRequest, error) {
	req, ok := decodeSubmitPlain(b)
	if !ok {
		var err error
		if req, err = decodeSubmitJSON(b); err != nil {
			return submitRequest{}, err
		}
	}
	if err := envelope.ValidateKind(req.Kind); err != nil {
		return submitRequest{}, newError(http.StatusBadRequest, CodeInvalidKind, fieldMessage(err))
	}
	if req.Priority == "" {
		req.Priority = envelope.PriorityNormal
	}
	if err := envelope.ValidatePriority(req.Priority); err != nil {
		return submitRequest{}, newError(http.StatusBadRequest, CodeInvalidPriority, fieldMessage(err))
	}
	in := bytes.TrimSpace(req.Input)
	switch {
	case len(in) == 0 || bytes.Equal(in, []byte("null")):
		req.Input = emptyObject
	case in[0] != '{':
		return submitRequest{}, newError(http.StatusBadRequest, CodeInvalidInput, "input must be a JSON object")
	default:
		if err := envelope.ValidateInput(in); err != nil {
			return submitRequest{}, newError(http.StatusBadRequest, CodeInvalidInput, fieldMessage(err))
		}
		req.Input = in
	}
	if req.IdempotencyKey != nil {
		if e := checkIdempotencyKey(*req.IdempotencyKey); e != nil {
			return submitRequest{}, e
		}
	}
	switch {
	case req.RunAt != nil && req.DelayMs != nil:
		return submitRequest{}, newError(http.StatusBadRequest, CodeInvalidSchedule, "give run_at or delay_ms, not both")
	case req.RunAt != nil:
		t, err := time.Parse(time.RFC3339Nano, *req.RunAt)
		if err != nil {
			return submitRequest{}, newError(http.StatusBadRequest, CodeInvalidSchedule, "run_at must be an RFC 3339 time, e.g. 2030-01-02T15:04:05Z")
		}
		req.runAt = t
	case req.DelayMs != nil && *req.DelayMs < 0:
		return submitRequest{}, newError(http.StatusBadRequest, CodeInvalidSchedule, "delay_ms must be >= 0")
	}
	if e := req.ExpiresInMs; e != nil && (*e < 1 || *e > MaxScheduleAhead.Milliseconds()) {
		return submitRequest{}, newError(http.StatusBadRequest, CodeInvalidSchedule, "expires_in_ms must be 1 to "+strconv.FormatInt(MaxScheduleAhead.Milliseconds(), 10))
	}
	return req, nil
}

// decodeStrict decodes b into v: exactly one JSON value, no field v does
// not have. A failure is the 400 invalid_json that names what b should
// have been ("body is not a valid <what>: …").
func decodeStrict(b []byte, v any, what string) *apiError {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return newError(http.StatusBadRequest, CodeInvalidJSON, "body is not a valid "+what+": "+jsonReason(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return newError(http.StatusBadRequest, CodeInvalidJSON, "body holds more than one JSON value")
	}
	return nil
}

// decodeSubmitJSON is the JSON step of decodeSubmit: one object of
// submitRequest's fields and nothing after it.
func decodeSubmitJSON(b []byte) (submitRequest, error) {
	var req submitRequest
	if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' {
		return submitRequest{}, newError(http.StatusBadRequest, CodeInvalidJSON, "body must be a JSON object")
	}
	if aerr := decodeStrict(b, &req, "job request"); aerr != nil {
		return submitRequest{}, aerr
	}
	return req, nil
}

// decodeSubmitPlain is decodeSubmitJSON for the body nearly every client
// sends, read without encoding/json's decoder (a reader, a buffer copy and
// reflection per submission): one object whose keys are "kind",
// "priority" and "input", each at most once and spelt exactly so, kind and
// priority strings of printable ASCII with no escape, and input a JSON
// object (checked with json.Valid). Anything else, valid or not, returns
// false and goes to decodeSubmitJSON, which then decides and words any
// error. What it accepts, decodeSubmitJSON decodes to the same request
// (FuzzDecodeSubmitPlain); Input is a slice of b.
func decodeSubmitPlain(b []byte) (submitRequest, bool) {
	var req submitRequest
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return req, false
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return req, skipWS(b, i+1) == len(b)
	}
	var seen [3]bool
	for {
		key, j, ok := plainString(b, i)
		if !ok {
			return req, false
		}
		i = skipWS(b, j)
		if i >= len(b) || b[i] != ':' {
			return req, false
		}
		i = skipWS(b, i+1)
		var field int
		switch key {
		case "kind":
			field = 0
		case "priority":
			field = 1
		case "input":
			field = 2
		default:
			return req, false
		}
		if seen[field] {
			return req, false
		}
		seen[field] = true
		if field == 2 {
			// Deeper than a job's input may nest: encoding/json's path,
			// and ValidateInput, say why.
			end, depth, ok := jsonscan.ObjectSpan(b, i)
			if !ok || depth > envelope.MaxInputDepth || !json.Valid(b[i:end]) {
				return req, false
			}
			req.Input = b[i:end:end]
			i = end
		} else {
			v, j, ok := plainString(b, i)
			if !ok {
				return req, false
			}
			if field == 0 {
				req.Kind = v
			} else {
				req.Priority = envelope.Priority(v)
			}
			i = j
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return req, false
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return req, skipWS(b, i+1) == len(b)
		default:
			return req, false
		}
	}
}

// skipWS returns the index of the first byte of b from i on that is not
// JSON whitespace.
func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString reads the JSON string starting at b[i] when it holds only
// printable ASCII and no escape; it returns its content and the index after
// its closing quote.
func plainString(b []byte, i int) (string, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return "", 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return string(b[i+1 : j]), j + 1, true
		case c < 0x20, c >= 0x7f, c == '\\':
			return "", 0, false
		}
	}
	return "", 0, false
}

// MaxScheduleAhead is how far ahead a job may be scheduled.
const MaxScheduleAhead = 365 * 24 * time.Hour

// schedule sets req.due from run_at or delay_ms as of now: zero when the
// job is due now (no schedule, or a time already past: it runs now), and a
// 400 invalid_schedule beyond MaxScheduleAhead.
func (req *submitRequest) schedule(now time.Time) *apiError {
	var due time.Time
	switch {
	case req.RunAt != nil:
		due = req.runAt
	case req.DelayMs != nil:
		if *req.DelayMs > MaxScheduleAhead.Milliseconds() {
			return newError(http.StatusBadRequest, CodeInvalidSchedule, "delay_ms is more than a year")
		}
		due = now.Add(time.Duration(*req.DelayMs) * time.Millisecond)
	default:
		return nil
	}
	if due.After(now.Add(MaxScheduleAhead)) {
		return newError(http.StatusBadRequest, CodeInvalidSchedule, "run_at is more than a year ahead")
	}
	if due.After(now) {
		req.due = due.UTC()
	}
	return nil
}

// expiresAt is when the job expires if not started: expires_in_ms after
// it is due (its run_at, or now); nil without expires_in_ms.
func (req *submitRequest) expiresAt(now time.Time) *time.Time {
	if req.ExpiresInMs == nil {
		return nil
	}
	from := now
	if !req.due.IsZero() {
		from = req.due
	}
	at := from.Add(time.Duration(*req.ExpiresInMs) * time.Millisecond).UTC()
	return &at
}

// jsonReason describes a decoding error without echoing the body.
func jsonReason(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("field %q must be a %s", typ.Field, jsonTypeName(typ.Field))
		}
		return "the body must be a JSON object"
	case errors.Is(err, io.EOF):
		return "empty body"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of JSON"
	}
	// DisallowUnknownFields: `json: unknown field "x"`; the field name is
	// the client's own and bounded by the body limit.
	return err.Error()
}

func jsonTypeName(field string) string {
	if field == "input" {
		return "JSON object"
	}
	return "string"
}

// fieldMessage renders an envelope.FieldError as "<field>: <rule>".
func fieldMessage(err error) string {
	var fe *envelope.FieldError
	if errors.As(err, &fe) {
		if fe.Msg == "" {
			return fe.Field + " is invalid"
		}
		return fe.Field + ": " + fe.Msg
	}
	return err.Error()
}
