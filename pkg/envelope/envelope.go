package envelope

import (
	"bytes"
	"encoding/json"
	"time"
)

// SpecVersion is the only CloudEvents version Beamline reads and writes.
const SpecVersion = "1.0"

// ContentType is the datacontenttype of every Beamline envelope.
const ContentType = "application/json"

// MaxSize bounds an encoded envelope. It matches the default NATS max_payload:
// anything larger could not be published anyway.
const MaxSize = 1 << 20

// Envelope is a CloudEvents 1.0 event in structured JSON form. Data holds the
// type-specific payload: a [Job] for beamline.job.submitted, a [Snapshot] for
// every other type.
type Envelope struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            Type            `json:"type"`
	Subject         string          `json:"subject,omitempty"`
	Time            time.Time       `json:"time"`
	DataContentType string          `json:"datacontenttype,omitempty"`
	Data            json.RawMessage `json:"data"`
}

// Type is the CloudEvents type attribute of a Beamline envelope.
type Type string

// The envelope types.
const (
	TypeSubmitted Type = "beamline.job.submitted"
	TypeStarted   Type = "beamline.job.started"
	TypeProgress  Type = "beamline.job.progress"
	TypeRetrying  Type = "beamline.job.retrying"
	TypeSucceeded Type = "beamline.job.succeeded"
	TypeFailed    Type = "beamline.job.failed"
	TypeDead      Type = "beamline.job.dead"
	TypeCancelled Type = "beamline.job.cancelled"
	TypeExpired   Type = "beamline.job.expired"
)

// Known reports whether t is one of the types above.
func (t Type) Known() bool {
	switch t {
	case TypeSubmitted, TypeStarted, TypeProgress, TypeRetrying,
		TypeSucceeded, TypeFailed, TypeDead, TypeCancelled, TypeExpired:
		return true
	}
	return false
}

// Short is the last dotted part of the type ("progress" for beamline.job.progress),
// which the notifier uses as the event name it pushes to browsers.
func (t Type) Short() string {
	s := string(t)
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '.' {
			return s[i+1:]
		}
	}
	return s
}

// Encode marshals e after checking its attributes and size.
func (e *Envelope) Encode() ([]byte, error) {
	if err := e.validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fieldErr("data", ErrMalformed, "%v", err)
	}
	if len(b) > MaxSize {
		return nil, fieldErr("envelope", ErrTooLarge, "%d bytes, limit %d", len(b), MaxSize)
	}
	return b, nil
}

// Decode parses a structured CloudEvents envelope strictly: the size limit,
// specversion 1.0, the required attributes id, source, type and time, a known
// type, and data that is a JSON object.
func Decode(b []byte) (*Envelope, error) {
	if len(b) > MaxSize {
		return nil, fieldErr("envelope", ErrTooLarge, "%d bytes, limit %d", len(b), MaxSize)
	}
	var e Envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fieldErr("envelope", ErrMalformed, "%v", err)
	}
	if err := e.validate(); err != nil {
		return nil, err
	}
	return &e, nil
}

func (e *Envelope) validate() error {
	switch {
	case e.SpecVersion == "":
		return fieldErr("specversion", ErrSpecVersion, "missing")
	case e.SpecVersion != SpecVersion:
		return fieldErr("specversion", ErrSpecVersion, "%q, want %q", e.SpecVersion, SpecVersion)
	case e.ID == "":
		return fieldErr("id", ErrMissingAttribute, "")
	case e.Source == "":
		return fieldErr("source", ErrMissingAttribute, "")
	case e.Type == "":
		return fieldErr("type", ErrMissingAttribute, "")
	case !e.Type.Known():
		return fieldErr("type", ErrUnknownType, "%q", string(e.Type))
	case e.Time.IsZero():
		return fieldErr("time", ErrMissingAttribute, "")
	case e.DataContentType != "" && e.DataContentType != ContentType:
		return fieldErr("datacontenttype", ErrMalformed, "%q, want %q", e.DataContentType, ContentType)
	}
	if !isObject(e.Data) {
		return fieldErr("data", ErrMalformed, "must be a JSON object")
	}
	return nil
}

// isObject reports whether raw is a JSON object (it was already parsed as
// valid JSON when it reached here, so the first non-space byte decides).
func isObject(raw json.RawMessage) bool {
	t := bytes.TrimLeft(raw, " \t\r\n")
	return len(t) > 0 && t[0] == '{'
}

// appendEnvelope appends e as json.Marshal encodes it, for an e whose Data
// json.Marshal wrote (compact, valid, HTML-escaped: copied as it is, where
// json.Marshal would scan it again). TestAppendEnvelope and
// FuzzAppendEnvelope hold it to json.Marshal's bytes.
func appendEnvelope(b []byte, e *Envelope) ([]byte, error) {
	b = append(b, `{"specversion":`...)
	b = appendString(b, e.SpecVersion)
	b = append(b, `,"id":`...)
	b = appendString(b, e.ID)
	b = append(b, `,"source":`...)
	b = appendString(b, e.Source)
	b = append(b, `,"type":`...)
	b = appendString(b, string(e.Type))
	if e.Subject != "" {
		b = append(b, `,"subject":`...)
		b = appendString(b, e.Subject)
	}
	b = append(b, `,"time":`...)
	tb, err := e.Time.MarshalJSON()
	if err != nil {
		return nil, fieldErr("time", ErrMalformed, "%v", err)
	}
	b = append(b, tb...)
	if e.DataContentType != "" {
		b = append(b, `,"datacontenttype":`...)
		b = appendString(b, e.DataContentType)
	}
	b = append(b, `,"data":`...)
	if len(e.Data) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, e.Data...)
	}
	return append(b, '}'), nil
}

// appendString appends s as a JSON string the way json.Marshal writes it:
// printable ASCII other than the quote, the backslash and the HTML-escaped
// <, > and & as it is; anything else through json.Marshal.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
