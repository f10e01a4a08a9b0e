package phoenix

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// Binary frame kinds (docs/phoenix-protocol.md#7-binary-frames).
const (
	KindPush      = 0
	KindReply     = 1
	KindBroadcast = 2
)

// DecodeBinary decodes a client→server binary push (kind 0):
// 0, len(join_ref), len(ref), len(topic), len(event), the four fields, then
// the raw payload. Empty join_ref or ref fields decode as null refs.
func DecodeBinary(b []byte) (Frame, error) {
	var f Frame
	if len(b) < 5 {
		return f, fmt.Errorf("%w: binary frame shorter than its header", ErrMalformed)
	}
	if b[0] != KindPush {
		return f, fmt.Errorf("%w: binary kind %d from a client", ErrMalformed, b[0])
	}
	lj, lr, lt, le := int(b[1]), int(b[2]), int(b[3]), int(b[4])
	rest := b[5:]
	if len(rest) < lj+lr+lt+le {
		return f, fmt.Errorf("%w: binary header longer than the frame", ErrMalformed)
	}
	take := func(n int) string { s := string(rest[:n]); rest = rest[n:]; return s }
	if s := take(lj); s != "" {
		f.JoinRef = StrRef(s)
	}
	if s := take(lr); s != "" {
		f.Ref = StrRef(s)
	}
	f.Topic = take(lt)
	if f.Topic == "" {
		return Frame{}, fmt.Errorf("%w: empty topic", ErrMalformed)
	}
	f.Event = take(le)
	if f.Event == "" {
		return f, fmt.Errorf("%w: empty event", ErrMalformed)
	}
	f.Payload = rest
	f.Binary = true
	return f, nil
}

// BinaryReply encodes a server→client binary reply (kind 1). It returns nil
// when a header field is longer than 255 bytes.
func BinaryReply(joinRef, ref Ref, topic, status string, payload []byte) []byte {
	fields := []string{joinRef.S, ref.S, topic, status}
	for _, s := range fields {
		if len(s) > 255 {
			return nil
		}
	}
	out := make([]byte, 0, 5+len(joinRef.S)+len(ref.S)+len(topic)+len(status)+len(payload))
	out = append(out, KindReply, byte(len(joinRef.S)), byte(len(ref.S)), byte(len(topic)), byte(len(status)))
	for _, s := range fields {
		out = append(out, s...)
	}
	return append(out, payload...)
}

// BinaryBroadcast encodes a server→client binary broadcast (kind 2).
func BinaryBroadcast(topic, event string, payload []byte) []byte {
	if len(topic) > 255 || len(event) > 255 {
		return nil
	}
	out := make([]byte, 0, 3+len(topic)+len(event)+len(payload))
	out = append(out, KindBroadcast, byte(len(topic)), byte(len(event)))
	out = append(out, topic...)
	out = append(out, event...)
	return append(out, payload...)
}

// Decode decodes a client frame that arrived as a binary (DecodeBinary) or a
// text (JSON array) message.
func Decode(b []byte, binary bool) (Frame, error) {
	if binary {
		return DecodeBinary(b)
	}
	return DecodeFrame(b)
}

// TextOf turns a server→client binary frame (a kind 0 push, a kind 1 reply
// or a kind 2 broadcast) into a JSON frame for a transport that carries
// text only: the long-poll client decodes every message as JSON, so the
// bytes travel base64-encoded as {"binary":"<base64>"} (a reply's
// response, or a push's payload). It returns nil for bytes that are not
// such a frame.
func TextOf(b []byte) []byte {
	field := func(p *[]byte, n int) (string, bool) {
		if len(*p) < n {
			return "", false
		}
		s := string((*p)[:n])
		*p = (*p)[n:]
		return s, true
	}
	ref := func(s string) Ref {
		if s == "" {
			return Ref{}
		}
		return StrRef(s)
	}
	wrap := func(raw []byte) []byte {
		out, _ := json.Marshal(map[string]string{"binary": base64.StdEncoding.EncodeToString(raw)})
		return out
	}
	if len(b) < 3 {
		return nil
	}
	switch b[0] {
	case KindReply:
		if len(b) < 5 {
			return nil
		}
		rest := b[5:]
		jr, ok1 := field(&rest, int(b[1]))
		rf, ok2 := field(&rest, int(b[2]))
		topic, ok3 := field(&rest, int(b[3]))
		status, ok4 := field(&rest, int(b[4]))
		if !ok1 || !ok2 || !ok3 || !ok4 {
			return nil
		}
		return Reply(ref(jr), ref(rf), topic, status, wrap(rest))
	case KindPush:
		if len(b) < 4 {
			return nil
		}
		rest := b[4:]
		jr, ok1 := field(&rest, int(b[1]))
		topic, ok2 := field(&rest, int(b[2]))
		event, ok3 := field(&rest, int(b[3]))
		if !ok1 || !ok2 || !ok3 {
			return nil
		}
		return AppendFrame(nil, ref(jr), Ref{}, topic, event, wrap(rest))
	case KindBroadcast:
		rest := b[3:]
		topic, ok1 := field(&rest, int(b[1]))
		event, ok2 := field(&rest, int(b[2]))
		if !ok1 || !ok2 {
			return nil
		}
		return AppendFrame(nil, Ref{}, Ref{}, topic, event, wrap(rest))
	}
	return nil
}
