// Package config holds what the binaries share on their command lines: the
// NATS URL, the log format, the replica count and the kinds that exist; and
// the shape of their main: Main (signals and exit codes) around
// run(ctx, args, stdout, stderr) error, which ends in Common.Serve.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/pkg/envelope"
)

// ErrInvalid is wrapped by every configuration error.
var ErrInvalid = errors.New("config: invalid")

// Default retentions (-events-max-age, -status-ttl, -dlq-max-age): what
// streams/ says.
const (
	DefaultEventsMaxAge = 24 * time.Hour
	DefaultStatusTTL    = 7 * 24 * time.Hour
	DefaultDLQMaxAge    = 30 * 24 * time.Hour
)

// DefaultKinds is the kinds served out of the box.
const DefaultKinds = "image,video"

// EnvKinds lets ingest and processor share the kind list without repeating
// it on both command lines.
const EnvKinds = "BEAMLINE_KINDS"

// Kind is one kind of job and the provider that serves it ("" means the
// processor's default provider).
type Kind struct {
	Name     string
	Provider string
}

// ParseKinds reads "image,video=http": a comma-separated list of kinds, each
// optionally naming its provider (image=replicate:owner/name). Kinds must be unique and valid tokens;
// a provider, when given, is a token of the same shape (so "video=" and
// "video=http=x" are errors rather than an empty or odd provider name).
func ParseKinds(s string) ([]Kind, error) {
	var out []Kind
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, provider, hasProvider := strings.Cut(part, "=")
		name, provider = strings.TrimSpace(name), strings.TrimSpace(provider)
		if err := envelope.ValidateKind(name); err != nil {
			return nil, fmt.Errorf("%w: kinds: %w", ErrInvalid, err)
		}
		if hasProvider && !validProvider(provider) {
			return nil, fmt.Errorf("%w: kinds: %q: provider %q must match [a-z0-9_-]{1,32}", ErrInvalid, name, provider)
		}
		if seen[name] {
			return nil, fmt.Errorf("%w: kinds: %q listed twice", ErrInvalid, name)
		}
		seen[name] = true
		out = append(out, Kind{Name: name, Provider: provider})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: kinds: none given", ErrInvalid)
	}
	return out, nil
}

// validProvider reports whether a provider name is a lower-case token, like
// a kind: "sim", "http", "my-gpus", optionally followed by ":" and what it
// runs ("replicate:black-forest-labs/flux-schnell", a version id); the
// provider checks that part.
func validProvider(p string) bool {
	name, target, hasTarget := strings.Cut(p, ":")
	if hasTarget && (target == "" || len(target) > 200 || strings.Trim(target, "abcdefghijklmnopqrstuvwxyz0123456789._/:-") != "") {
		return false
	}
	return envelope.ValidateKind(name) == nil
}

// KindNames returns the names of ks.
func KindNames(ks []Kind) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.Name
	}
	return out
}

// Common is the configuration every binary has.
type Common struct {
	NATSURL   string
	LogFormat string
	LogLevel  string
	Replicas  int
	// Retention of EVENTS, job_status (and JOBINDEX), and the DLQ,
	// applied to the streams at start.
	EventsMaxAge time.Duration
	StatusTTL    time.Duration
	DLQMaxAge    time.Duration
	Kinds        string
}

// NewFlags is the flag set of a service binary: errors go to stderr and
// the Common flags are registered on it.
func NewFlags(name string, stderr io.Writer) (*flag.FlagSet, *Common) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	common := &Common{}
	common.Register(fs)
	return fs, common
}

// Register adds -nats, -log-format, -log-level, -replicas and -kinds to fs.
func (c *Common) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.NATSURL, "nats", natsx.URLFromEnv(), "NATS server URL (user:password may ride in it; default $NATS_URL)")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text (tint, coloured on a terminal) or json")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.IntVar(&c.Replicas, "replicas", 1, "stream replicas when applying streams/ (3 on a cluster)")
	fs.DurationVar(&c.EventsMaxAge, "events-max-age", DefaultEventsMaxAge, "how long EVENTS keeps job events (replay to reconnecting clients), applied at start")
	fs.DurationVar(&c.StatusTTL, "status-ttl", DefaultStatusTTL, "how long job_status keeps a job's snapshot (and JOBINDEX its list entry) after its last change, applied at start")
	fs.DurationVar(&c.DLQMaxAge, "dlq-max-age", DefaultDLQMaxAge, "how long the DLQ keeps a dead job, applied at start")
	kinds := os.Getenv(EnvKinds)
	if kinds == "" {
		kinds = DefaultKinds
	}
	fs.StringVar(&c.Kinds, "kinds", kinds, "job kinds served, comma-separated, each optionally kind=provider (default $"+EnvKinds+")")
}

// ParsedKinds parses the -kinds flag.
func (c *Common) ParsedKinds() ([]Kind, error) { return ParseKinds(c.Kinds) }

// Secret reads the auth secret from the environment.
func Secret(env string) ([]byte, error) {
	s := os.Getenv(env)
	if s == "" {
		return nil, fmt.Errorf("%w: $%s is not set", ErrInvalid, env)
	}
	return []byte(s), nil
}
