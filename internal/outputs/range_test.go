package outputs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/natstest"
)

// noisyReader yields r, and before each read publishes a message on
// another chunk subject of the bucket, as a Put running at the same time
// does: the object's chunks are then not contiguous in the stream.
type noisyReader struct {
	t  *testing.T
	js jetstream.JetStream
	r  io.Reader
}

func (n noisyReader) Read(p []byte) (int, error) {
	if _, err := n.js.Publish(ctxT(n.t), "$O.outputs.C.noise", []byte("x")); err != nil {
		return 0, err
	}
	return n.r.Read(p)
}

// shortReader makes short reads of varying sizes: a Put through nats.go
// of it stores chunks of any size (as an object stored before Put filled
// its chunks).
type shortReader struct {
	r io.Reader
	i int
}

func (s *shortReader) Read(p []byte) (int, error) {
	s.i++
	return s.r.Read(p[:min(len(p), 1+(s.i*40503)%(200<<10))])
}

func rangeStore(t *testing.T) (*Store, jetstream.JetStream) {
	t.Helper()
	s := natstest.Start(t)
	js, err := jetstream.New(natstest.Connect(t, s))
	if err != nil {
		t.Fatal(err)
	}
	st, err := CreateStore(ctxT(t), js, StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return st, js
}

// Ranges served by http.ServeContent from a stored object are the bytes of
// the object: an object alone (contiguous chunks), one whose chunks
// interleave with another Put's, and one of chunks of any size (read by a
// scan), at chunk boundaries, the last byte, open-ended and suffix ranges;
// a range past the end is 416, and the ETag is the digest.
func TestRangesServed(t *testing.T) {
	st, js := rangeStore(t)
	size := 1<<20 + 5 // 9 chunks, the last of 5 bytes
	data := pattern(size)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := st.Put(ctx, "j/alone", "video/mp4", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, "j/noisy", "video/mp4", noisyReader{t, js, bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	h := jetstream.ObjectMeta{Name: "j/short", Headers: map[string][]string{"Content-Type": {"video/mp4"}}}
	if _, err := st.obs.Put(ctx, h, &shortReader{r: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	// Put fills the chunks of a reader of short reads (a network body).
	if _, err := st.Put(ctx, "j/shortput", "video/mp4", &shortReader{r: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, "j/empty", "text/plain", bytes.NewReader(nil)); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, err := st.Stat(r.Context(), r.URL.Path[1:])
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		o := st.Reader(r.Context(), info)
		defer o.Close()
		w.Header().Set("ETag", `"`+info.Digest+`"`)
		http.ServeContent(w, r, "", info.ModTime, o)
	}))
	defer srv.Close()
	get := func(key, rng string) (int, []byte, http.Header) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/"+key, nil)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: %v", key, rng, err)
		}
		return resp.StatusCode, b, resp.Header
	}
	const cs = 128 << 10
	cases := []struct {
		rng      string
		from, to int // to exclusive
	}{
		{"", 0, size},
		{"bytes=0-0", 0, 1},
		{fmt.Sprintf("bytes=%d-%d", cs-1, cs), cs - 1, cs + 1},
		{fmt.Sprintf("bytes=%d-%d", cs, 2*cs-1), cs, 2 * cs},
		{fmt.Sprintf("bytes=%d-%d", size-1, size-1), size - 1, size},
		{fmt.Sprintf("bytes=%d-", 5*cs+17), 5*cs + 17, size},
		{"bytes=-5", size - 5, size},
		{fmt.Sprintf("bytes=-%d", cs+3), size - cs - 3, size},
		{fmt.Sprintf("bytes=%d-%d", 7*cs, 7*cs+(5<<20)), 7 * cs, size},
		{fmt.Sprintf("bytes=%d-%d", 6*cs+1, 8*cs), 6*cs + 1, 8*cs + 1},
	}
	for _, key := range []string{"j/alone", "j/noisy", "j/short", "j/shortput"} {
		info, err := st.Stat(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if wantFull := key != "j/short"; info.full != wantFull {
			t.Fatalf("%s: full chunks %v, want %v", key, info.full, wantFull)
		}
		for _, c := range cases {
			code, body, hdr := get(key, c.rng)
			want := http.StatusPartialContent
			if c.rng == "" {
				want = http.StatusOK
			}
			if code != want || !bytes.Equal(body, data[c.from:c.to]) {
				t.Fatalf("%s %q: %d, %d bytes (want %d, %d bytes [%d,%d))", key, c.rng, code, len(body), want, c.to-c.from, c.from, c.to)
			}
			if hdr.Get("ETag") != `"`+info.Digest+`"` || info.Digest == "" {
				t.Fatalf("%s: etag %q, digest %q", key, hdr.Get("ETag"), info.Digest)
			}
		}
		if code, _, _ := get(key, fmt.Sprintf("bytes=%d-", size)); code != http.StatusRequestedRangeNotSatisfiable {
			t.Fatalf("%s: range past the end: %d", key, code)
		}
	}
	if code, body, _ := get("j/empty", ""); code != http.StatusOK || len(body) != 0 {
		t.Fatalf("empty: %d %q", code, body)
	}

	// Reads at random offsets of one Object, forwards and backwards; with
	// a replicated stream too (where an object not contiguous is scanned).
	rnd := rand.New(rand.NewPCG(1, 2))
	for _, key := range []string{"j/alone", "j/noisy", "j/short", "j/noisy+replicated"} {
		key, replicated := strings.CutSuffix(key, "+replicated")
		st.replicated = replicated
		o, err := st.Open(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		for range 30 {
			off := rnd.IntN(size)
			n := min(1+rnd.IntN(3*cs), size-off)
			if _, err := o.Seek(int64(off), io.SeekStart); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, n)
			if _, err := io.ReadFull(o, buf); err != nil || !bytes.Equal(buf, data[off:off+n]) {
				t.Fatalf("%s: read %d at %d: %v", key, n, off, err)
			}
		}
		o.Close()
	}
}

// A range read of an object alone reads only its chunks from the range on
// (and, the first time, its first chunk: the proof that its chunks are
// contiguous); the noisy object's chunks are not contiguous, and a read
// finds them anyway, by the chunks' Nats-Num-Pending.
func TestRangeReadsOnlyItsChunks(t *testing.T) {
	st, js := rangeStore(t)
	ctx := ctxT(t)
	data := pattern(2<<20 + 9)
	if _, err := st.Put(ctx, "j/noisy", "video/mp4", noisyReader{t, js, bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, "j/alone", "video/mp4", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	var seen []uint64
	st.dr.Hide = func(m *jetstream.RawStreamMsg) bool {
		seen = append(seen, m.Sequence)
		return false
	}
	off := int64(len(data) - 200<<10)
	tail := func(key string) *Info {
		t.Helper()
		info, err := st.Stat(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		seen = nil
		o := st.Reader(ctx, info)
		defer o.Close()
		if _, err := o.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(o)
		if err != nil || !bytes.Equal(got, data[off:]) {
			t.Fatalf("%s: tail: %d bytes, %v", key, len(got), err)
		}
		return &info
	}
	info := tail("j/alone")
	first := info.metaSeq - uint64(info.chunks)
	k := uint64(off / info.chunkSize)
	var want []uint64
	for s := first + k; s < info.metaSeq; s++ {
		want = append(want, s)
	}
	if fmt.Sprint(seen) != fmt.Sprint(append([]uint64{first}, want...)) {
		t.Fatalf("first read: chunks at %v, want the first and %v", seen, want)
	}
	tail("j/alone")
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("second read: chunks at %v, want %v", seen, want)
	}
	tail("j/noisy")
	if len(seen) > 8 {
		t.Fatalf("noisy: read %d messages for the last 3 chunks: %v", len(seen), seen)
	}
}

// An object of one chunk whose meta does not follow it at once (another
// Put's message between them, as when many processors store outputs at
// the same time) is read whole: a guess at the sequence just before the
// meta finds no chunk at or after it, which means the chunk is earlier, not
// missing. (Found by the providers chaos run: 200 with an empty body.)
func TestSmallObjectNotFollowedByItsMeta(t *testing.T) {
	st, js := rangeStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data := pattern(1320)
	if _, err := st.Put(ctx, "j/small", "image/png", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	info, err := st.Stat(ctx, "j/small")
	if err != nil {
		t.Fatal(err)
	}
	// The layout of a concurrent Put: one message between the chunk and
	// the meta. Stored after them here, and the meta taken as one later.
	if _, err := js.Publish(ctx, "$O.outputs.C.noise", []byte("x")); err != nil {
		t.Fatal(err)
	}
	info.metaSeq++
	o := st.Reader(ctx, info)
	defer o.Close()
	got, err := io.ReadAll(o)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("%d bytes, %v; want %d bytes", len(got), err, len(data))
	}
}
