package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/outputs"
)

// outputHarness is ingest with one job of alice's and one stored output of
// it, 0.mp4.
func outputHarness(t *testing.T) (*harness, string, []byte) {
	t.Helper()
	h := newHarness(t, nil)
	id := h.submit(token(t, "alice"), `{"kind":"video"}`).snapshot(t).ID
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := outputs.CreateStore(ctx, h.js, outputs.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	video := make([]byte, 300<<10) // three chunks
	for i := range video {
		video[i] = byte(i * 31 / 7)
	}
	if _, err := st.Put(ctx, outputs.Key(id, "0.mp4"), "video/mp4", bytes.NewReader(video)); err != nil {
		t.Fatal(err)
	}
	return h, id, video
}

func TestOutputServedToItsOwner(t *testing.T) {
	h, id, video := outputHarness(t)
	alice := bearer(token(t, "alice"))
	path := "/v1/jobs/" + id + "/outputs/0.mp4"

	r := h.do(http.MethodGet, path, nil, alice)
	if r.Status != http.StatusOK || !bytes.Equal(r.Body, video) {
		t.Fatalf("GET %d, %d bytes", r.Status, len(r.Body))
	}
	etag := r.Header.Get("ETag")
	if r.Header.Get("Content-Type") != "video/mp4" || !strings.HasPrefix(etag, `"SHA-256=`) || r.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("headers %v", r.Header)
	}

	// Range: a seek into the third chunk.
	r = h.do(http.MethodGet, path, nil, alice, withHeader("Range", "bytes=270000-270099"))
	if r.Status != http.StatusPartialContent || !bytes.Equal(r.Body, video[270000:270100]) ||
		r.Header.Get("Content-Range") != "bytes 270000-270099/"+strconv.Itoa(len(video)) {
		t.Fatalf("Range: %d %v, %d bytes", r.Status, r.Header, len(r.Body))
	}
	r = h.do(http.MethodGet, path, nil, alice, withHeader("Range", "bytes=-10"))
	if r.Status != http.StatusPartialContent || !bytes.Equal(r.Body, video[len(video)-10:]) {
		t.Fatalf("suffix Range: %d", r.Status)
	}
	// Ranges at and across chunk boundaries, to the end, open-ended, the
	// last byte: the object's bytes (each fetched by the window's chunks).
	for _, c := range []struct {
		rng      string
		from, to int
	}{
		{"bytes=131071-131072", 131071, 131073},
		{"bytes=131072-262143", 131072, 262144},
		{"bytes=1000-", 1000, len(video)},
		{"bytes=262144-9999999", 262144, len(video)},
		{"bytes=" + strconv.Itoa(len(video)-1) + "-", len(video) - 1, len(video)},
	} {
		r = h.do(http.MethodGet, path, nil, alice, withHeader("Range", c.rng))
		if r.Status != http.StatusPartialContent || !bytes.Equal(r.Body, video[c.from:c.to]) {
			t.Fatalf("Range %s: %d, %d bytes", c.rng, r.Status, len(r.Body))
		}
	}
	r = h.do(http.MethodGet, path, nil, alice, withHeader("Range", "bytes="+strconv.Itoa(len(video))+"-"))
	if r.Status != http.StatusRequestedRangeNotSatisfiable || !strings.Contains(string(r.Body), `"code":"range_not_satisfiable"`) ||
		r.Header.Get("Content-Range") != "bytes */"+strconv.Itoa(len(video)) {
		t.Fatalf("Range past the end: %d %q (Content-Range %q)", r.Status, r.Body, r.Header.Get("Content-Range"))
	}
	// Several ranges: the whole object, never one stream restart per range.
	r = h.do(http.MethodGet, path, nil, alice, withHeader("Range", "bytes=270000-270001,0-0,270000-270001"))
	if r.Status != http.StatusOK || !bytes.Equal(r.Body, video) {
		t.Fatalf("multi-range: %d, %d bytes", r.Status, len(r.Body))
	}

	// If-None-Match: 304.
	r = h.do(http.MethodGet, path, nil, alice, withHeader("If-None-Match", etag))
	if r.Status != http.StatusNotModified || len(r.Body) != 0 {
		t.Fatalf("If-None-Match: %d", r.Status)
	}

	// An admin may; another user may not, as with GET /v1/jobs/{id}.
	if r := h.do(http.MethodGet, path, nil, bearer(adminToken(t, "root"))); r.Status != http.StatusOK {
		t.Fatalf("admin: %d", r.Status)
	}
	r = h.do(http.MethodGet, path, nil, bearer(token(t, "mallory")))
	if want := h.do(http.MethodGet, "/v1/jobs/"+id, nil, bearer(token(t, "mallory"))).Status; r.Status != want || r.errorCode(t) != CodeForbidden {
		t.Fatalf("other user: %d (GET answers %d)", r.Status, want)
	}
	if r := h.do(http.MethodGet, path, nil); r.Status != http.StatusUnauthorized || r.errorCode(t) != CodeUnauthorized {
		t.Fatalf("no token: %d", r.Status)
	}
	// Missing outputs and jobs, bad names: JSON 404s.
	for _, p := range []string{"/v1/jobs/" + id + "/outputs/1.mp4", "/v1/jobs/" + id + "/outputs/..%2fx", "/v1/jobs/nosuchjob/outputs/0.mp4"} {
		if r := h.do(http.MethodGet, p, nil, alice); r.Status != http.StatusNotFound || r.errorCode(t) != CodeNotFound {
			t.Fatalf("%s: %d %s", p, r.Status, r.Body)
		}
	}
	if r := h.do(http.MethodDelete, path, nil, alice); r.Status != http.StatusMethodNotAllowed {
		t.Fatalf("DELETE: %d", r.Status)
	}
}

func TestSignedOutputURL(t *testing.T) {
	h, id, video := outputHarness(t)
	path := "/v1/jobs/" + id + "/outputs/0.mp4"

	r := h.do(http.MethodGet, path+"/link", nil, bearer(token(t, "alice")))
	var l struct {
		URL       string    `json:"url"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(r.Body, &l); err != nil || r.Status != http.StatusOK || !strings.HasPrefix(l.URL, path+"?") {
		t.Fatalf("link %d: %s", r.Status, r.Body)
	}
	if r := h.do(http.MethodGet, path+"/link", nil, bearer(token(t, "mallory"))); r.Status != http.StatusForbidden {
		t.Fatalf("link for another user: %d", r.Status)
	}

	// No header needed.
	r = h.do(http.MethodGet, l.URL, nil, withHeader("Range", "bytes=5-9"))
	if r.Status != http.StatusPartialContent || !bytes.Equal(r.Body, video[5:10]) {
		t.Fatalf("signed GET: %d", r.Status)
	}

	u, _ := url.Parse(l.URL)
	q := u.Query()
	tamper := func(k, v string) string {
		c := url.Values{}
		for key := range q {
			c.Set(key, q.Get(key))
		}
		c.Set(k, v)
		return path + "?" + c.Encode()
	}
	signer := outputs.NewSigner(testSecret)
	expired := signer.URL(id, "0.mp4", time.Now().Add(-time.Second))
	otherName := signer.URL(id, "1.mp4", time.Now().Add(time.Minute))
	otherName = path + otherName[strings.Index(otherName, "?"):]
	for name, p := range map[string]string{
		"expired":        expired,
		"bad signature":  tamper("sig", "AAAA"),
		"later expiry":   tamper("exp", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)),
		"other output":   otherName,
		"no sig":         path + "?exp=" + q.Get("exp"),
		"exp not a time": tamper("exp", "tomorrow"),
	} {
		r := h.do(http.MethodGet, p, nil)
		if r.Status != http.StatusForbidden || r.errorCode(t) != CodeForbidden {
			t.Errorf("%s: %d %s", name, r.Status, r.Body)
		}
	}
}

// With an OutputsKey ($BEAMLINE_OUTPUTS_KEY), ingest verifies URLs signed
// with it — the processors' preview URLs — and no longer those signed with
// the key derived from the auth secret.
func TestOutputsKeySignsAndVerifies(t *testing.T) {
	key := []byte("shared-outputs-key-0123456789")
	h := newHarness(t, func(c *Config) { c.OutputsKey = key })
	id := h.submit(token(t, "alice"), `{"kind":"video"}`).snapshot(t).ID
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := outputs.CreateStore(ctx, h.js, outputs.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, outputs.Key(id, outputs.PreviewName), "image/png", bytes.NewReader([]byte("png"))); err != nil {
		t.Fatal(err)
	}
	shared, err := outputs.NewSignerKey(key)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Minute)
	if r := h.do(http.MethodGet, shared.URL(id, outputs.PreviewName, exp), nil); r.Status != http.StatusOK || string(r.Body) != "png" {
		t.Fatalf("URL signed with the shared key: %d %s", r.Status, r.Body)
	}
	derived := outputs.NewSigner(testSecret)
	if r := h.do(http.MethodGet, derived.URL(id, outputs.PreviewName, exp), nil); r.Status != http.StatusForbidden {
		t.Fatalf("URL signed with the derived key: %d, want 403", r.Status)
	}
}

func TestRangeOf(t *testing.T) {
	for _, c := range []struct {
		h        string
		from, to int64
		ok       bool
	}{
		{"bytes=0-0", 0, 1, true},
		{"bytes=5-", 5, 100, true},
		{"bytes=-5", 95, 100, true},
		{"bytes=-500", 0, 100, true},
		{"bytes=90-200", 90, 100, true},
		{"bytes=100-", 0, 0, false},
		{"bytes=3-2", 0, 0, false},
		{"bytes=-0", 0, 0, false},
		{"bytes=x-1", 0, 0, false},
		{"items=0-1", 0, 0, false},
		{"", 0, 0, false},
	} {
		from, to, ok := rangeOf(c.h, 100)
		if from != c.from || to != c.to || ok != c.ok {
			t.Errorf("%q: [%d, %d) %v, want [%d, %d) %v", c.h, from, to, ok, c.from, c.to, c.ok)
		}
	}
}
