package beamctl

import (
	"encoding/json"
	"io"
	"testing"
)

// FuzzTailEvent: whatever the notifier pushes, tail prints it or returns
// an error, in both output modes, and never panics; a JSON line stays JSON.
func FuzzTailEvent(f *testing.F) {
	f.Add([]byte(`{"type":"progress","job":{"id":"j1","user":"dev","kind":"image","status":"running","progress":40,"attempt":1,"seq":3},"seq":3,"stream_seq":9,"resume_seq":9}`))
	f.Add([]byte(`{"job":{"error":"a\nb\u0000"}}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"resume_seq":-1}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		for _, o := range []string{"table", "json"} {
			var out jsonLines
			tr := &tailer{e: &env{output: o, stdout: &out, stderr: io.Discard}}
			if err := tr.print(payload); err == nil && o == "json" && !json.Valid(out.b) {
				t.Fatalf("not JSON: %q", out.b)
			}
		}
		_ = subOf(string(payload))
		_ = subOf("a." + string(payload) + ".c")
	})
}

type jsonLines struct{ b []byte }

func (j *jsonLines) Write(p []byte) (int, error) { j.b = append(j.b, p...); return len(p), nil }
