// Package phoenix encodes and decodes Phoenix Channels V2 frames: the JSON
// array [join_ref, ref, topic, event, payload] and the binary layouts of
// docs/phoenix-protocol.md#7-binary-frames. Decoding never panics on any input (it is fuzzed)
// and reports how far it got, so a server can answer a half-valid frame with
// an error reply instead of closing the connection.
package phoenix

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Reserved topic and event names of the protocol.
const (
	TopicPhoenix = "phoenix"
	EventJoin    = "phx_join"
	EventLeave   = "phx_leave"
	EventReply   = "phx_reply"
	EventClose   = "phx_close"
	EventError   = "phx_error"
	EventHB      = "heartbeat"
)

// Sentinel errors.
var (
	// ErrMalformed: the bytes are not a V2 frame.
	ErrMalformed = errors.New("phoenix: malformed frame")
	// ErrPayload: the frame is well-formed but its payload is not a JSON object.
	ErrPayload = errors.New("phoenix: payload must be a JSON object")
)

// Ref is a join_ref or ref: an opaque string, or null.
type Ref struct {
	S     string
	Valid bool
}

// StrRef returns a non-null Ref.
func StrRef(s string) Ref { return Ref{S: s, Valid: true} }

// Frame is one decoded V2 frame.
type Frame struct {
	JoinRef Ref
	Ref     Ref
	Topic   string
	Event   string
	// Payload is the raw JSON object (text frames) or the raw bytes
	// (binary frames, Binary set).
	Payload []byte
	Binary  bool
}

// Addressable reports whether enough of a frame was decoded to send a
// reply to it (its ref and topic are known).
func (f *Frame) Addressable() bool { return f.Topic != "" }

// DecodeFrame decodes a text frame. On error the returned Frame holds what
// was decoded before the problem; see Addressable.
func DecodeFrame(b []byte) (Frame, error) {
	var f Frame
	var parts []json.RawMessage
	if err := json.Unmarshal(b, &parts); err != nil {
		return f, fmt.Errorf("%w: not a JSON array", ErrMalformed)
	}
	if len(parts) < 5 {
		return f, fmt.Errorf("%w: %d elements, want 5", ErrMalformed, len(parts))
	}
	var err error
	if f.JoinRef, err = decodeRef(parts[0]); err != nil {
		return f, fmt.Errorf("%w: join_ref: %v", ErrMalformed, err)
	}
	ref, err := decodeRef(parts[1])
	if err != nil {
		return f, fmt.Errorf("%w: ref: %v", ErrMalformed, err)
	}
	var topic, event string
	if err := decodeString(parts[2], &topic); err != nil || topic == "" {
		return f, fmt.Errorf("%w: topic must be a non-empty string", ErrMalformed)
	}
	f.Ref, f.Topic = ref, topic
	if err := decodeString(parts[3], &event); err != nil || event == "" {
		return f, fmt.Errorf("%w: event must be a non-empty string", ErrMalformed)
	}
	f.Event = event
	p := bytes.TrimSpace(parts[4])
	if len(p) == 0 || p[0] != '{' {
		return f, ErrPayload
	}
	f.Payload = p
	return f, nil
}

func decodeRef(raw json.RawMessage) (Ref, error) {
	raw = bytes.TrimSpace(raw)
	if string(raw) == "null" {
		return Ref{}, nil
	}
	var s string
	if err := decodeString(raw, &s); err != nil {
		return Ref{}, errors.New("must be a string or null")
	}
	return StrRef(s), nil
}

func decodeString(raw json.RawMessage, s *string) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '"' {
		return errors.New("not a string")
	}
	return json.Unmarshal(raw, s)
}

// AppendFrame appends the V2 text encoding of a frame to dst. payload must
// be a JSON object (it is written as it is); topic and event are quoted.
func AppendFrame(dst []byte, joinRef, ref Ref, topic, event string, payload []byte) []byte {
	dst = append(dst, '[')
	dst = appendRef(dst, joinRef)
	dst = append(dst, ',')
	dst = appendRef(dst, ref)
	dst = append(dst, ',')
	dst = appendString(dst, topic)
	dst = append(dst, ',')
	dst = appendString(dst, event)
	dst = append(dst, ',')
	if len(payload) == 0 {
		payload = []byte("{}")
	}
	dst = append(dst, payload...)
	return append(dst, ']')
}

// Reply encodes a phx_reply {"status":status,"response":response}.
// response must be a JSON object; nil means {}.
func Reply(joinRef, ref Ref, topic, status string, response []byte) []byte {
	if len(response) == 0 {
		response = []byte("{}")
	}
	p := make([]byte, 0, len(response)+32)
	p = append(p, `{"status":`...)
	p = appendString(p, status)
	p = append(p, `,"response":`...)
	p = append(p, response...)
	p = append(p, '}')
	return AppendFrame(nil, joinRef, ref, topic, EventReply, p)
}

// ErrorReason is the response object {"reason":reason}.
func ErrorReason(reason string) []byte {
	return append(appendString([]byte(`{"reason":`), reason), '}')
}

func appendRef(dst []byte, r Ref) []byte {
	if !r.Valid {
		return append(dst, "null"...)
	}
	return appendString(dst, r.S)
}

func appendString(dst []byte, s string) []byte {
	if isPlain(s) {
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"')
	}
	b, _ := json.Marshal(s) // a string always marshals
	return append(dst, b...)
}

// isPlain reports whether s needs no JSON escaping (and no HTML escaping,
// which encoding/json would add).
func isPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}
