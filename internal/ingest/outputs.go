package ingest

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/internal/outputs"
)

// Route labels of the outputs routes.
const (
	routeOutput = "output"
	routeLink   = "output_link"
)

// outputStore binds to the outputs bucket on first use: the processor
// creates it, and ingest may start first.
type outputStore struct {
	mu         sync.Mutex
	st         *outputs.Store
	cacheBytes int64 // Config.OutputsCacheBytes
}

func (o *outputStore) get(ctx context.Context, js jetstream.JetStream) (*outputs.Store, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.st != nil {
		return o.st, nil
	}
	st, err := outputs.OpenStore(ctx, js)
	if err != nil {
		return nil, err
	}
	st.CacheChunks(o.cacheBytes)
	o.st = st
	return st, nil
}

// link is the answer of GET /v1/jobs/{id}/outputs/{name}/link.
type link struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
}

// outputLink handles GET /v1/jobs/{id}/outputs/{name}/link: for the job's
// owner or an admin, a signed URL of the output that needs no
// Authorization header (for <img src> and <video src>), valid for
// outputs.DefaultLinkTTL.
func (s *Service) outputLink(w http.ResponseWriter, r *http.Request) {
	_, snap, _, aerr := s.readable(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	name := r.PathValue("name")
	if !outputs.ValidName(name) {
		writeError(w, newError(http.StatusNotFound, CodeNotFound, "no output "+name))
		return
	}
	exp := time.Now().Add(outputs.DefaultLinkTTL).Truncate(time.Second)
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusOK, link{URL: s.signer.URL(snap.ID, name, exp), ExpiresAt: exp.UTC()})
}

// output handles GET /v1/jobs/{id}/outputs/{name}: the stored output, for
// the job's owner or an admin (bearer token, checked as GET /v1/jobs/{id}
// does), or for anyone holding a signed URL (?exp=&sig=, from
// outputLink). It is served by http.ServeContent: Content-Type, ETag (the
// object's SHA-256 digest), If-None-Match → 304, Range → 206.
func (s *Service) output(w http.ResponseWriter, r *http.Request) {
	id, name := r.PathValue("id"), r.PathValue("name")
	q := r.URL.Query()
	if q.Has("sig") || q.Has("exp") {
		if err := s.signer.Verify(id, name, q.Get("exp"), q.Get("sig"), time.Now()); err != nil {
			writeError(w, newError(http.StatusForbidden, CodeForbidden, err.Error()))
			return
		}
	} else if _, _, _, aerr := s.readable(r); aerr != nil {
		writeError(w, aerr)
		return
	}
	if !outputs.ValidName(name) {
		writeError(w, newError(http.StatusNotFound, CodeNotFound, "no output "+name))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	st, err := s.outputs.get(ctx, s.js)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		writeError(w, newError(http.StatusNotFound, CodeNotFound, "no output "+name+" of job "+id))
		return
	}
	if err != nil {
		s.log.Warn("outputs bucket not available", "err", err)
		writeError(w, unavailable())
		return
	}
	// The stat is bounded; the body's stream is not (a large video on a
	// slow client), only by the request and the server's write timeout.
	info, err := st.Stat(ctx, outputs.Key(id, name))
	switch {
	case errors.Is(err, outputs.ErrNotFound):
		writeError(w, newError(http.StatusNotFound, CodeNotFound, "no output "+name+" of job "+id))
		return
	case err != nil:
		s.log.Warn("output not readable", "job", id, "output", name, "err", err)
		writeError(w, unavailable())
		return
	}
	obj := st.Reader(r.Context(), info)
	defer obj.Close()
	h := w.Header()
	h.Set("Content-Type", obj.Info.ContentType)
	h.Set("ETag", `"`+obj.Info.Digest+`"`)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	if q.Has("sig") {
		h.Set("Cache-Control", "private, max-age=300")
	} else {
		h.Set("Cache-Control", "private, no-cache")
	}
	// One range at most. ServeContent copies a multi-range answer on a
	// goroutine of its own that can outlive this handler (and its Close of
	// obj), and a request of many tiny ranges would cost a round trip to
	// JetStream per range. A multi-range request gets the whole object
	// (200), which RFC 9110 allows; a player seeks with single ranges.
	if strings.Contains(r.Header.Get("Range"), ",") {
		r.Header.Del("Range")
	}
	// The object fetches a range's chunks in one round trip when it knows
	// the range (ServeContent parses it again and answers 416 and such).
	if from, to, ok := rangeOf(r.Header.Get("Range"), obj.Info.Size); ok {
		obj.Expect(from, to)
	}
	http.ServeContent(&contentErrors{ResponseWriter: w}, r, "", obj.Info.ModTime, obj)
}

// contentErrors makes the errors http.ServeContent answers with (416 for a
// range outside the output, 412 for a failed If-Match, 500 for a read that
// failed before the first byte) JSON with a code, like every other error
// of the API; its plain-text body is dropped. Content-Range (416's
// "bytes */<size>") stays.
type contentErrors struct {
	http.ResponseWriter
	failed bool
}

func (c *contentErrors) WriteHeader(status int) {
	if status < 400 || c.failed {
		c.ResponseWriter.WriteHeader(status)
		return
	}
	c.failed = true
	h := c.Header()
	h.Del("Content-Type")
	h.Del("Content-Length")
	switch status {
	case http.StatusRequestedRangeNotSatisfiable:
		writeError(c.ResponseWriter, newError(status, CodeRangeNotSatisfiable,
			"the range is outside the output (Content-Range says its size)"))
	case http.StatusPreconditionFailed:
		writeError(c.ResponseWriter, newError(status, CodePreconditionFailed, "If-Match does not name this output's ETag"))
	default:
		writeError(c.ResponseWriter, newError(status, CodeInternal, "the output could not be read"))
	}
}

func (c *contentErrors) Write(b []byte) (int, error) {
	if c.failed {
		return len(b), nil // ServeContent's plain-text message; the JSON is written
	}
	return c.ResponseWriter.Write(b)
}

// rangeOf is the bytes [from, to) of a single HTTP byte range of an object
// of size bytes ("bytes=a-b", "bytes=a-", "bytes=-n"); ok is false for
// anything else. It is only a read-ahead hint (Object.Expect):
// http.ServeContent answers the request.
func rangeOf(h string, size int64) (from, to int64, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found {
		return 0, 0, false
	}
	a, b, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false
	}
	if a == "" { // suffix: the last b bytes
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, false
		}
		return max(size-n, 0), size, true
	}
	from, err := strconv.ParseInt(a, 10, 64)
	if err != nil || from < 0 || from >= size {
		return 0, 0, false
	}
	if b == "" {
		return from, size, true
	}
	last, err := strconv.ParseInt(b, 10, 64)
	if err != nil || last < from {
		return 0, 0, false
	}
	return from, min(last, size-1) + 1, true
}
