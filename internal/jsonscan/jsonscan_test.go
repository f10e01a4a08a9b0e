package jsonscan

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestObjectSpan(t *testing.T) {
	for _, tc := range []struct {
		in         string
		i          int
		end, depth int
		ok         bool
	}{
		{`{}`, 0, 2, 1, true},
		{`{"a":[1,{"b":[]}]} tail`, 0, 18, 4, true},
		{`x{"a":"}]\"{"}`, 1, 14, 1, true},
		{`{"a":"\\"}`, 0, 10, 1, true},
		{`[1]`, 0, 0, 0, false},
		{`{"a":[1}`, 0, 0, 2, false},
		{`{"a":1]`, 0, 7, 1, false},
		{`{"a":[[[`, 0, 0, 4, false},
		{``, 0, 0, 0, false},
		{`{`, 3, 0, 0, false},
	} {
		end, depth, ok := ObjectSpan([]byte(tc.in), tc.i)
		if end != tc.end || depth != tc.depth || ok != tc.ok {
			t.Errorf("ObjectSpan(%q, %d) = %d, %d, %v; want %d, %d, %v", tc.in, tc.i, end, depth, ok, tc.end, tc.depth, tc.ok)
		}
	}
}

// FuzzObjectSpan: on every JSON object json.Valid accepts, ObjectSpan ends
// where the object ends and counts the depth encoding/json's tokens show.
func FuzzObjectSpan(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":[1,{"b":"}]"}]}`, ` {"x":"\"\\"} `, `{"a":[[[]]],"b":{}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.TrimSpace(b)
		if !json.Valid(in) || len(in) == 0 || in[0] != '{' {
			return
		}
		end, depth, ok := ObjectSpan(in, 0)
		if !ok || end != len(in) {
			t.Fatalf("ObjectSpan(%q) = %d, %v; want %d, true", in, end, ok, len(in))
		}
		want, level := 0, 0
		dec := json.NewDecoder(bytes.NewReader(in))
		for {
			tok, err := dec.Token()
			if err != nil {
				break
			}
			switch tok {
			case json.Delim('{'), json.Delim('['):
				level++
				want = max(want, level)
			case json.Delim('}'), json.Delim(']'):
				level--
			}
		}
		if depth != want {
			t.Fatalf("ObjectSpan(%q) depth %d, want %d", in, depth, want)
		}
	})
}
