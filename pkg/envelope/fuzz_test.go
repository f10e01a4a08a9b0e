package envelope

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// The seed corpora live in testdata/fuzz/<FuzzName>/. `go test` runs every
// seed as a regular test; `go test -fuzz FuzzDecode ./pkg/envelope` explores.

// sentinels is every error this package may return.
var sentinels = []error{ErrMalformed, ErrSpecVersion, ErrMissingAttribute, ErrInvalidToken, ErrTooLarge, ErrUnknownType}

func checkClassified(t *testing.T, err error) {
	t.Helper()
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return
		}
	}
	t.Fatalf("error wraps no sentinel: %v", err)
}

func envelopeEqual(a, b *Envelope) bool {
	return a.SpecVersion == b.SpecVersion && a.ID == b.ID && a.Source == b.Source &&
		a.Type == b.Type && a.Subject == b.Subject && a.Time.Equal(b.Time) &&
		a.DataContentType == b.DataContentType && jsonEqual(a.Data, b.Data)
}

func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			checkClassified(t, err)
			return
		}
		b1, err := e.Encode()
		if err != nil {
			t.Fatalf("decoded envelope does not encode: %v\n%+v", err, e)
		}
		e2, err := Decode(b1)
		if err != nil {
			t.Fatalf("re-encoded envelope does not decode: %v\n%s", err, b1)
		}
		if !envelopeEqual(e, e2) {
			t.Fatalf("round trip changed the envelope:\n%+v\n%+v", e, e2)
		}
		b2, err := e2.Encode()
		if err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("encoding is not stable (%v):\n%s\n%s", err, b1, b2)
		}
	})
}

func FuzzDecodeJob(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		e, j, err := DecodeJob(b)
		// DecodeJob's scanner is encoding/json for the layout it reads.
		se, sj, serr := decodeJobJSON(b)
		if (err == nil) != (serr == nil) || (err != nil && err.Error() != serr.Error()) ||
			!reflect.DeepEqual(e, se) || !reflect.DeepEqual(j, sj) {
			t.Fatalf("DecodeJob differs from encoding/json:\n%+v %+v %v\n%+v %+v %v", e, j, err, se, sj, serr)
		}
		if err != nil {
			checkClassified(t, err)
			return
		}
		// A decoded job is safe to route: its subject parses back.
		if p, kind, id, err := ParseJobSubject(j.Subject()); err != nil || p != j.Priority || kind != j.Kind || id != j.ID {
			t.Fatalf("decoded job has an unroutable subject %q: %v", j.Subject(), err)
		}
		b1, err := EncodeJob(j, e.Source)
		if err != nil {
			t.Fatalf("decoded job does not encode: %v\n%+v", err, j)
		}
		_, j2, err := DecodeJob(b1)
		if err != nil {
			t.Fatalf("re-encoded job does not decode: %v\n%s", err, b1)
		}
		if !jobEqual(j, j2) {
			t.Fatalf("round trip changed the job:\n%+v\n%+v", j, j2)
		}
		// The envelope as decoded also survives a round trip.
		b3, err := e.Encode()
		if err != nil {
			t.Fatalf("decoded envelope does not encode: %v", err)
		}
		if _, j3, err := DecodeJob(b3); err != nil || !jobEqual(j, j3) {
			t.Fatalf("envelope round trip changed the job (%v):\n%+v\n%+v", err, j, j3)
		}
	})
}

func FuzzDecodeEvent(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		e, s, err := DecodeEvent(b)
		h, herr := DecodeEventHead(b)
		if herr != nil {
			checkClassified(t, herr)
		}
		if err != nil {
			checkClassified(t, err)
			return
		}
		// What DecodeEvent accepts, DecodeEventHead accepts alike.
		if herr != nil {
			t.Fatalf("DecodeEventHead refused what DecodeEvent accepted: %v", herr)
		}
		if h.Type != e.Type || !h.Time.Equal(e.Time) || !bytes.Equal(h.Data, e.Data) || h.ID != s.ID || h.Seq != s.Seq || h.Status != s.Status {
			t.Fatalf("DecodeEventHead = %+v; DecodeEvent = %+v %+v", h, e, s)
		}
		if e.Type == TypeSubmitted || !e.Type.Known() {
			t.Fatalf("DecodeEvent accepted type %q", e.Type)
		}
		if EventSubject(s.User, s.ID) != "events."+s.User+"."+s.ID || ValidateID("user", s.User) != nil || ValidateID("id", s.ID) != nil {
			t.Fatalf("decoded snapshot has unsafe tokens: %+v", s)
		}
		m, err := NewEventMsg(e.Type, s, e.Source, "")
		if err != nil {
			t.Fatalf("decoded event does not encode: %v\n%+v", err, s)
		}
		e2, s2, err := DecodeEvent(m.Data)
		if err != nil {
			t.Fatalf("re-encoded event does not decode: %v\n%s", err, m.Data)
		}
		if e2.Type != e.Type || !snapshotEqual(s, s2) {
			t.Fatalf("round trip changed the event:\n%+v\n%+v", s, s2)
		}
		if seq, ok := SeqOf(m.Header); !ok || seq != s.Seq {
			t.Fatalf("Beamline-Seq = %d, %v; want %d", seq, ok, s.Seq)
		}
	})
}

// FuzzDecodeIndexBundle: any bytes either decode into valid records, which
// encode back into a body that decodes to the same records, or give an
// ErrMalformed/ErrInvalidToken error; never a panic.
func FuzzDecodeIndexBundle(f *testing.F) {
	env := []byte(`{"specversion":"1.0"}`)
	f.Add(AppendIndexRecord(nil, "job-1", env))
	f.Add(AppendIndexRecord(AppendIndexRecord(nil, "a", nil), "b", env))
	f.Add([]byte{})
	f.Add([]byte{0x80})
	f.Add([]byte{0x05, 'a'})
	f.Add([]byte{0x01, '.', 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := DecodeIndexBundle(b)
		if err != nil {
			checkClassified(t, err)
			return
		}
		var again []byte
		for _, r := range recs {
			if ValidateID("id", r.ID) != nil {
				t.Fatalf("invalid id %q decoded", r.ID)
			}
			again = AppendIndexRecord(again, r.ID, r.Envelope)
		}
		recs2, err := DecodeIndexBundle(again)
		if err != nil || len(recs2) != len(recs) {
			t.Fatalf("re-encoded bundle: %v, %d records of %d", err, len(recs2), len(recs))
		}
		for i := range recs {
			if recs[i].ID != recs2[i].ID || !bytes.Equal(recs[i].Envelope, recs2[i].Envelope) {
				t.Fatalf("record %d differs after re-encoding", i)
			}
		}
	})
}
