package envelope

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// checkSnapshotEncoding fails t unless marshalSnapshot writes what
// json.Marshal writes, or both fail.
func checkSnapshotEncoding(t *testing.T, s *Snapshot) {
	t.Helper()
	got, err := marshalSnapshot(s)
	want, werr := json.Marshal(s)
	if (err == nil) != (werr == nil) {
		t.Fatalf("marshalSnapshot err %v, json.Marshal err %v", err, werr)
	}
	if string(got) != string(want) {
		t.Fatalf("marshalSnapshot differs from json.Marshal:\n%s\n%s", got, want)
	}
	// Whatever json.Marshal encodes, appendSnapshot encodes itself.
	fast, ok := appendSnapshot(nil, s)
	if ok != (werr == nil) || ok && string(fast) != string(want) {
		t.Fatalf("appendSnapshot (ok %v) differs from json.Marshal (%v):\n%s\n%s", ok, werr, fast, want)
	}
}

func TestAppendSnapshot(t *testing.T) {
	at := time.Date(2026, 12, 6, 4, 5, 6, 789000000, time.UTC)
	exp := at.Add(time.Hour).In(time.FixedZone("x", -3600))
	full := Snapshot{
		ID: "j-1", User: "alice", Kind: "image", Priority: PriorityHigh, Status: StatusSucceeded,
		Progress: 100, Attempt: 2, Result: json.RawMessage(`{"url":"https://x/o.png?a=1&b=<2>","n":[1,2.5e3,null]}`),
		Error: "was \"slow\" <once>", Seq: 9, CreatedAt: at, UpdatedAt: exp, RunAt: &exp, RerunOf: "j-0",
		Provider: "replicate:owner/name",
		Preview:  &Preview{Output: "preview", URL: "/v1/jobs/j-1/outputs/preview", SignedURL: "https://s/?sig=a&exp=1", ExpiresAt: &exp, ContentType: "image/png", Size: 1234, Digest: "SHA-256=abc"},
		Remote:   &RemoteStats{Provider: "cog", Starts: 1, QueuedMS: 12, RunMS: 3400},
	}
	cases := map[string]Snapshot{
		"queued":  {ID: "j", User: "u", Kind: "k", Priority: PriorityNormal, Status: StatusQueued, CreatedAt: at, UpdatedAt: at},
		"full":    full,
		"zero":    {},
		"remote0": {ID: "j", Remote: &RemoteStats{}, Preview: &Preview{}},
		"negative": {ID: "j", Progress: -1, Attempt: -2, Remote: &RemoteStats{Starts: -1, QueuedMS: -5, RunMS: -6},
			Preview: &Preview{Size: -7}},
		"unicode":   {ID: "j", Error: "héllo \u2028 \u2029 \x01 \x7f \xff", Provider: "ü"},
		"year9999":  {ID: "j", CreatedAt: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)},
		"year10000": {ID: "j", CreatedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		"zone24h":   {ID: "j", UpdatedAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.FixedZone("far", 25*3600))},
		"badRunAt":  {ID: "j", RunAt: func() *time.Time { t := time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC); return &t }()},
	}
	for _, r := range []string{`{}`, `null`, `"s"`, `[1, 2]`, " {\n\t\"a\" : \"<b>&\" }\n", `{"a":"` + "\u2028" + `"}`,
		`{"a":"\u2028"}`, `{"a":"é"}`, `{"a":`, `not json`, `{"a":1}}`, `1e400`} {
		s := full
		s.Result = json.RawMessage(r)
		cases["result "+r] = s
	}
	for name, s := range cases {
		t.Run(strings.ReplaceAll(name, "/", "_"), func(t *testing.T) { checkSnapshotEncoding(t, &s) })
	}
}

// appendSnapshot spells out every field by hand: one added to Snapshot,
// Preview or RemoteStats must be added there too. Every field is set here
// by reflection, so this fails until it is.
func TestAppendSnapshotKnowsEveryField(t *testing.T) {
	var s Snapshot
	fill(reflect.ValueOf(&s).Elem())
	if s.Preview == nil || s.Remote == nil || s.RunAt == nil || s.Provider == "" {
		t.Fatalf("fill left fields unset: %+v", s)
	}
	checkSnapshotEncoding(t, &s)
}

// fill sets every field of v, recursively, to a value that is not zero
// (so no omitempty hides it), and panics on a kind it does not know.
func fill(v reflect.Value) {
	switch v.Type() {
	case reflect.TypeFor[time.Time]():
		v.Set(reflect.ValueOf(time.Date(2027, 1, 2, 3, 4, 5, 6, time.UTC)))
		return
	case reflect.TypeFor[json.RawMessage]():
		v.Set(reflect.ValueOf(json.RawMessage(`{"a":"<b>"}`)))
		return
	}
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1.5)
	case reflect.Int8, reflect.Int16, reflect.Uint8, reflect.Uint16:
		if v.CanInt() {
			v.SetInt(3)
		} else {
			v.SetUint(3)
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0))
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k)
		fill(e)
		v.SetMapIndex(k, e)
	case reflect.String:
		v.SetString("x<&" + v.Type().Name())
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(7)
	case reflect.Uint, reflect.Uint64, reflect.Uint32:
		v.SetUint(9)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Struct:
		for i := range v.NumField() {
			fill(v.Field(i))
		}
	default:
		panic("fill: add the kind " + v.Kind().String())
	}
}

func FuzzAppendSnapshot(f *testing.F) {
	f.Add("j1", "u1", "boom <x>", "cog", "https://s/?a&b", 50, 1, uint64(3), int64(1765000000123456789), int64(-1), []byte(`{"url":"a&b"}`), uint8(0xff), int64(12), int64(0))
	f.Add("\x00\xff", "\u2028", "", "", "", -1, 0, uint64(0), int64(-62135596800), int64(253402300800000000), []byte(" [1, \"\u2029\"] "), uint8(0), int64(0), int64(-3))
	f.Fuzz(func(t *testing.T, id, user, errText, provider, url string, progress, attempt int, seq uint64,
		nanos, nanos2 int64, result []byte, opts uint8, queued, run int64) {
		t1, t2 := time.Unix(0, nanos).UTC(), time.Unix(0, nanos2).In(time.FixedZone("z", int(nanos2%100000)))
		s := Snapshot{ID: id, User: user, Kind: "image", Priority: PriorityNormal, Status: StatusRunning,
			Progress: progress, Attempt: attempt, Error: errText, Seq: seq, CreatedAt: t1, UpdatedAt: t2,
			Provider: provider}
		if opts&1 != 0 {
			s.Result = result
		}
		if opts&2 != 0 {
			s.Preview = &Preview{Output: "preview", URL: url, SignedURL: url, ContentType: user, Size: queued, Digest: errText}
			if opts&4 != 0 {
				s.Preview.ExpiresAt = &t2
			}
		}
		if opts&8 != 0 {
			s.Remote = &RemoteStats{Provider: provider, Starts: attempt, QueuedMS: queued, RunMS: run}
		}
		if opts&16 != 0 {
			s.RunAt = &t1
		}
		if opts&32 != 0 {
			s.RerunOf = url
		}
		checkSnapshotEncoding(t, &s)
	})
}

func BenchmarkMarshalSnapshot(b *testing.B) {
	at := time.Date(2026, 12, 6, 4, 5, 6, 789000000, time.UTC)
	s := Snapshot{ID: "job-123", User: "alice", Kind: "image", Priority: PriorityNormal, Status: StatusSucceeded,
		Attempt: 1, Progress: 100, Seq: 2, CreatedAt: at, UpdatedAt: at, Provider: "sim",
		Result: json.RawMessage(`{"outputs":[{"name":"out.png","url":"/v1/jobs/job-123/outputs/out.png"}]}`)}
	for _, bc := range []struct {
		name string
		fn   func() ([]byte, error)
	}{{"hand", func() ([]byte, error) { return marshalSnapshot(&s) }}, {"encoding-json", func() ([]byte, error) { return json.Marshal(&s) }}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.fn(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
