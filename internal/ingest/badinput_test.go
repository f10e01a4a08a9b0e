package ingest

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/pkg/envelope"
)

// noneToken is an unsigned ("alg": "none") token for alice that does not
// expire for an hour.
func noneToken() string {
	enc := base64.RawURLEncoding.EncodeToString
	exp := time.Now().Add(time.Hour).Unix()
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		enc([]byte(`{"sub":"alice","admin":true,"exp":`+itoa(exp)+`}`)) + "."
}

// TestBadInput sends each kind of bad request and checks the status, the
// JSON error code, the headers the status requires, and that nothing was
// stored: JOBS and the job_status bucket hold what they held before.
func TestBadInput(t *testing.T) {
	h := newHarness(t, nil)
	alice := token(t, "alice")
	// A job of bob's, for the cross-user cases.
	bobs := h.submit(token(t, "bob"), `{"kind":"image"}`)
	if bobs.Status != http.StatusAccepted {
		t.Fatalf("seed: %d %s", bobs.Status, bobs.Body)
	}
	bobJob := bobs.snapshot(t).ID

	forged, err := auth.Issue([]byte("another-secret-0123456789"), "alice", false, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := auth.Issue(testSecret, "alice", false, -time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// Under the body limit, but the envelope around it is over the
	// envelope (and NATS payload) limit.
	almost := `{"kind":"image","input":{"blob":"` + strings.Repeat("x", 1<<20-64) + `"}}`
	big := `{"kind":"image","input":{"blob":"` + strings.Repeat("x", 2<<20) + `"}}`

	cases := []struct {
		name   string
		method string
		path   string
		body   string
		opts   []reqOpt
		status int
		code   string
	}{
		{"malformed JSON", "POST", "/v1/jobs", `{"kind":"image",`, []reqOpt{bearer(alice)}, 400, CodeInvalidJSON},
		{"not an object", "POST", "/v1/jobs", `["image"]`, []reqOpt{bearer(alice)}, 400, CodeInvalidJSON},
		{"empty body", "POST", "/v1/jobs", ``, []reqOpt{bearer(alice)}, 400, CodeInvalidJSON},
		{"two values", "POST", "/v1/jobs", `{"kind":"image"}{"kind":"image"}`, []reqOpt{bearer(alice)}, 400, CodeInvalidJSON},
		{"unknown field", "POST", "/v1/jobs", `{"kind":"image","user":"bob"}`, []reqOpt{bearer(alice)}, 400, CodeInvalidJSON},
		{"kind wrong type", "POST", "/v1/jobs", `{"kind":7}`, []reqOpt{bearer(alice)}, 400, CodeInvalidJSON},
		{"kind a.b", "POST", "/v1/jobs", `{"kind":"a.b"}`, []reqOpt{bearer(alice)}, 400, CodeInvalidKind},
		{"kind with wildcard", "POST", "/v1/jobs", `{"kind":"*"}`, []reqOpt{bearer(alice)}, 400, CodeInvalidKind},
		{"kind missing", "POST", "/v1/jobs", `{"input":{}}`, []reqOpt{bearer(alice)}, 400, CodeInvalidKind},
		{"unknown kind", "POST", "/v1/jobs", `{"kind":"audio"}`, []reqOpt{bearer(alice)}, 400, CodeUnknownKind},
		{"bad priority", "POST", "/v1/jobs", `{"kind":"image","priority":"urgent"}`, []reqOpt{bearer(alice)}, 400, CodeInvalidPriority},
		{"priority with dot", "POST", "/v1/jobs", `{"kind":"image","priority":"high.x"}`, []reqOpt{bearer(alice)}, 400, CodeInvalidPriority},
		{"input not an object", "POST", "/v1/jobs", `{"kind":"image","input":[1]}`, []reqOpt{bearer(alice)}, 400, CodeInvalidInput},
		{"input a string", "POST", "/v1/jobs", `{"kind":"image","input":"x"}`, []reqOpt{bearer(alice)}, 400, CodeInvalidInput},
		{"input nested too deep", "POST", "/v1/jobs", `{"kind":"image","input":{"a":` + nested(envelope.MaxInputDepth) + `}}`, []reqOpt{bearer(alice)}, 400, CodeInvalidInput},
		{"input nested to encoding/json's limit", "POST", "/v1/jobs", `{"kind":"image","input":{"a":` + nested(9998) + `}}`, []reqOpt{bearer(alice)}, 400, CodeInvalidInput},
		{"input nested past encoding/json's limit", "POST", "/v1/jobs", `{"kind":"image","input":{"a":` + nested(9999) + `}}`, []reqOpt{bearer(alice)}, 400, CodeInvalidJSON},
		{"idempotency key too long", "POST", "/v1/jobs", `{"kind":"image"}`, []reqOpt{bearer(alice), withHeader("Idempotency-Key", strings.Repeat("k", 129))}, 400, CodeInvalidIdempotencyKey},
		{"idempotency key not printable", "POST", "/v1/jobs", `{"kind":"image"}`, []reqOpt{bearer(alice), withHeader("Idempotency-Key", "a\tb")}, 400, CodeInvalidIdempotencyKey},
		{"no token", "POST", "/v1/jobs", `{"kind":"image"}`, nil, 401, CodeUnauthorized},
		{"not bearer", "POST", "/v1/jobs", `{"kind":"image"}`, []reqOpt{withHeader("Authorization", "Basic YWxpY2U6eA==")}, 401, CodeUnauthorized},
		{"garbage token", "POST", "/v1/jobs", `{"kind":"image"}`, []reqOpt{bearer("not.a.jwt")}, 401, CodeUnauthorized},
		{"forged token", "POST", "/v1/jobs", `{"kind":"image"}`, []reqOpt{bearer(forged)}, 401, CodeUnauthorized},
		{"alg none token", "POST", "/v1/jobs", `{"kind":"image"}`, []reqOpt{bearer(noneToken())}, 401, CodeUnauthorized},
		{"expired token", "POST", "/v1/jobs", `{"kind":"image"}`, []reqOpt{bearer(expired)}, 401, CodeUnauthorized},
		{"2 MiB body", "POST", "/v1/jobs", big, []reqOpt{bearer(alice)}, 413, CodeTooLarge},
		{"envelope over 1 MiB", "POST", "/v1/jobs", almost, []reqOpt{bearer(alice)}, 413, CodeTooLarge},
		{"text/plain", "POST", "/v1/jobs", `{"kind":"image"}`, []reqOpt{bearer(alice), withHeader("Content-Type", "text/plain")}, 415, CodeUnsupportedMediaType},
		{"no content type", "POST", "/v1/jobs", `{"kind":"image"}`, []reqOpt{bearer(alice), withHeader("Content-Type", "")}, 415, CodeUnsupportedMediaType},
		{"GET id with *", "GET", "/v1/jobs/abc*", "", []reqOpt{bearer(alice)}, 400, CodeInvalidID},
		{"GET id with .", "GET", "/v1/jobs/a.b", "", []reqOpt{bearer(alice)}, 400, CodeInvalidID},
		{"GET id with >", "GET", "/v1/jobs/%3E", "", []reqOpt{bearer(alice)}, 400, CodeInvalidID},
		{"GET id with space", "GET", "/v1/jobs/a%20b", "", []reqOpt{bearer(alice)}, 400, CodeInvalidID},
		{"GET id too long", "GET", "/v1/jobs/" + strings.Repeat("a", 65), "", []reqOpt{bearer(alice)}, 400, CodeInvalidID},
		{"DELETE id with *", "DELETE", "/v1/jobs/abc*", "", []reqOpt{bearer(alice)}, 400, CodeInvalidID},
		{"GET unknown job", "GET", "/v1/jobs/nosuchjob", "", []reqOpt{bearer(alice)}, 404, CodeNotFound},
		{"DELETE unknown job", "DELETE", "/v1/jobs/nosuchjob", "", []reqOpt{bearer(alice)}, 404, CodeNotFound},
		{"GET another user's job", "GET", "/v1/jobs/" + bobJob, "", []reqOpt{bearer(alice)}, 403, CodeForbidden},
		{"DELETE another user's job", "DELETE", "/v1/jobs/" + bobJob, "", []reqOpt{bearer(alice)}, 403, CodeForbidden},
		{"GET without token", "GET", "/v1/jobs/" + bobJob, "", nil, 401, CodeUnauthorized},
		{"DELETE with forged token", "DELETE", "/v1/jobs/" + bobJob, "", []reqOpt{bearer(forged)}, 401, CodeUnauthorized},
		{"PUT /v1/jobs", "PUT", "/v1/jobs", `{}`, []reqOpt{bearer(alice)}, 405, CodeMethodNotAllowed},
		{"POST /v1/jobs/{id}", "POST", "/v1/jobs/" + bobJob, `{}`, []reqOpt{bearer(alice)}, 405, CodeMethodNotAllowed},
		{"unknown route", "GET", "/v2/things", "", nil, 404, CodeNotFound},
	}
	jobs, kv := h.jobsCount(), h.kvCount()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body []byte
			if c.method == "POST" || c.method == "PUT" {
				body = []byte(c.body)
			}
			r := h.do(c.method, c.path, body, c.opts...)
			if r.Status != c.status {
				t.Fatalf("status %d, want %d: %s", r.Status, c.status, r.Body)
			}
			if code := r.errorCode(t); code != c.code {
				t.Fatalf("code %q, want %q", code, c.code)
			}
			if c.status == 401 && !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %q", r.Header.Get("WWW-Authenticate"))
			}
			if c.status == 405 && r.Header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
			if strings.Contains(string(r.Body), alice) || strings.Contains(string(r.Body), forged) {
				t.Error("a token is echoed in the answer")
			}
		})
	}
	if n := h.jobsCount(); n != jobs {
		t.Errorf("JOBS holds %d messages, had %d: bad input changed it", n, jobs)
	}
	if n := h.kvCount(); n != kv {
		t.Errorf("job_status holds %d entries, had %d: bad input changed it", n, kv)
	}
	// bob's job is still queued: a foreign DELETE did nothing.
	r := h.do("GET", "/v1/jobs/"+bobJob, nil, bearer(token(t, "bob")))
	if r.Status != 200 || r.snapshot(t).Status != "queued" || r.snapshot(t).Seq != 0 {
		t.Fatalf("bob's job after bad input: %d %s", r.Status, r.Body)
	}
	if got := h.metric("beamline_ingest_rejected_total", map[string]string{"reason": CodeUnauthorized}); got < 6 {
		t.Errorf("rejected_total{unauthorized} = %v", got)
	}
}

func TestAdminReadsAnyJob(t *testing.T) {
	h := newHarness(t, nil)
	r := h.submit(token(t, "bob"), `{"kind":"image"}`)
	id := r.snapshot(t).ID
	g := h.do("GET", "/v1/jobs/"+id, nil, bearer(adminToken(t, "root")))
	if g.Status != 200 || g.snapshot(t).User != "bob" {
		t.Fatalf("%d %s", g.Status, g.Body)
	}
}

// TestInputAtTheDepthLimit: an input nested exactly envelope.MaxInputDepth
// levels is accepted and runs (the processor decodes it); one level more
// is the 400 TestBadInput checks.
func TestInputAtTheDepthLimit(t *testing.T) {
	h := newHarness(t, nil)
	h.startProcessor()
	alice := token(t, "alice")
	r := h.submit(alice, `{"kind":"image","input":{"a":`+nested(envelope.MaxInputDepth-1)+`}}`)
	if r.Status != http.StatusAccepted {
		t.Fatalf("input at the limit: %d %s", r.Status, r.Body)
	}
	h.waitStatus(alice, r.snapshot(t).ID, envelope.StatusSucceeded)
}

// nested is n arrays, one inside the other.
func nested(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
