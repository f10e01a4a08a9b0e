package ingest

import (
	"net/http"
	"net/url"
	"testing"
)

// FuzzDecodeBatch: the batch decoder never panics; it refuses with a 400
// (or 413 for too many items) *apiError, and what it takes holds 1 to
// MaxBatch raw items.
func FuzzDecodeBatch(f *testing.F) {
	for _, s := range []string{
		`{"jobs":[{"kind":"image"}]}`, `{"jobs":[]}`, `{"jobs":null}`, `{}`, `[]`, `{"jobs":[1,"x",null]}`,
		`{"jobs":[{"kind":"image"}],"x":1}`, `{"jobs":[{}]} {}`, ``, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		items, e := decodeBatch(b)
		if e != nil {
			if (e.Status != http.StatusBadRequest && e.Status != http.StatusRequestEntityTooLarge) || e.Code == "" || e.Message == "" {
				t.Fatalf("error %#v", e)
			}
			return
		}
		if len(items) < 1 || len(items) > MaxBatch {
			t.Fatalf("%d items taken", len(items))
		}
	})
}

// FuzzDecodeSchedule: the schedule decoder never panics and refuses with a
// 400; what it takes has a token name, exactly one of cron and every, and
// a job of a served kind without run_at, delay_ms or a key.
func FuzzDecodeSchedule(f *testing.F) {
	for _, s := range []string{
		`{"name":"tick","every":"1s","job":{"kind":"image"}}`,
		`{"name":"n","cron":"0 0 3 * * *","time_zone":"Europe/Paris","job":{"kind":"video","input":{"a":1}}}`,
		`{"name":"a.b","every":"1s","job":{"kind":"image"}}`, `{"name":"x","cron":"* * *","job":{}}`,
		`{"name":"x","every":"1ms","job":{"kind":"image"}}`, `{"name":"x","every":"1s","job":{"kind":"image","delay_ms":1}}`,
		`{"name":"x","every":"1s","time_zone":"UTC","job":{"kind":"image"}}`, `[]`, `{`,
	} {
		f.Add([]byte(s))
	}
	s := &Service{kinds: map[string]bool{"image": true, "video": true}}
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, e := s.decodeSchedule(b, "alice")
		if e != nil {
			if e.Status != http.StatusBadRequest || e.Code == "" || e.Message == "" {
				t.Fatalf("error %#v", e)
			}
			return
		}
		if (rec.Cron == "") == (rec.Every == "") || !s.kinds[rec.Job.Kind] || rec.Job.RunAt != nil || rec.Job.DelayMs != nil || rec.Job.IdempotencyKey != nil {
			t.Fatalf("took %+v", rec)
		}
	})
}

// FuzzDLQFilter: the DLQ query never panics; it is refused with a 400 or
// taken with a limit within bounds.
func FuzzDLQFilter(f *testing.F) {
	for _, s := range []string{"", "kind=image&user=alice&reason=x&limit=5", "since=2026-01-01T00:00:00Z&until=2025-01-01T00:00:00Z", "limit=0", "kind=A.B", "x=1", "limit=1&limit=2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		v, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		fl, e := dlqFilterOf(v)
		if e != nil {
			if e.Status != http.StatusBadRequest || e.Code == "" {
				t.Fatalf("error %#v", e)
			}
			return
		}
		if fl.Limit < 1 || fl.Limit > MaxDLQLimit {
			t.Fatalf("limit %d", fl.Limit)
		}
	})
}
