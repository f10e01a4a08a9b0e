package phoenix

import "fmt"

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
