package provider

import (
	"encoding/json"
	"testing"

	"github.com/beamline/beamline/pkg/flow"
)

// FuzzCogAnswer feeds arbitrary bytes to what reads Cog's answers and
// webhooks: the decoder, the outcome classification and the reading of a
// stored webhook. Nothing panics; a success is valid JSON; a webhook is
// taken only as a prediction object of its id.
func FuzzCogAnswer(f *testing.F) {
	for _, s := range []string{
		`{"id":"p","status":"succeeded","output":"data:image/png;base64,AAAA","metrics":{"predict_time":1.5}}`,
		`{"status":"failed","error":"CUDA out of memory","logs":"10%\n50%\n"}`,
		`{"status":"canceled"}`, `{"status":"processing","output":[1,2],"logs":"99%|###"}`,
		`{"status":"succeeded"}`, `{"status":"succeeded","output":null}`, `{"status":7}`, `[]`, ``, `<html>`,
		`{"id":"other","status":"succeeded","output":1}`, `{"status":"failed","error":{"nested":true}}`,
	} {
		f.Add([]byte(s))
	}
	pr, err := NewCog(CogConfig{MaxResponse: 1 << 10})
	if err != nil {
		f.Fatal(err)
	}
	p := pr.(*cogProvider)
	f.Fuzz(func(t *testing.T, b []byte) {
		if pred, err := decodeCogPrediction(b); err == nil && pred.terminal() {
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
		if d, ok := cogDelivery("p", WebhookDelivery{Body: b}); ok && d.ID != "p" {
			t.Fatalf("took a delivery of prediction %q as p's", d.ID)
		}
	})
}
