// Package outputs keeps the files a prediction produces: Fetch copies an
// output (a data: URL, or an http(s) URL behind an SSRF guard, a timeout, a
// size cap and a content-type allowlist) into the JetStream Object Store
// bucket "outputs" (Store), Keep rewrites a job's result to name its stored
// outputs, and Object serves one back with Range support. See
// docs/design.md#outputs.
package outputs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	maxBytes int64
}

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
	return &Store{obs: obs, maxBytes: cfg.MaxBytes}, nil
}

// OpenStore binds to the bucket for reading (ingest). It fails with
// jetstream.ErrBucketNotFound until a processor created it.
func OpenStore(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	obs, err := js.ObjectStore(ctx, Bucket)
	if err != nil {
		return nil, fmt.Errorf("outputs: open bucket %s: %w", Bucket, err)
	}
	return &Store{obs: obs}, nil
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
	oi, err := s.obs.Put(ctx, jetstream.ObjectMeta{Name: key, Headers: h}, lr)
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

// Stat returns the info of a stored output, ErrNotFound if there is none.
func (s *Store) Stat(ctx context.Context, key string) (Info, error) {
	oi, err := s.obs.GetInfo(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrObjectNotFound):
		return Info{}, wrapf(ErrNotFound, "%s", key)
	case err != nil:
		return Info{}, wrapf(ErrStore, "info %s: %v", key, err)
	}
	return infoOf(oi), nil
}

// Open returns a stored output as an io.ReadSeeker for http.ServeContent.
// The Object Store has no range read: its Get streams the object's chunks
// from the first, so a read at offset N reads and discards N bytes first
// (Object.Read). Close it when done.
func (s *Store) Open(ctx context.Context, key string) (*Object, error) {
	info, err := s.Stat(ctx, key)
	if err != nil {
		return nil, err
	}
	return s.Reader(ctx, info), nil
}

// Reader opens the output Stat described, reading with ctx.
func (s *Store) Reader(ctx context.Context, info Info) *Object {
	return &Object{ctx: ctx, obs: s.obs, Info: info}
}

// Object is a stored output opened for reading. Seek only moves the offset
// (Seek to the end answers the size without reading anything, which is how
// http.ServeContent learns it); Read (re)opens the object's chunk stream
// when needed and discards the bytes before the offset.
type Object struct {
	Info Info
	ctx  context.Context
	obs  jetstream.ObjectStore
	pos  int64                  // where the caller reads next
	r    jetstream.ObjectResult // open stream, at rpos
	rpos int64
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
	if o.r != nil && o.rpos > o.pos { // backwards: start again
		_ = o.r.Close()
		o.r = nil
	}
	if o.r == nil {
		r, err := o.obs.Get(o.ctx, o.Info.Key)
		if err != nil {
			return 0, wrapf(ErrStore, "get %s: %v", o.Info.Key, err)
		}
		o.r, o.rpos = r, 0
	}
	if skip := o.pos - o.rpos; skip > 0 {
		n, err := io.CopyN(io.Discard, o.r, skip)
		o.rpos += n
		if err != nil {
			return 0, wrapf(ErrStore, "skip to %d of %s: %v", o.pos, o.Info.Key, err)
		}
	}
	n, err := o.r.Read(p)
	o.rpos += int64(n)
	o.pos += int64(n)
	return n, err
}

// Close releases the chunk stream.
func (o *Object) Close() error {
	if o.r == nil {
		return nil
	}
	err := o.r.Close()
	o.r = nil
	return err
}
