package ingest

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
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

// FuzzWebhookVerify: the Standard Webhooks check and the delivery decoder
// never panic; a delivery passes only with a v1 entry that is the real
// signature (a forged or mangled one never does); what the decoder accepts
// has an id and a known status, and a refusal is a 4xx *apiError.
func FuzzWebhookVerify(f *testing.F) {
	key := []byte("fuzz-webhook-key")
	f.Add("msg_1", "1700000000", "v1,AAAA", []byte(`{"id":"p","status":"succeeded"}`), true)
	f.Add("", "", "", []byte(``), false)
	f.Add("m", "-1", "v1, v1,=", []byte(`{"id":"p","status":"done"}`), true)
	f.Add("m", "99999999999999999999", "v2,x v1a,y", []byte(`[]`), false)
	now := time.Unix(1700000000, 0)
	f.Fuzz(func(t *testing.T, id, ts, sigs string, body []byte, signIt bool) {
		if signIt {
			m := hmac.New(sha256.New, key)
			m.Write([]byte(id + "." + ts + "."))
			m.Write(body)
			sigs = sigs + " v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
		}
		err := verifyStandardWebhook(key, id, ts, sigs, body, now, 5*time.Minute)
		var e *apiError
		switch {
		case err == nil && !signIt:
			// Only a lucky HMAC collision would pass; the fuzzer never
			// finds one, so a pass means the check is broken.
			t.Fatalf("unsigned delivery passed: id %q ts %q sigs %q", id, ts, sigs)
		case err != nil && (!errors.As(err, &e) || e.Status/100 != 4 || e.Code == ""):
			t.Fatalf("refusal %#v is not a 4xx apiError", err)
		}
		p, err := decodeWebhookPrediction(body)
		if err != nil {
			if !errors.As(err, &e) || e.Status != http.StatusBadRequest {
				t.Fatalf("decode refusal %#v is not a 400", err)
			}
			return
		}
		if p.ID == "" {
			t.Fatalf("accepted a prediction without an id: %q", body)
		}
	})
}

// rangeOf reads a client's Range header: whatever it is, a range it
// accepts lies within the object and is not empty (TestRangeOf checks the
// plain forms).
func FuzzRangeOf(f *testing.F) {
	for _, s := range []string{"bytes=0-0", "bytes=5-", "bytes=-5", "bytes=3-2", "bytes=-0", "bytes= 1-2",
		"bytes=1-2,4-5", "items=0-1", "bytes=99999999999999999999-", "bytes=--1", ""} {
		f.Add(s, int64(100))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size <= 0 {
			return
		}
		from, to, ok := rangeOf(h, size)
		if ok && (from < 0 || to > size || from >= to) {
			t.Fatalf("%q of %d: [%d, %d)", h, size, from, to)
		}
	})
}

// FuzzDecodeSubmitPlain: what decodeSubmitPlain accepts, encoding/json's
// decoder (decodeSubmitJSON) accepts too and decodes to the same request.
func FuzzDecodeSubmitPlain(f *testing.F) {
	for _, s := range []string{
		`{"kind":"image","input":{}}`,
		` {"input" : {"a":[1,{"b":"}"}],"c":"\"{"} , "priority":"high","kind":"image"} `,
		`{"kind":"image","priority":"urgent","input":{"x":1}}`,
		`{}`, `{"kind":"image","kind":"video"}`, `{"KIND":"image"}`, `{"kind":"im\u0061ge"}`,
		`{"kind":"image","input":{"a":1}}}`, `{"kind":"image","input":{"a":}}`, `{"kind":"image","input":null}`,
		`{"kind":"image"} {}`, `{"kind":"image",}`, `{"kind":1}`, `{"kind":"image","delay_ms":5}`,
		"{\"kind\":\"\xff\"}", `{"kind":"image","input":{"a":"\"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		plain, ok := decodeSubmitPlain(b)
		if !ok {
			return
		}
		slow, err := decodeSubmitJSON(b)
		if err != nil {
			t.Fatalf("%q: plain accepted, the decoder refused: %v", b, err)
		}
		if plain.Kind != slow.Kind || plain.Priority != slow.Priority || string(plain.Input) != string(bytes.TrimSpace(slow.Input)) ||
			(plain.Input == nil) != (slow.Input == nil) || slow.IdempotencyKey != nil || slow.RunAt != nil || slow.DelayMs != nil || slow.ExpiresInMs != nil {
			t.Fatalf("%q: plain %+v, decoder %+v", b, plain, slow)
		}
	})
}
