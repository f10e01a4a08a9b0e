// Package outputs keeps the files a prediction produces: Fetch copies an
// output (a data: URL, or an http(s) URL behind an SSRF guard, a timeout, a
// size cap and a content-type allowlist) into the JetStream Object Store
// bucket "outputs" (Store), Keep rewrites a job's result to name its stored
// outputs, and Object serves one back with Range support. See
// docs/design.md#outputs.
package outputs

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/natsx"
)

// Bucket is the Object Store bucket of outputs; its backing stream is
// OBJ_outputs, on subjects $O.outputs.C.> (chunks) and $O.outputs.M.> (meta).
const Bucket = "outputs"

// Defaults of StoreConfig.
const (
	DefaultTTL      = 7 * 24 * time.Hour
	DefaultMaxBytes = 100 << 20
)

// StoreConfig configures the bucket. Zero values are the defaults.
type StoreConfig struct {
	// Replicas of the bucket's stream. Default 1.
	Replicas int
	// TTL: how long an output is kept. Default DefaultTTL (7 days).
	TTL time.Duration
	// MaxBytes caps one object. Default DefaultMaxBytes (100 MiB).
	MaxBytes int64
}

func (c StoreConfig) withDefaults() (StoreConfig, error) {
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.Replicas < 0 || c.TTL < 0 || c.MaxBytes < 0 {
		return c, fmt.Errorf("%w: replicas, ttl and max bytes must not be negative", ErrInvalidConfig)
	}
	return c, nil
}

// Store is the outputs bucket.
type Store struct {
	obs      jetstream.ObjectStore
	dr       *natsx.DirectReader // of the bucket's stream: Stat and Object
	maxBytes int64
	runs     runs
	// replicated: the bucket's stream has replicas, any of which may
	// answer a direct get while still catching up (see Object.fetchFull).
	replicated bool
	cache      *chunkCache // nil: none (CacheChunks)
}

// CacheChunks keeps up to maxBytes of the chunks this store's readers
// read in memory (chunkCache); ≤ 0: none. Call it before reading.
func (s *Store) CacheChunks(maxBytes int64) {
	if maxBytes > 0 {
		s.cache = newChunkCache(maxBytes)
	}
}

// runs remembers the objects whose chunks were found contiguous in the
// stream: NUID → the first chunk's sequence. A NUID's chunks never change
// (a Put under the same name makes a new NUID), so an entry stays true
// while the chunks exist.
type runs struct {
	mu sync.Mutex
	m  map[string]uint64
}

// maxRuns bounds runs; a full map starts again empty.
const maxRuns = 4096

func (r *runs) get(nuid string) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[nuid]
}

func (r *runs) set(nuid string, first uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil || len(r.m) >= maxRuns {
		r.m = make(map[string]uint64)
	}
	if first == 0 {
		delete(r.m, nuid)
		return
	}
	r.m[nuid] = first
}

// stream is the bucket's stream.
const stream = "OBJ_" + Bucket

// fullChunksHeader, "1" in an object's meta headers, says Put filled
// every chunk but the last (so an offset names its chunk).
const fullChunksHeader = "Beamline-Full-Chunks"

// CreateStore creates the bucket, or updates its TTL and replicas (the
// processor, which writes it, does this at start).
func CreateStore(ctx context.Context, js jetstream.JetStream, cfg StoreConfig) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	obs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      Bucket,
		Description: "outputs of jobs, key <job>/<name>; written by the processor, served by ingest",
		TTL:         cfg.TTL,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("outputs: create bucket %s: %w", Bucket, err)
	}
	return &Store{obs: obs, dr: natsx.NewDirectReader(js, stream), maxBytes: cfg.MaxBytes, replicated: cfg.Replicas > 1}, nil
}

// OpenStore binds to the bucket for reading (ingest). It fails with
// jetstream.ErrBucketNotFound until a processor created it.
func OpenStore(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	obs, err := js.ObjectStore(ctx, Bucket)
	if err != nil {
		return nil, fmt.Errorf("outputs: open bucket %s: %w", Bucket, err)
	}
	st, err := obs.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("outputs: open bucket %s: %w", Bucket, err)
	}
	return &Store{obs: obs, dr: natsx.NewDirectReader(js, stream), replicated: st.Replicas() > 1}, nil
}

// Key is the object name of output name of job: <job>/<name>.
func Key(job, name string) string { return job + "/" + name }

// Info describes a stored output.
type Info struct {
	Key         string
	ContentType string
	Size        int64
	// Digest is the object's SHA-256 as the Object Store writes it
	// ("SHA-256=<base64url>"); it is the ETag of the served output.
	Digest  string
	ModTime time.Time

	// Where the chunks are (set by Stat): their subject's NUID, how
	// many, their size, whether all but the last are full, and the meta
	// message's stream sequence.
	nuid      string
	chunks    int
	chunkSize int64
	full      bool
	metaSeq   uint64
}

func infoOf(oi *jetstream.ObjectInfo) Info {
	return Info{
		Key:         oi.Name,
		ContentType: oi.Headers.Get("Content-Type"),
		Size:        int64(oi.Size),
		Digest:      oi.Digest,
		ModTime:     oi.ModTime,
	}
}

// Put stores r under key, failing with ErrTooLarge (and storing nothing)
// once r passes the per-object cap. A key written again is replaced (a
// rerun of the same job stores the same names).
func (s *Store) Put(ctx context.Context, key, contentType string, r io.Reader) (Info, error) {
	lr := &capReader{r: r, left: s.maxBytes}
	h := nats.Header{}
	h.Set("Content-Type", contentType)
	h.Set(fullChunksHeader, "1")
	oi, err := s.obs.Put(ctx, jetstream.ObjectMeta{Name: key, Headers: h}, fullReader{lr})
	if err != nil {
		if lr.err != nil { // our reader's own error, returned as is by Put
			return Info{}, lr.err
		}
		return Info{}, flowRetryable(wrapf(ErrStore, "put %s: %v", key, err))
	}
	return infoOf(oi), nil
}

// capReader fails with ErrTooLarge past left bytes; err keeps the reader's
// own failure apart from the store's.
type capReader struct {
	r    io.Reader
	left int64
	err  error
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left >= 0 && int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	if c.left >= 0 {
		c.left -= int64(n)
		if c.left < 0 {
			c.err = flowTerminal(wrapf(ErrTooLarge, "more than the cap"))
			return 0, c.err
		}
	}
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// fullReader fills p unless the reader ends or fails: nats.go's Put makes
// a chunk of every Read, and a network body's short reads would make short
// chunks anywhere in the object.
type fullReader struct{ r io.Reader }

func (f fullReader) Read(p []byte) (int, error) {
	n, err := io.ReadFull(f.r, p)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}

// Stat returns the info of a stored output, ErrNotFound if there is none.
// It reads the object's meta message with one direct get (as nats.go's
// GetInfo does), keeping what a ranged read needs: the chunks' subject,
// their size, and the meta's stream sequence (the chunks precede it).
func (s *Store) Stat(ctx context.Context, key string) (Info, error) {
	var meta *jetstream.RawStreamMsg
	_, _, err := s.dr.Get(ctx, natsx.DirectGet{LastFor: "$O." + Bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(key))},
		func(m *jetstream.RawStreamMsg) bool { meta = m; return false })
	if err != nil {
		return Info{}, wrapf(ErrStore, "info %s: %v", key, err)
	}
	var oi jetstream.ObjectInfo
	if meta != nil {
		if err := json.Unmarshal(meta.Data, &oi); err != nil {
			return Info{}, wrapf(ErrStore, "info %s: %v", key, err)
		}
	}
	if meta == nil || oi.Deleted {
		return Info{}, wrapf(ErrNotFound, "%s", key)
	}
	oi.ModTime = meta.Time
	info := infoOf(&oi)
	info.nuid, info.chunks, info.metaSeq = oi.NUID, int(oi.Chunks), meta.Sequence
	if oi.Opts != nil {
		info.chunkSize = int64(oi.Opts.ChunkSize)
	}
	// Put fills every chunk but the last: chunk k then starts at
	// k*chunkSize. An object written otherwise (before Put did, or by
	// another writer) is read by a scan from its first chunk.
	info.full = oi.Headers.Get(fullChunksHeader) == "1" && info.chunkSize > 0 &&
		int64(info.chunks) == (info.Size+info.chunkSize-1)/info.chunkSize
	return info, nil
}

// Open returns a stored output as an io.ReadSeeker for http.ServeContent,
// which reads only the chunks a range needs (Object). Close it when done.
func (s *Store) Open(ctx context.Context, key string) (*Object, error) {
	info, err := s.Stat(ctx, key)
	if err != nil {
		return nil, err
	}
	return s.Reader(ctx, info), nil
}

// Reader opens the output Stat described, reading with ctx.
func (s *Store) Reader(ctx context.Context, info Info) *Object {
	return &Object{ctx: ctx, dr: s.dr, runs: &s.runs, cache: s.cache, replicated: s.replicated, Info: info}
}

// Object is a stored output opened for reading, an io.ReadSeeker for
// http.ServeContent. Seek only moves the offset (Seek to the end answers
// the size without reading anything, which is how ServeContent learns it).
// Read fetches the chunks from the offset on with batched direct gets of
// the bucket's stream (natsx.DirectReader): no consumer, one round trip per
// batch, and only the chunks the read needs (see Object.fetch). The batch
// grows while the reads stay sequential.
type Object struct {
	Info       Info
	ctx        context.Context
	dr         *natsx.DirectReader
	runs       *runs
	cache      *chunkCache
	replicated bool
	pos        int64 // where the caller reads next
	// batch is the open direct get of a contiguous object's chunks
	// (fetchRun): chunk batchNext, at batchSeq, comes next.
	batch     *natsx.Batch
	batchNext int
	batchSeq  uint64
	// buf is the fetched bytes [bufOff, bufOff+len) as the chunks' own
	// data, in order.
	buf    [][]byte
	bufOff int64
	bufEnd int64
	ahead  int64 // bytes the next sequential fetch asks for
	want   int64 // bytes this fetch asks for
	// The caller reads [expFrom, expTo) next (Expect).
	expFrom, expTo int64
	// seqs[k] is the stream sequence of chunk k, 0 while unknown; offs[k]
	// its offset (a scanned object: chunks of any size).
	seqs    []uint64
	offs    []int64
	scanEnd int64
}

// Read-ahead of one fetch: the first after a seek asks for readAheadMin
// bytes (a player's probe of a few bytes costs little), each sequential one
// after it twice as many, up to natsx.DirectMaxBytes.
const readAheadMin = 1 << 20

// Expect tells o that the caller reads [from, to) next (the bytes of an
// HTTP Range): a fetch within it asks for what is left of it (up to
// natsx.DirectMaxBytes), neither less nor more.
func (o *Object) Expect(from, to int64) {
	o.expFrom, o.expTo = from, min(to, o.Info.Size)
}

// Seek implements io.Seeker.
func (o *Object) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += o.pos
	case io.SeekEnd:
		offset += o.Info.Size
	default:
		return 0, errors.New("outputs: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("outputs: negative offset")
	}
	o.pos = offset
	return offset, nil
}

// Read implements io.Reader.
func (o *Object) Read(p []byte) (int, error) {
	if o.pos >= o.Info.Size {
		return 0, io.EOF
	}
	if o.pos < o.bufOff || o.pos >= o.bufEnd {
		got := false
		if o.batch != nil && o.pos == o.bufEnd {
			// The open batch sends this chunk next: take it from there.
			var err error
			if got, err = o.pull(); err != nil {
				return 0, err
			}
		}
		if !got && !o.cached() {
			if err := o.fetch(); err != nil {
				return 0, err
			}
		}
	}
	n := 0
	off := o.bufOff
	for _, c := range o.buf {
		end := off + int64(len(c))
		if o.pos < end && n < len(p) {
			m := copy(p[n:], c[o.pos-off:])
			n += m
			o.pos += int64(m)
		}
		off = end
	}
	return n, nil
}

// cached puts the cached chunk holding o.pos into buf, if there is one.
// A batch still open (its chunks are not the ones read now) is closed.
func (o *Object) cached() bool {
	if !o.Info.full {
		return false
	}
	k := int(o.pos / o.Info.chunkSize)
	data, ok := o.cache.get(o.Info.nuid, k)
	if !ok {
		return false
	}
	o.closeBatch()
	o.buf = append(o.buf[:0], data)
	o.bufOff = int64(k) * o.Info.chunkSize
	o.bufEnd = o.bufOff + int64(len(data))
	return true
}

// Close drops the fetched chunks.
func (o *Object) Close() error {
	o.closeBatch()
	o.buf, o.bufOff, o.bufEnd = nil, 0, 0
	return nil
}

// fetch reads the chunks from the one holding o.pos on into buf.
func (o *Object) fetch() error {
	o.closeBatch()
	if o.pos == o.bufEnd && o.bufEnd > 0 { // sequential: read further ahead
		o.ahead = min(2*o.ahead, natsx.DirectMaxBytes)
	} else {
		o.ahead = readAheadMin
	}
	o.want = o.ahead
	if o.pos >= o.expFrom && o.pos < o.expTo {
		o.want = min(o.expTo-o.pos, natsx.DirectMaxBytes)
	}
	if o.seqs == nil {
		o.seqs = make([]uint64, o.Info.chunks)
	}
	o.buf, o.bufOff, o.bufEnd = nil, 0, 0
	if o.Info.full {
		return o.fetchFull()
	}
	return o.fetchScan()
}

// chunkSubject is the subject of the object's chunks.
func (o *Object) chunkSubject() string { return "$O." + Bucket + ".C." + o.Info.nuid }

// index is the index of a chunk of the object from the Nats-Num-Pending of
// a batched direct get: how many of the object's chunks follow it.
func (o *Object) index(m *jetstream.RawStreamMsg) (int, error) {
	np, err := strconv.ParseUint(m.Header.Get(numPendingHeader), 10, 64)
	if err != nil || np >= uint64(o.Info.chunks) {
		return 0, wrapf(ErrStore, "%s: chunk at seq %d with %q pending of %d chunks", o.Info.Key, m.Sequence, m.Header.Get(numPendingHeader), o.Info.chunks)
	}
	return o.Info.chunks - 1 - int(np), nil
}

// fetchFull reads an object whose chunks are all full but the last: chunk
// k holds [k*chunkSize, (k+1)*chunkSize). What it needs is chunk k's stream
// sequence. The chunks of one Put are in order, and usually contiguous
// (the meta follows the last): chunk k is then at metaSeq-chunks+k. A batched
// direct get from a guessed sequence G answers the first chunk at or after
// G, and its Nats-Num-Pending says which chunk that is. Every chunk j seen
// bounds chunk k: at or after seqs[j]+(k-j) for j < k, at or before
// seqs[j]-(j-k) for j > k. A guess below chunk k answers a chunk j ≤ k
// (its batch goes on to k and beyond when k is near); a guess past it
// answers a j > k, and the next guess is the lower bound. Every wrong
// guess moves the lower bound up by at least one chunk, so this ends; in
// practice one round trip reads the range when the object's chunks are
// contiguous, two or three when another Put's chunks interleave.
func (o *Object) fetchFull() error {
	cs := o.Info.chunkSize
	k := int(o.pos / cs)
	n := min(int((o.pos+o.want-1)/cs)-k+1, o.Info.chunks-k, natsx.DirectBatch)
	subj := o.chunkSubject()
	if first, err := o.run(); err != nil {
		return err
	} else if first != 0 {
		if ok, err := o.fetchRun(first, k, n); ok || err != nil {
			return err
		}
		o.runs.set(o.Info.nuid, 0) // not a run after all: find the chunks
	}
	if o.replicated {
		// A replica still catching up counts fewer chunks after the
		// one it answers, so its Nats-Num-Pending would name a later
		// chunk than the one sent. The scan counts from the first
		// chunk, and fails rather than mislabel.
		return o.fetchScan()
	}
	overshot := false
	for range o.Info.chunks + 2 {
		lo, hi := o.bounds(k)
		guess, batch := lo, n
		switch {
		case o.seqs[k] != 0:
			guess = o.seqs[k]
		case !overshot && lo == 1 && hi > 0:
			guess = hi // nothing seen below k: try contiguous
		case lo == 1:
			batch = 1 // a blind probe for the first chunk
		}
		var ferr error
		got := 0
		_, _, err := o.dr.Get(o.ctx, natsx.DirectGet{Seq: guess, NextFor: subj, Batch: batch, MaxBytes: batch * int(cs)}, func(m *jetstream.RawStreamMsg) bool {
			got++
			j, err := o.index(m)
			if err != nil {
				ferr = err
				return false
			}
			o.seqs[j] = m.Sequence
			if j < k {
				return true
			}
			if j != k+len(o.buf) { // the first seen is past k: a guess too far
				overshot = true
				return false
			}
			if want := min(cs, o.Info.Size-int64(j)*cs); int64(len(m.Data)) != want {
				ferr = wrapf(ErrStore, "%s: chunk %d is %d bytes, want %d", o.Info.Key, j, len(m.Data), want)
				return false
			}
			o.buf = append(o.buf, m.Data)
			o.cache.put(o.Info.nuid, j, m.Data)
			return true
		})
		if ferr != nil {
			return ferr
		}
		if err != nil {
			return wrapf(ErrStore, "read %s: %v", o.Info.Key, err)
		}
		if len(o.buf) > 0 {
			o.bufOff = int64(k) * cs
			o.bufEnd = min(o.bufOff+int64(len(o.buf))*cs, o.Info.Size)
			return nil
		}
		if got == 0 {
			if guess > lo {
				// No chunk of the object at or after the guess: chunk k is
				// earlier (the object's last chunks were followed by
				// another Put's messages before its meta). Probe from the
				// lower bound.
				overshot = true
				continue
			}
			break
		}
	}
	return wrapf(ErrStore, "%s: chunk %d not found", o.Info.Key, k)
}

// run returns the sequence of the object's first chunk when its chunks are
// contiguous, else 0. A Put's chunks, alone in the stream while it ran,
// are the sequences just before its meta: then its first chunk is at
// metaSeq-chunks, which one direct get by subject from there shows (the
// chunk there is the object's first). Found once per object and process.
func (o *Object) run() (uint64, error) {
	if first := o.runs.get(o.Info.nuid); first != 0 {
		return first, nil
	}
	if o.Info.metaSeq <= uint64(o.Info.chunks) {
		return 0, nil
	}
	first := o.Info.metaSeq - uint64(o.Info.chunks)
	var ierr error
	contiguous := false
	_, _, err := o.dr.Get(o.ctx, natsx.DirectGet{Seq: first, NextFor: o.chunkSubject(), Batch: 1, MaxBytes: 1}, func(m *jetstream.RawStreamMsg) bool {
		var j int
		j, ierr = o.index(m)
		if ierr == nil {
			o.seqs[j] = m.Sequence
			contiguous = j == 0 && m.Sequence == first
		}
		return false
	})
	if err = cmp.Or(ierr, err); err != nil {
		return 0, wrapf(ErrStore, "read %s: %v", o.Info.Key, err)
	}
	if !contiguous {
		return 0, nil
	}
	o.runs.set(o.Info.nuid, first)
	return first, nil
}

// fetchRun starts reading n chunks from chunk k of an object whose chunks
// are contiguous from sequence first, with a direct get by sequence alone
// (no subject: the server then counts the pending messages from its stream
// state, where a subject filter makes it load the blocks before the
// sequence). It waits for the first chunk only; Read takes the next ones
// as they arrive (pull), writing one while the server sends the rest. ok is
// false if the first message is not chunk k.
func (o *Object) fetchRun(first uint64, k, n int) (ok bool, err error) {
	cs := o.Info.chunkSize
	b, err := o.dr.Start(o.ctx, natsx.DirectGet{Seq: first + uint64(k), Batch: n, MaxBytes: n * int(cs)})
	if err != nil {
		return false, wrapf(ErrStore, "read %s: %v", o.Info.Key, err)
	}
	o.batch, o.batchNext, o.batchSeq = b, k, first+uint64(k)
	if ok, err = o.pull(); !ok || err != nil {
		o.closeBatch()
	}
	return ok, err
}

// pull takes the next chunk of the open batch into buf: false at the end
// of the batch or when the message is not the chunk due.
func (o *Object) pull() (bool, error) {
	m, err := o.batch.Next()
	if err != nil {
		return false, wrapf(ErrStore, "read %s: %v", o.Info.Key, err)
	}
	if m == nil || m.Subject != o.chunkSubject() || m.Sequence != o.batchSeq {
		return false, nil
	}
	cs, j := o.Info.chunkSize, o.batchNext
	if want := min(cs, o.Info.Size-int64(j)*cs); int64(len(m.Data)) != want {
		return false, wrapf(ErrStore, "%s: chunk %d is %d bytes, want %d", o.Info.Key, j, len(m.Data), want)
	}
	o.seqs[j] = m.Sequence
	o.cache.put(o.Info.nuid, j, m.Data)
	o.buf = append(o.buf[:0], m.Data)
	o.bufOff = int64(j) * cs
	o.bufEnd = o.bufOff + int64(len(m.Data))
	o.batchNext++
	o.batchSeq++
	return true, nil
}

// closeBatch stops reading the open batch, if any.
func (o *Object) closeBatch() {
	if o.batch != nil {
		o.batch.Close()
		o.batch = nil
	}
}

// bounds are the stream sequences chunk k can be at by the chunks seen:
// at or after lo (1 when none below it was seen), at or before hi (0 when
// unknown).
func (o *Object) bounds(k int) (lo, hi uint64) {
	lo = 1
	if after := uint64(o.Info.chunks - k); o.Info.metaSeq > after {
		hi = o.Info.metaSeq - after // the chunks from k on precede the meta
	}
	for j, s := range o.seqs {
		switch {
		case s == 0:
		case j < k:
			lo = max(lo, s+uint64(k-j))
		case j > k && s > uint64(j-k):
			hi = min(hi, s-uint64(j-k))
		}
	}
	return lo, hi
}

// fetchScan reads an object whose chunks may be of any size: from the last
// chunk known to start at or before o.pos (the first chunk at first), in
// batches, learning each chunk's offset on the way (o.offs, o.scanEnd).
func (o *Object) fetchScan() error {
	subj := o.chunkSubject()
	from, i := uint64(1), 0 // read from seq from, where chunk i is
	if len(o.offs) > 0 {
		i = len(o.offs) - 1
		if o.pos < o.scanEnd {
			i = sort.Search(len(o.offs), func(x int) bool { return o.offs[x] > o.pos }) - 1
		}
		from = o.seqs[i]
	}
	n := min(int(o.want/(128<<10))+1, natsx.DirectBatch)
	for range o.Info.chunks + 1 {
		var ferr error
		got := 0
		_, _, err := o.dr.Get(o.ctx, natsx.DirectGet{Seq: from, NextFor: subj, Batch: n, MaxBytes: natsx.DirectMaxBytes}, func(m *jetstream.RawStreamMsg) bool {
			got++
			j, err := o.index(m)
			if err == nil && j != i {
				err = wrapf(ErrStore, "%s: chunk %d where chunk %d was due", o.Info.Key, j, i)
			}
			if err != nil {
				ferr = err
				return false
			}
			if j == len(o.offs) {
				o.offs = append(o.offs, o.scanEnd)
				o.seqs[j] = m.Sequence
				o.scanEnd += int64(len(m.Data))
			}
			i, from = j+1, m.Sequence+1
			start := o.offs[j]
			end := start + int64(len(m.Data))
			if end > o.pos && (len(o.buf) > 0 || start <= o.pos) {
				if len(o.buf) == 0 {
					o.bufOff = start
				}
				o.buf = append(o.buf, m.Data)
				o.bufEnd = end
			}
			return true
		})
		if ferr != nil {
			return ferr
		}
		if err != nil {
			return wrapf(ErrStore, "read %s: %v", o.Info.Key, err)
		}
		if o.scanEnd > o.Info.Size {
			return wrapf(ErrStore, "%s: chunks longer than its size %d", o.Info.Key, o.Info.Size)
		}
		if len(o.buf) > 0 {
			return nil
		}
		if got == 0 {
			break
		}
	}
	return wrapf(ErrStore, "%s: no chunk at offset %d", o.Info.Key, o.pos)
}

// numPendingHeader is set by the server on each message of a batched direct
// get: how many messages on the request's subject follow it.
const numPendingHeader = "Nats-Num-Pending"
