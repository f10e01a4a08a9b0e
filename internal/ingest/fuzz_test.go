package ingest

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/beamline/beamline/pkg/envelope"
)

// FuzzDecodeSubmit: the POST body decoder never panics, refuses with a 400
// *apiError, and what it accepts is a valid job request: a valid kind, a
// valid priority and an input that is a JSON object which, with an id and a
// user, encodes as a valid job envelope.
func FuzzDecodeSubmit(f *testing.F) {
	for _, s := range []string{
		`{"kind":"image","priority":"normal","input":{"prompt":"x"}}`,
		`{"kind":"video"}`,
		`{"kind":"image","input":null}`,
		`{"kind":"a.b"}`,
		`{"kind":"image","priority":"urgent"}`,
		`{"kind":"image","input":[1,2]}`,
		`{"kind":"image","extra":1}`,
		`{"kind":"image"} {}`,
		`{"kind":"image","input":{"sim":{"steps":3,"fail_times":2}}}`,
		`[]`, `null`, ``, `{`, `"x"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := decodeSubmit(b)
		if err != nil {
			var e *apiError
			if !errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Code == "" || e.Message == "" {
				t.Fatalf("error %#v is not a 400 apiError", err)
			}
			return
		}
		if envelope.ValidateKind(req.Kind) != nil || envelope.ValidatePriority(req.Priority) != nil {
			t.Fatalf("accepted %+v", req)
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(req.Input, &obj); err != nil || obj == nil {
			t.Fatalf("input %q is not an object: %v", req.Input, err)
		}
		j := envelope.Job{ID: "j1", User: "u1", Kind: req.Kind, Priority: req.Priority, Input: req.Input, CreatedAt: time.Unix(1, 0)}
		enc, err := envelope.EncodeJob(j, "/fuzz")
		if errors.Is(err, envelope.ErrTooLarge) {
			return
		}
		if err != nil {
			t.Fatalf("accepted request does not encode: %v", err)
		}
		if _, back, err := envelope.DecodeJob(enc); err != nil || back.Kind != req.Kind {
			t.Fatalf("round trip: %v", err)
		}
	})
}
