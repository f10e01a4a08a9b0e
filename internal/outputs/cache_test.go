package outputs

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// readRange reads [from, to) of info through a fresh reader of st.
func readRange(t *testing.T, st *Store, info Info, from, to int64) ([]byte, error) {
	t.Helper()
	o := st.Reader(ctxT(t), info)
	defer o.Close()
	o.Expect(from, to)
	if _, err := o.Seek(from, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, to-from)
	_, err := io.ReadFull(o, b)
	return b, err
}

// With a chunk cache, the chunks a range read once are served again from
// memory: after the object's chunks are purged from the stream, a range
// within what was read still reads the object's bytes (and one beyond it,
// which needs the stream, fails). Without a cache the same read fails.
func TestChunkCacheServesReadChunks(t *testing.T) {
	for _, cached := range []bool{true, false} {
		st, js := rangeStore(t)
		if cached {
			st.CacheChunks(8 << 20)
		}
		size := 1<<20 + 5
		data := pattern(size)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := st.Put(ctx, "j/video", "video/mp4", bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		info, err := st.Stat(ctx, "j/video")
		if err != nil {
			t.Fatal(err)
		}
		from, to := int64(100<<10), int64(700<<10) // chunks 0..5
		if b, err := readRange(t, st, info, from, to); err != nil || !bytes.Equal(b, data[from:to]) {
			t.Fatalf("cached=%v: first read: %v", cached, err)
		}
		s, err := js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Purge(ctx, jetstream.WithPurgeSubject("$O."+Bucket+".C."+info.nuid)); err != nil {
			t.Fatal(err)
		}
		b, err := readRange(t, st, info, from+7, to-3)
		if cached && (err != nil || !bytes.Equal(b, data[from+7:to-3])) {
			t.Fatalf("a range of cached chunks after the purge: %v", err)
		}
		if !cached && err == nil {
			t.Fatal("without a cache, a read after the purge succeeded")
		}
		if _, err := readRange(t, st, info, 900<<10, int64(size)); err == nil {
			t.Fatalf("cached=%v: chunks never read (purged) were served", cached)
		}
	}
}

// The cache holds at most its bound, evicting the least recently used.
func TestChunkCacheBound(t *testing.T) {
	c := newChunkCache(3 * 10)
	for k := range 3 {
		c.put("n", k, make([]byte, 10))
	}
	if _, ok := c.get("n", 0); !ok { // 0 is now the most recent
		t.Fatal("chunk 0 not cached")
	}
	c.put("n", 3, make([]byte, 10)) // evicts 1
	if _, ok := c.get("n", 1); ok {
		t.Fatal("the least recently used chunk was kept beyond the bound")
	}
	for _, k := range []int{0, 2, 3} {
		if _, ok := c.get("n", k); !ok {
			t.Fatalf("chunk %d evicted", k)
		}
	}
	if c.used != 30 {
		t.Fatalf("used %d bytes, want 30", c.used)
	}
	c.put("big", 0, make([]byte, 31)) // larger than the bound: not cached
	if _, ok := c.get("big", 0); ok || c.used != 30 {
		t.Fatalf("a chunk larger than the bound was cached (used %d)", c.used)
	}
}

// Two objects read at the same chunk indexes each get their own bytes
// back from the cache: entries are keyed by the object, not only by the
// chunk's index.
func TestChunkCacheKeepsObjectsApart(t *testing.T) {
	st, _ := rangeStore(t)
	st.CacheChunks(8 << 20)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b := pattern(300<<10), bytes.Repeat([]byte("B"), 300<<10)
	for name, data := range map[string][]byte{"j/a": a, "j/b": b} {
		if _, err := st.Put(ctx, name, "video/mp4", bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	ia, err := st.Stat(ctx, "j/a")
	if err != nil {
		t.Fatal(err)
	}
	ib, err := st.Stat(ctx, "j/b")
	if err != nil {
		t.Fatal(err)
	}
	from, to := int64(10), int64(200<<10)
	for round := range 2 { // the second round reads from the cache
		if got, err := readRange(t, st, ia, from, to); err != nil || !bytes.Equal(got, a[from:to]) {
			t.Fatalf("round %d: object a: %v", round, err)
		}
		if got, err := readRange(t, st, ib, from, to); err != nil || !bytes.Equal(got, b[from:to]) {
			t.Fatalf("round %d: object b read back other bytes (or failed: %v)", round, err)
		}
	}
}
