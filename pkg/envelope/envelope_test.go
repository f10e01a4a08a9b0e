package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

func testJob() Job {
	return Job{
		ID:        "job-1",
		User:      "alice",
		Kind:      "image",
		Priority:  PriorityNormal,
		Input:     json.RawMessage(`{"prompt":"a red fox","sim":{"steps":3}}`),
		CreatedAt: t0,
	}
}

func testSnapshot() Snapshot {
	s := NewSnapshot(testJob())
	s.Status = StatusRunning
	s.Progress = 40
	s.Attempt = 2
	s.Seq = 7
	s.UpdatedAt = t0.Add(3 * time.Second)
	return s
}

// rawEnvelope is a valid job envelope as a generic map, for tests to break.
func rawEnvelope(t *testing.T) map[string]any {
	t.Helper()
	b, err := EncodeJob(testJob(), "/test")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestJobRoundTrip(t *testing.T) {
	j := testJob()
	b, err := EncodeJob(j, "/beamline/test")
	if err != nil {
		t.Fatal(err)
	}
	e, got, err := DecodeJob(b)
	if err != nil {
		t.Fatal(err)
	}
	if e.SpecVersion != SpecVersion || e.ID != j.ID || e.Source != "/beamline/test" ||
		e.Type != TypeSubmitted || e.Subject != j.ID || !e.Time.Equal(j.CreatedAt) ||
		e.DataContentType != ContentType {
		t.Errorf("envelope attributes = %+v", e)
	}
	if !jobEqual(got, j) {
		t.Errorf("DecodeJob = %+v, want %+v", got, j)
	}
	// Without input.
	j.Input = nil
	b, err = EncodeJob(j, "/x")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(`"input"`)) {
		t.Errorf("empty input is encoded: %s", b)
	}
	if _, got, err = DecodeJob(b); err != nil || !jobEqual(got, j) {
		t.Errorf("DecodeJob without input = %+v, %v", got, err)
	}
}

func TestEventRoundTrip(t *testing.T) {
	s := testSnapshot()
	s.Result = json.RawMessage(`{"url":"https://example.com/x.png"}`)
	for _, typ := range []Type{TypeStarted, TypeProgress, TypeRetrying, TypeSucceeded, TypeFailed, TypeDead, TypeCancelled} {
		e, err := NewEvent(typ, s, "/beamline/processor")
		if err != nil {
			t.Fatalf("NewEvent(%s): %v", typ, err)
		}
		if e.ID != "job-1:7" || e.Subject != "job-1" || !e.Time.Equal(s.UpdatedAt) {
			t.Errorf("NewEvent(%s) attributes = %+v", typ, e)
		}
		b, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		de, got, err := DecodeEvent(b)
		if err != nil {
			t.Fatalf("DecodeEvent(%s): %v", typ, err)
		}
		if de.Type != typ || de.ID != e.ID {
			t.Errorf("DecodeEvent(%s) envelope = %+v", typ, de)
		}
		if !snapshotEqual(got, s) {
			t.Errorf("DecodeEvent(%s) = %+v, want %+v", typ, got, s)
		}
	}
}

func TestNewEventRejects(t *testing.T) {
	s := testSnapshot()
	if _, err := NewEvent(TypeSubmitted, s, "/x"); !errors.Is(err, ErrUnknownType) {
		t.Errorf("submitted as event: %v", err)
	}
	if _, err := NewEvent("beamline.job.exploded", s, "/x"); !errors.Is(err, ErrUnknownType) {
		t.Errorf("unknown type: %v", err)
	}
	bad := s
	bad.Progress = 101
	if _, err := NewEvent(TypeProgress, bad, "/x"); !errors.Is(err, ErrMalformed) {
		t.Errorf("progress 101: %v", err)
	}
	bad = s
	bad.User = "a.b"
	if _, err := NewEvent(TypeProgress, bad, "/x"); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("user a.b: %v", err)
	}
	bad = s
	bad.Status = "exploded"
	if _, err := NewEvent(TypeProgress, bad, "/x"); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad status: %v", err)
	}
}

func TestEncodeJobRejects(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Job)
		want   error
	}{
		{"id with dot", func(j *Job) { j.ID = "a.b" }, ErrInvalidToken},
		{"id with star", func(j *Job) { j.ID = "*" }, ErrInvalidToken},
		{"user with gt", func(j *Job) { j.User = ">" }, ErrInvalidToken},
		{"kind upper", func(j *Job) { j.Kind = "Image" }, ErrInvalidToken},
		{"priority", func(j *Job) { j.Priority = "urgent" }, ErrInvalidToken},
		{"input array", func(j *Job) { j.Input = json.RawMessage(`[1]`) }, ErrMalformed},
		{"input string", func(j *Job) { j.Input = json.RawMessage(`"x"`) }, ErrMalformed},
		{"no created_at", func(j *Job) { j.CreatedAt = time.Time{} }, ErrMissingAttribute},
		{"huge input", func(j *Job) {
			j.Input = json.RawMessage(`{"x":"` + strings.Repeat("a", MaxSize) + `"}`)
		}, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := testJob()
			tt.mutate(&j)
			if _, err := EncodeJob(j, "/x"); !errors.Is(err, tt.want) {
				t.Fatalf("EncodeJob = %v, want %v", err, tt.want)
			}
			if _, err := NewJobMsg(j, "/x", ""); !errors.Is(err, tt.want) {
				t.Fatalf("NewJobMsg = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDecodeStrict(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(m map[string]any)
		want   error
		field  string
	}{
		{"specversion missing", func(m map[string]any) { delete(m, "specversion") }, ErrSpecVersion, "specversion"},
		{"specversion 0.3", func(m map[string]any) { m["specversion"] = "0.3" }, ErrSpecVersion, "specversion"},
		{"specversion number", func(m map[string]any) { m["specversion"] = 1.0 }, ErrMalformed, "envelope"},
		{"id missing", func(m map[string]any) { delete(m, "id") }, ErrMissingAttribute, "id"},
		{"id empty", func(m map[string]any) { m["id"] = "" }, ErrMissingAttribute, "id"},
		{"source missing", func(m map[string]any) { delete(m, "source") }, ErrMissingAttribute, "source"},
		{"type missing", func(m map[string]any) { delete(m, "type") }, ErrMissingAttribute, "type"},
		{"type unknown", func(m map[string]any) { m["type"] = "com.example.thing" }, ErrUnknownType, "type"},
		{"time missing", func(m map[string]any) { delete(m, "time") }, ErrMissingAttribute, "time"},
		{"time null", func(m map[string]any) { m["time"] = nil }, ErrMissingAttribute, "time"},
		{"time not RFC 3339", func(m map[string]any) { m["time"] = "yesterday" }, ErrMalformed, "envelope"},
		{"datacontenttype xml", func(m map[string]any) { m["datacontenttype"] = "text/xml" }, ErrMalformed, "datacontenttype"},
		{"data missing", func(m map[string]any) { delete(m, "data") }, ErrMalformed, "data"},
		{"data null", func(m map[string]any) { m["data"] = nil }, ErrMalformed, "data"},
		{"data string", func(m map[string]any) { m["data"] = "hello" }, ErrMalformed, "data"},
		{"data array", func(m map[string]any) { m["data"] = []any{1, 2} }, ErrMalformed, "data"},
		{"data number", func(m map[string]any) { m["data"] = 3 }, ErrMalformed, "data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := rawEnvelope(t)
			tt.mutate(m)
			_, err := Decode(mustJSON(t, m))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode = %v, want %v", err, tt.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Fatalf("Decode = %#v, want a FieldError for %q", err, tt.field)
			}
			// The typed decoders report the same error.
			if _, _, err := DecodeJob(mustJSON(t, m)); !errors.Is(err, tt.want) {
				t.Fatalf("DecodeJob = %v, want %v", err, tt.want)
			}
			if _, _, err := DecodeEvent(mustJSON(t, m)); !errors.Is(err, tt.want) {
				t.Fatalf("DecodeEvent = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDecodeGarbage(t *testing.T) {
	for _, in := range []string{
		"", "   ", "null", "true", "42", `"str"`, "[]", "{", `{"specversion":`, "\x00\x01\x02",
		"not json at all", `{"specversion":"1.0"}}`, "\xff\xfe{}",
	} {
		if _, err := Decode([]byte(in)); err == nil {
			t.Errorf("Decode(%q) = nil error", in)
		} else if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrSpecVersion) {
			t.Errorf("Decode(%q) = %v, want ErrMalformed or ErrSpecVersion", in, err)
		}
	}
}

func TestDecodeTooLarge(t *testing.T) {
	m := rawEnvelope(t)
	m["data"] = map[string]any{"pad": strings.Repeat("x", MaxSize)}
	b := mustJSON(t, m)
	for name, dec := range map[string]func([]byte) error{
		"Decode":         func(b []byte) error { _, err := Decode(b); return err },
		"DecodeJob":      func(b []byte) error { _, _, err := DecodeJob(b); return err },
		"DecodeEvent":    func(b []byte) error { _, _, err := DecodeEvent(b); return err },
		"DecodeSnapshot": func(b []byte) error { _, err := DecodeSnapshot(b); return err },
	} {
		if err := dec(b); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s(%d bytes) = %v, want ErrTooLarge", name, len(b), err)
		}
	}
	// Exactly MaxSize is allowed through the size check.
	exact := append([]byte(nil), b[:0]...)
	exact = append(exact, bytes.Repeat([]byte(" "), MaxSize-2)...)
	exact = append(exact, '{', '}')
	if _, err := Decode(exact); errors.Is(err, ErrTooLarge) {
		t.Errorf("Decode(MaxSize bytes) = %v", err)
	}
}

func TestDecodeJobStrict(t *testing.T) {
	job := func(mut func(j map[string]any)) func(m map[string]any) {
		return func(m map[string]any) { mut(m["data"].(map[string]any)) }
	}
	tests := []struct {
		name   string
		mutate func(m map[string]any)
		want   error
	}{
		{"envelope id differs from job id", func(m map[string]any) { m["id"] = "other" }, ErrMalformed},
		{"event type", func(m map[string]any) { m["type"] = string(TypeStarted) }, ErrUnknownType},
		{"job id with dot", job(func(j map[string]any) { j["id"] = "a.b" }), ErrInvalidToken},
		{"job id with star, envelope too", func(m map[string]any) {
			m["id"] = "a*"
			m["data"].(map[string]any)["id"] = "a*"
		}, ErrInvalidToken},
		{"user with space", job(func(j map[string]any) { j["user"] = "a b" }), ErrInvalidToken},
		{"user missing", job(func(j map[string]any) { delete(j, "user") }), ErrInvalidToken},
		{"kind upper", job(func(j map[string]any) { j["kind"] = "IMAGE" }), ErrInvalidToken},
		{"kind 33", job(func(j map[string]any) { j["kind"] = strings.Repeat("k", 33) }), ErrInvalidToken},
		{"priority", job(func(j map[string]any) { j["priority"] = "urgent" }), ErrInvalidToken},
		{"input array", job(func(j map[string]any) { j["input"] = []any{} }), ErrMalformed},
		{"created_at missing", job(func(j map[string]any) { delete(j, "created_at") }), ErrMissingAttribute},
		{"kind a number", job(func(j map[string]any) { j["kind"] = 7 }), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := rawEnvelope(t)
			tt.mutate(m)
			if _, _, err := DecodeJob(mustJSON(t, m)); !errors.Is(err, tt.want) {
				t.Fatalf("DecodeJob = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDecodeEventStrict(t *testing.T) {
	valid := func(t *testing.T) map[string]any {
		e, err := NewEvent(TypeProgress, testSnapshot(), "/x")
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(mustJSON(t, e), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	snap := func(mut func(s map[string]any)) func(m map[string]any) {
		return func(m map[string]any) { mut(m["data"].(map[string]any)) }
	}
	tests := []struct {
		name   string
		mutate func(m map[string]any)
		want   error
	}{
		{"submitted type", func(m map[string]any) { m["type"] = string(TypeSubmitted) }, ErrUnknownType},
		{"status unknown", snap(func(s map[string]any) { s["status"] = "exploded" }), ErrMalformed},
		{"progress 101", snap(func(s map[string]any) { s["progress"] = 101 }), ErrMalformed},
		{"progress -1", snap(func(s map[string]any) { s["progress"] = -1 }), ErrMalformed},
		{"seq negative", snap(func(s map[string]any) { s["seq"] = -1 }), ErrMalformed},
		{"user with dot", snap(func(s map[string]any) { s["user"] = "a.b" }), ErrInvalidToken},
		{"job id missing", snap(func(s map[string]any) { delete(s, "id") }), ErrInvalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := valid(t)
			tt.mutate(m)
			if _, _, err := DecodeEvent(mustJSON(t, m)); !errors.Is(err, tt.want) {
				t.Fatalf("DecodeEvent = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestTypeShortAndEventType(t *testing.T) {
	if got := TypeProgress.Short(); got != "progress" {
		t.Errorf("Short = %q", got)
	}
	if got := Type("plain").Short(); got != "plain" {
		t.Errorf("Short(plain) = %q", got)
	}
	for st, want := range map[Status]Type{
		StatusQueued: TypeSubmitted, StatusRunning: TypeStarted, StatusRetrying: TypeRetrying,
		StatusSucceeded: TypeSucceeded, StatusFailed: TypeFailed, StatusDead: TypeDead,
		StatusCancelled: TypeCancelled, StatusExpired: TypeExpired, "bogus": "",
	} {
		if got := EventType(st); got != want {
			t.Errorf("EventType(%q) = %q, want %q", st, got, want)
		}
	}
	for _, st := range []Status{StatusSucceeded, StatusFailed, StatusDead, StatusCancelled, StatusExpired} {
		if !st.Terminal() {
			t.Errorf("%s not terminal", st)
		}
	}
	for _, st := range []Status{StatusScheduled, StatusQueued, StatusRunning, StatusRetrying} {
		if st.Terminal() {
			t.Errorf("%s terminal", st)
		}
	}
}

// jobEqual compares jobs by value: times by instant, input by JSON meaning.
func jobEqual(a, b Job) bool {
	return a.ID == b.ID && a.User == b.User && a.Kind == b.Kind && a.Priority == b.Priority &&
		a.CreatedAt.Equal(b.CreatedAt) && jsonEqual(a.Input, b.Input) &&
		(a.ExpiresAt == nil) == (b.ExpiresAt == nil) && (a.ExpiresAt == nil || a.ExpiresAt.Equal(*b.ExpiresAt)) &&
		a.RerunOf == b.RerunOf
}

func snapshotEqual(a, b Snapshot) bool {
	return a.ID == b.ID && a.User == b.User && a.Kind == b.Kind && a.Priority == b.Priority &&
		a.Status == b.Status && a.Progress == b.Progress && a.Attempt == b.Attempt &&
		a.Error == b.Error && a.Seq == b.Seq && a.CreatedAt.Equal(b.CreatedAt) &&
		a.UpdatedAt.Equal(b.UpdatedAt) && jsonEqual(a.Result, b.Result)
}

// jsonEqual reports whether two raw JSON values are equal once normalised
// the way encoding/json writes a RawMessage (compacted, HTML-escaped).
func jsonEqual(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	na, errA := json.Marshal(a)
	nb, errB := json.Marshal(b)
	if errA != nil || errB != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(na, nb)
}

// EncodeJob writes the envelope by hand; it must decode to exactly what
// NewJobEnvelope + Encode produce, and refuse what they refuse.
func TestEncodeJobMatchesEncode(t *testing.T) {
	base := testJob()
	inputs := []string{"", `{}`, `{ "prompt" : "a <b> & \"c\"\n", "n": [1, 2.5e3, null, true] }`,
		`{"é":"\u00e9 ✓","nested":{"a":{}}}`, "{\n\t\"x\": 1\n}"}
	times := []time.Time{base.CreatedAt, time.Date(2031, 2, 3, 4, 5, 6, 7, time.FixedZone("x", 3600)), time.Unix(0, 0).UTC()}
	exp := time.Date(2032, 1, 2, 3, 4, 5, 6, time.UTC)
	for k, in := range inputs {
		for _, at := range times {
			j := base
			j.Input, j.CreatedAt = json.RawMessage(in), at
			if k%2 == 1 { // the optional fields, on every other input
				j.ExpiresAt, j.RerunOf = &exp, "old-job_1"
			}
			got, err := EncodeJob(j, `/svc "quoted" <html>`)
			if err != nil {
				t.Fatalf("EncodeJob(%q, %v): %v", in, at, err)
			}
			e, err := NewJobEnvelope(j, `/svc "quoted" <html>`)
			if err != nil {
				t.Fatal(err)
			}
			want, err := e.Encode()
			if err != nil {
				t.Fatal(err)
			}
			ge, gj, err := DecodeJob(got)
			if err != nil {
				t.Fatalf("EncodeJob output does not decode: %v\n%s", err, got)
			}
			we, wj, _ := DecodeJob(want)
			if !jobEqual(gj, wj) || ge.ID != we.ID || ge.Source != we.Source || ge.Type != we.Type ||
				ge.Subject != we.Subject || !ge.Time.Equal(we.Time) || ge.DataContentType != we.DataContentType {
				t.Fatalf("EncodeJob differs from Encode:\n%s\n%s", got, want)
			}
			if !json.Valid(got) {
				t.Fatalf("invalid JSON: %s", got)
			}
		}
	}
	bad := base
	bad.Input = json.RawMessage(`{"unterminated":`)
	if _, err := EncodeJob(bad, "/svc"); !errors.Is(err, ErrMalformed) {
		t.Fatalf("invalid input: %v, want ErrMalformed", err)
	}
	for _, at := range []time.Time{time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2030, 1, 1, 0, 0, 0, 0, time.FixedZone("far", 25*3600))} {
		bad = base
		bad.CreatedAt = at
		if _, err := EncodeJob(bad, "/svc"); !errors.Is(err, ErrMalformed) {
			t.Fatalf("created_at %v: %v, want ErrMalformed (Encode refuses it too)", at, err)
		}
	}
	if _, err := EncodeJob(base, ""); !errors.Is(err, ErrMissingAttribute) {
		t.Fatalf("no source: %v, want ErrMissingAttribute", err)
	}
	big := base
	big.Input = json.RawMessage(`{"x":"` + strings.Repeat("a", MaxSize) + `"}`)
	if _, err := EncodeJob(big, "/svc"); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversize: %v, want ErrTooLarge", err)
	}
}

// DecodeJob reads what EncodeJob writes with its own scanner (scanJob), not
// encoding/json, and makes of it exactly what encoding/json makes. A job
// that falls back to encoding/json decodes the same, only slower, so this
// also checks that EncodeJob's output does take the scanner.
func TestScanJobMatchesJSON(t *testing.T) {
	base := testJob()
	exp := time.Date(2032, 1, 2, 3, 4, 5, 6, time.FixedZone("x", -7200))
	for k, in := range []string{"", `{}`, `{"prompt":"a } ] \\\" { [ <b> & é","n":[1,{"m":[]}]}`, "{\n\t\"x\": 1\n}"} {
		j := base
		j.Input = json.RawMessage(in)
		if k%2 == 1 {
			j.ExpiresAt, j.RerunOf = &exp, "old-job_1"
		}
		b, err := EncodeJob(j, "/beamline/ingest")
		if err != nil {
			t.Fatal(err)
		}
		e, sj, ok := scanJob(b)
		if !ok {
			t.Fatalf("scanJob does not read EncodeJob's output:\n%s", b)
		}
		we, wj, err := decodeJobJSON(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(e, we) || !reflect.DeepEqual(sj, wj) {
			t.Fatalf("scanJob differs from encoding/json on\n%s\n%+v %+v\n%+v %+v", b, e, sj, we, wj)
		}
		ge, gj, err := DecodeJob(b)
		if err != nil || !reflect.DeepEqual(ge, we) || !reflect.DeepEqual(gj, wj) {
			t.Fatalf("DecodeJob differs from encoding/json (%v)", err)
		}
		// The job's input is its own bytes: appending to it leaves the
		// envelope's data as it was.
		if len(gj.Input) > 0 {
			data := string(ge.Data)
			_ = append(gj.Input, "garbage"...)
			if string(ge.Data) != data {
				t.Fatal("appending to the job's input wrote into the envelope's data")
			}
		}
	}
	// An input at the depth limit takes the scanner; one level more is
	// refused by EncodeJob, and by DecodeJob as encoding/json's path does.
	nest := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	deep := base
	deep.Input = json.RawMessage(`{"a":` + nest(MaxInputDepth-1) + `}`)
	atLimit, err := EncodeJob(deep, "/beamline/ingest")
	if err != nil {
		t.Fatalf("input at the depth limit: %v", err)
	}
	if _, _, ok := scanJob(atLimit); !ok {
		t.Fatal("scanJob does not read an input at the depth limit")
	}
	deep.Input = json.RawMessage(`{"a":` + nest(MaxInputDepth) + `}`)
	if _, err := EncodeJob(deep, "/beamline/ingest"); !errors.Is(err, ErrMalformed) {
		t.Fatalf("input past the depth limit: %v, want ErrMalformed", err)
	}
	tooDeep := strings.Replace(string(atLimit), nest(MaxInputDepth-1), nest(MaxInputDepth), 1)
	if _, _, err := DecodeJob([]byte(tooDeep)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("DecodeJob of an input past the depth limit: %v, want ErrMalformed", err)
	}

	// What the scanner does not read is left to encoding/json.
	good, err := EncodeJob(base, "/beamline/ingest")
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		// json.Valid counts depth from the input, encoding/json from the
		// envelope: the scanner must not accept what the envelope's
		// depth limit refuses.
		"input at encoding/json's limit":   []byte(strings.Replace(string(atLimit), nest(MaxInputDepth-1), nest(9997), 1)),
		"input past encoding/json's limit": []byte(strings.Replace(string(atLimit), nest(MaxInputDepth-1), nest(9998), 1)),
		"escaped source":                   []byte(strings.Replace(string(good), `"/beamline/ingest"`, `"/beamline\/ingest"`, 1)),
		"white space":                      []byte(strings.Replace(string(good), `,"id":`, `, "id":`, 1)),
		"trailing space":                   append(append([]byte{}, good...), ' '),
		"trailing object":                  append(append([]byte{}, good...), "{}"...),
		"bad input":                        []byte(strings.Replace(string(good), `"priority":"normal"`, `"priority":"normal","input":{"a":tru}`, 1)),
	} {
		if _, _, ok := scanJob(b); ok {
			t.Errorf("%s: scanJob read %.300s", name, b)
		}
		e, j, err := DecodeJob(b)
		we, wj, werr := decodeJobJSON(b)
		if (err == nil) != (werr == nil) || !reflect.DeepEqual(e, we) || !reflect.DeepEqual(j, wj) {
			t.Errorf("%s: DecodeJob = %v, encoding/json = %v", name, err, werr)
		}
	}
}

func BenchmarkDecodeJob(b *testing.B) {
	j := testJob()
	j.Input = json.RawMessage(`{"prompt":"a lighthouse at dusk, oil on canvas","steps":30,"seed":42}`)
	msg, err := EncodeJob(j, "/beamline/ingest")
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		fn   func([]byte) (*Envelope, Job, error)
	}{{"scan", DecodeJob}, {"encoding-json", decodeJobJSON}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := bc.fn(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// EncodeJob spells out every field of Job and Envelope by hand: a field
// added to either must be added there too. This fails until it is.
func TestEncodeJobKnowsEveryField(t *testing.T) {
	tags := func(v any) []string {
		var out []string
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			out = append(out, rt.Field(i).Tag.Get("json"))
		}
		return out
	}
	if got, want := tags(Job{}), []string{"id", "user", "kind", "priority", "input,omitempty", "created_at", "expires_at,omitempty", "rerun_of,omitempty"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Job fields %q; EncodeJob writes %q: update it", got, want)
	}
	if got, want := tags(Envelope{}), []string{"specversion", "id", "source", "type", "subject,omitempty", "time", "datacontenttype,omitempty", "data"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Envelope fields %q; EncodeJob writes %q: update it", got, want)
	}
}

// TestAppendEnvelope: the event encoding that skips encoding/json writes
// exactly what Envelope.Encode (json.Marshal) writes, so readers cannot
// tell the two apart.
func TestAppendEnvelope(t *testing.T) {
	at := time.Date(2026, 12, 6, 4, 5, 6, 789000000, time.UTC)
	snaps := []Snapshot{
		{ID: "j1", User: "u1", Kind: "image", Priority: PriorityNormal, Status: StatusSucceeded, Seq: 1, UpdatedAt: at, Result: json.RawMessage(`{"a":"<b>&amp;"}`)},
		{ID: "j-2_x", User: "alice", Kind: "video", Priority: PriorityHigh, Status: StatusRunning, Seq: 7, Progress: 40, Error: "héllo \"quoted\" \\ <tag> \u2028 \x01", UpdatedAt: at.In(time.FixedZone("x", 3600))},
		{ID: "j3", User: "u", Kind: "k", Priority: PriorityLow, Status: StatusFailed, Seq: 2, UpdatedAt: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)},
	}
	for _, src := range []string{"/beamline/processor", "", "weird \"src\" <&>", "ünïcode"} {
		for _, s := range snaps {
			for _, typ := range []Type{TypeSucceeded, TypeProgress, TypeFailed} {
				m, data, err := EncodeEventMsg(typ, s, src, "")
				e, nerr := NewEvent(typ, s, src)
				var want []byte
				if nerr == nil {
					want, nerr = e.Encode()
				}
				if (err == nil) != (nerr == nil) {
					t.Fatalf("source %q snapshot %s: fast err %v, json err %v", src, s.ID, err, nerr)
				}
				if err != nil {
					continue
				}
				if string(m.Data) != string(want) {
					t.Errorf("source %q snapshot %s:\nfast %s\njson %s", src, s.ID, m.Data, want)
				}
				stored, _ := s.Marshal()
				if string(data) != string(stored) {
					t.Errorf("snapshot JSON %s, Marshal %s", data, stored)
				}
			}
		}
	}
}

func FuzzAppendEnvelope(f *testing.F) {
	f.Add("/beamline/processor", "j1", "u1", "boom <x>", int64(1765000000123456789), []byte(`{"url":"a&b"}`))
	f.Add("\x00\xff", "j", "u", "\u2028", int64(-62135596800), []byte(`null`))
	f.Fuzz(func(t *testing.T, src, id, user, errText string, nanos int64, result []byte) {
		s := Snapshot{ID: id, User: user, Kind: "image", Priority: PriorityNormal, Status: StatusFailed, Seq: 3,
			Error: errText, UpdatedAt: time.Unix(0, nanos).UTC()}
		if json.Valid(result) {
			s.Result = result
		}
		if s.UpdatedAt.IsZero() {
			return // the event's time would be time.Now, different in each call
		}
		m, _, err := EncodeEventMsg(TypeFailed, s, src, "")
		e, nerr := NewEvent(TypeFailed, s, src)
		var want []byte
		if nerr == nil {
			want, nerr = e.Encode()
		}
		if (err == nil) != (nerr == nil) {
			t.Fatalf("fast err %v, json err %v", err, nerr)
		}
		if err == nil && string(m.Data) != string(want) {
			t.Fatalf("fast %s\njson %s", m.Data, want)
		}
	})
}

// TestEventRefusesBadResult: a result that is not JSON is refused when the
// event is built, naming the result, as Validate names it.
func TestEventRefusesBadResult(t *testing.T) {
	s := Snapshot{ID: "j1", User: "u1", Kind: "image", Priority: PriorityNormal, Status: StatusSucceeded, Seq: 1,
		UpdatedAt: time.Now(), Result: json.RawMessage(`{"a":`)}
	for name, err := range map[string]error{
		"Validate":       s.Validate(),
		"NewEvent":       func() error { _, err := NewEvent(TypeSucceeded, s, "/t"); return err }(),
		"EncodeEventMsg": func() error { _, _, err := EncodeEventMsg(TypeSucceeded, s, "/t", ""); return err }(),
	} {
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "result") {
			t.Errorf("%s: %v, want ErrMalformed naming the result", name, err)
		}
	}
}

// BenchmarkDecodeEvent compares decoding a whole event with decoding what a
// push needs of it (DecodeEventHead): go test -run XXX -bench DecodeEvent -benchmem ./pkg/envelope
func BenchmarkDecodeEvent(b *testing.B) {
	now := time.Now().UTC()
	s := Snapshot{ID: "01JABCDEF0123456789XYZ", User: "alice", Kind: "image", Priority: PriorityNormal, Status: StatusSucceeded,
		Progress: 100, Attempt: 1, Result: json.RawMessage(`{"outputs":["https://example.com/a.png"],"seed":42}`), Seq: 3,
		CreatedAt: now, UpdatedAt: now, Provider: "sim"}
	m, err := NewEventMsg(TypeSucceeded, s, "/beamline/processor", "")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("full", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := DecodeEvent(m.Data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("head", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeEventHead(m.Data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
