package envelope

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
)

// marshalSnapshot is json.Marshal(s), byte for byte, written by hand:
// every state change of every job encodes its snapshot once, and
// encoding/json's reflection was a tenth of the processor's own CPU per
// no-op job (Run W's profile). Whatever appendSnapshot cannot write as
// json.Marshal would (a time out of RFC 3339's range, a result that is not
// JSON), json.Marshal writes, with its own error. TestAppendSnapshot,
// TestAppendSnapshotKnowsEveryField and FuzzAppendSnapshot hold the two to
// the same bytes.
func marshalSnapshot(s *Snapshot) ([]byte, error) {
	if b, ok := appendSnapshot(make([]byte, 0, 320+len(s.Result)), s); ok {
		return b, nil
	}
	return json.Marshal(s)
}

// appendSnapshot appends s as json.Marshal encodes it; ok is false when
// it cannot, and b is then garbage.
func appendSnapshot(b []byte, s *Snapshot) (_ []byte, ok bool) {
	b = append(b, `{"id":`...)
	b = appendString(b, s.ID)
	b = append(b, `,"user":`...)
	b = appendString(b, s.User)
	b = append(b, `,"kind":`...)
	b = appendString(b, s.Kind)
	b = append(b, `,"priority":`...)
	b = appendString(b, string(s.Priority))
	b = append(b, `,"status":`...)
	b = appendString(b, string(s.Status))
	b = append(b, `,"progress":`...)
	b = strconv.AppendInt(b, int64(s.Progress), 10)
	b = append(b, `,"attempt":`...)
	b = strconv.AppendInt(b, int64(s.Attempt), 10)
	if len(s.Result) > 0 {
		b = append(b, `,"result":`...)
		if b, ok = appendRaw(b, s.Result); !ok {
			return b, false
		}
	}
	if s.Error != "" {
		b = append(b, `,"error":`...)
		b = appendString(b, s.Error)
	}
	if p := s.Preview; p != nil {
		b = append(b, `,"preview":{"output":`...)
		b = appendString(b, p.Output)
		b = append(b, `,"url":`...)
		b = appendString(b, p.URL)
		if p.SignedURL != "" {
			b = append(b, `,"signed_url":`...)
			b = appendString(b, p.SignedURL)
		}
		if p.ExpiresAt != nil {
			b = append(b, `,"expires_at":`...)
			if b, ok = appendTime(b, *p.ExpiresAt); !ok {
				return b, false
			}
		}
		b = append(b, `,"content_type":`...)
		b = appendString(b, p.ContentType)
		b = append(b, `,"size":`...)
		b = strconv.AppendInt(b, p.Size, 10)
		b = append(b, `,"digest":`...)
		b = appendString(b, p.Digest)
		b = append(b, '}')
	}
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, s.Seq, 10)
	b = append(b, `,"created_at":`...)
	if b, ok = appendTime(b, s.CreatedAt); !ok {
		return b, false
	}
	b = append(b, `,"updated_at":`...)
	if b, ok = appendTime(b, s.UpdatedAt); !ok {
		return b, false
	}
	if r := s.Remote; r != nil {
		b = append(b, `,"remote":{"provider":`...)
		b = appendString(b, r.Provider)
		b = append(b, `,"starts":`...)
		b = strconv.AppendInt(b, int64(r.Starts), 10)
		if r.QueuedMS != 0 {
			b = append(b, `,"queued_ms":`...)
			b = strconv.AppendInt(b, r.QueuedMS, 10)
		}
		if r.RunMS != 0 {
			b = append(b, `,"run_ms":`...)
			b = strconv.AppendInt(b, r.RunMS, 10)
		}
		b = append(b, '}')
	}
	if s.RunAt != nil {
		b = append(b, `,"run_at":`...)
		if b, ok = appendTime(b, *s.RunAt); !ok {
			return b, false
		}
	}
	if s.RerunOf != "" {
		b = append(b, `,"rerun_of":`...)
		b = appendString(b, s.RerunOf)
	}
	if s.Provider != "" {
		b = append(b, `,"provider":`...)
		b = appendString(b, s.Provider)
	}
	return append(b, '}'), true
}

// appendTime appends t as time.Time's MarshalJSON writes it; ok is false
// where MarshalJSON fails.
func appendTime(b []byte, t time.Time) ([]byte, bool) {
	b = append(b, '"')
	b, err := t.AppendText(b)
	if err != nil {
		return b, false
	}
	return append(b, '"'), true
}

// appendRaw appends a json.RawMessage as json.Marshal does: compacted,
// with <, >, &, U+2028 and U+2029 escaped; ok is false when raw is not
// JSON. A value with none of those (nor white space) is copied as it is
// once json.Valid accepts it, which is what compacting would check.
func appendRaw(b []byte, raw json.RawMessage) ([]byte, bool) {
	plain := true
	for _, c := range raw {
		switch c {
		case ' ', '\t', '\n', '\r', '<', '>', '&', 0xE2: // 0xE2 leads U+2028 and U+2029
			plain = false
		}
		if !plain {
			break
		}
	}
	if plain {
		if !json.Valid(raw) {
			return b, false
		}
		return append(b, raw...), true
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return b, false
	}
	out := bytes.NewBuffer(b)
	json.HTMLEscape(out, compact.Bytes())
	return out.Bytes(), true
}
