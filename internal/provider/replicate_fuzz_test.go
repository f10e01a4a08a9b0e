package provider

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/beamline/beamline/pkg/flow"
)

// FuzzReplicateAnswer feeds arbitrary bytes to what reads Replicate's
// answers: the prediction decoder, the outcome classification and the
// error-body reader. Nothing panics; a success is valid JSON; a failed or
// canceled prediction is never terminal; an error body gives a bounded,
// printable message.
func FuzzReplicateAnswer(f *testing.F) {
	for _, s := range []string{
		`{"id":"gm3q","model":"replicate/hello-world","status":"succeeded","output":"hello Alice","error":null,"logs":"","metrics":{"predict_time":0.012683},"urls":{"get":"https://api.replicate.com/v1/predictions/gm3q","cancel":"https://api.replicate.com/v1/predictions/gm3q/cancel"}}`,
		`{"id":"p","status":"failed","error":"CUDA out of memory","logs":"10%|#|1/10\n50%|##|5/10\n"}`,
		`{"id":"p","status":"canceled","logs":null}`, `{"id":"p","status":"processing","output":["a"],"logs":"99%|###"}`,
		`{"id":"p","status":"succeeded"}`, `{"id":"p","status":"succeeded","output":null,"metrics":[]}`, `{"id":7}`, `{"status":"starting"}`,
		`[]`, ``, `<html>`, `{"id":"p","status":"failed","error":{"nested":true},"urls":{"get":5}}`,
		`{"detail":"Request was throttled. Your rate limit resets in ~30s."}`,
		`{"title":"Input validation failed","detail":"- input.steps: must be >= 0","status":422}`,
	} {
		f.Add([]byte(s))
	}
	pr, err := NewReplicate(ReplicateConfig{Token: "t", Model: "a/b", MaxResponse: 1 << 10})
	if err != nil {
		f.Fatal(err)
	}
	p := pr.(*replicateProvider)
	f.Fuzz(func(t *testing.T, b []byte) {
		if pred, err := decodeReplicatePrediction(b); err == nil {
			if pred.ID == "" {
				t.Fatalf("decoded a prediction without an id from %q", b)
			}
			if pred.terminal() {
				last := -1
				out, err := p.outcome("p", pred, newProgressTracker(func(pct int) {
					if pct < 0 || pct > 100 || pct <= last {
						t.Fatalf("progress %d after %d", pct, last)
					}
					last = pct
				}))
				switch {
				case err == nil && !json.Valid(out):
					t.Fatalf("success with invalid JSON %q", out)
				case err != nil && !isClassified(err):
					t.Fatalf("unclassified error %v", err)
				case err != nil && pred.Status != "succeeded" && flow.IsTerminal(err):
					t.Fatalf("%s prediction gave a terminal error", pred.Status)
				}
			}
		}
		se := replicateStatusError(http.StatusUnprocessableEntity, b)
		if utf8.RuneCountInString(se.Body) > errSnippetLen+1 || strings.ContainsAny(se.Body, "\n\r\x00") {
			t.Fatalf("error body %q is not a short printable snippet", se.Body)
		}
	})
}
