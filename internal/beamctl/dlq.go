package beamctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// dlqFilter is the filter of the DLQ API (and of `dlq ls`).
type dlqFilter struct {
	Kind   string `json:"kind,omitempty"`
	User   string `json:"user,omitempty"`
	Reason string `json:"reason,omitempty"`
	Since  string `json:"since,omitempty"`
	Until  string `json:"until,omitempty"`
	Limit  int    `json:"limit,omitempty"`

	since, until time.Time
}

func (f *dlqFilter) flags(fs *flag.FlagSet) {
	fs.StringVar(&f.Kind, "kind", "", "only dead jobs of this kind")
	fs.StringVar(&f.User, "user", "", "only this user's dead jobs")
	fs.StringVar(&f.Reason, "reason", "", "only dead jobs whose reason contains this text")
	fs.StringVar(&f.Since, "since", "", "only jobs that died at or after this time (RFC 3339, or a duration ago: 24h)")
	fs.StringVar(&f.Until, "until", "", "only jobs that died before this time (RFC 3339, or a duration ago)")
	fs.IntVar(&f.Limit, "limit", 0, "at most this many jobs (default: all)")
}

// check parses the times (a duration means that long ago) and writes them
// back as RFC 3339, the API's form.
func (f *dlqFilter) check(now time.Time) error {
	parse := func(flagName string, s *string, t *time.Time) error {
		if *s == "" {
			return nil
		}
		if d, err := time.ParseDuration(*s); err == nil && d >= 0 {
			*t = now.Add(-d)
		} else if *t, err = time.Parse(time.RFC3339, *s); err != nil {
			return usagef("--%s %q: want an RFC 3339 time (2026-01-02T15:04:05Z) or a duration (24h)", flagName, *s)
		}
		*s = t.UTC().Format(time.RFC3339)
		return nil
	}
	if err := parse("since", &f.Since, &f.since); err != nil {
		return err
	}
	if err := parse("until", &f.Until, &f.until); err != nil {
		return err
	}
	if f.Limit < 0 {
		return usagef("--limit %d: must be positive", f.Limit)
	}
	if f.Kind != "" {
		if err := envelope.ValidateKind(f.Kind); err != nil {
			return usagef("--kind: %v", err)
		}
	}
	return nil
}

// deadJob is one DLQ entry as `dlq ls -o json` prints it.
type deadJob struct {
	Seq             uint64        `json:"seq"`
	DiedAt          time.Time     `json:"died_at"`
	Reason          string        `json:"reason"`
	Attempts        int           `json:"attempts"`
	OriginalSubject string        `json:"original_subject"`
	Job             *envelope.Job `json:"job,omitempty"` // nil when the message was no valid job
}

func (f *dlqFilter) match(d deadJob) bool {
	switch {
	case f.User != "" && (d.Job == nil || d.Job.User != f.User):
		return false
	case f.Reason != "" && !strings.Contains(strings.ToLower(d.Reason), strings.ToLower(f.Reason)):
		return false
	case !f.until.IsZero() && !d.DiedAt.Before(f.until):
		return false
	case !f.since.IsZero() && d.DiedAt.Before(f.since):
		return false // a start time past the stream's end delivers its last message
	}
	return true
}

func dlqLsCmd() *command {
	var f dlqFilter
	return &command{name: "ls", summary: "list dead jobs with their reason and attempts, oldest first (reads the DLQ stream over NATS)",
		help: "There is no HTTP API for the DLQ yet, so this reads the DLQ stream with an\n" +
			"ordered consumer, as the NATS admin user (nats.conf):\n\n" +
			"  NATS_URL=nats://admin:$BEAMLINE_NATS_ADMIN_PASSWORD@nats-1:4222 beamctl dlq ls --kind image",
		needs: []string{"nats"},
		flags: f.flags,
		run: func(ctx context.Context, e *env, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if err := f.check(time.Now()); err != nil {
				return err
			}
			dead, err := readDLQ(ctx, e.nats, &f)
			if err != nil {
				return err
			}
			if e.json() {
				if dead == nil {
					dead = []deadJob{}
				}
				return writeJSON(e.stdout, dead)
			}
			rows := make([][]string, 0, len(dead))
			for _, d := range dead {
				id, user, kind := "", "", ""
				if d.Job != nil {
					id, user, kind = d.Job.ID, d.Job.User, d.Job.Kind
				}
				rows = append(rows, []string{strconv.FormatUint(d.Seq, 10), when(d.DiedAt), id, user, kind, strconv.Itoa(d.Attempts), d.Reason})
			}
			return table(e.stdout, []string{"SEQ", "DIED", "JOB", "USER", "KIND", "ATTEMPTS", "REASON"}, rows)
		},
	}
}

// readDLQ reads the DLQ stream from the start (or --since) to its end.
func readDLQ(ctx context.Context, natsURL string, f *dlqFilter) ([]deadJob, error) {
	nc, err := nats.Connect(natsURL, nats.Name("beamctl"), nats.Timeout(5*time.Second), nats.MaxReconnects(0))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if f.Kind != "" {
		cfg.FilterSubjects = []string{envelope.DLQSubject(f.Kind)}
	}
	if !f.since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &f.since
	}
	cons, err := js.OrderedConsumer(ctx, streams.DLQ, cfg)
	if err != nil {
		return nil, fmt.Errorf("read the %s stream: %w", streams.DLQ, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the %s stream: %w", streams.DLQ, err)
	}
	var out []deadJob
	for pending := info.NumPending; pending > 0; {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			if errors.Is(err, jetstream.ErrNoMessages) {
				break // the rest was removed while we read
			}
			return nil, fmt.Errorf("read the %s stream: %w", streams.DLQ, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return nil, err
		}
		pending = meta.NumPending
		d := deadJob{
			Seq: meta.Sequence.Stream, DiedAt: meta.Timestamp.UTC(),
			Reason: m.Headers().Get(envelope.HeaderDeadReason), OriginalSubject: m.Headers().Get(envelope.HeaderOriginalSubject),
		}
		d.Attempts, _ = strconv.Atoi(m.Headers().Get(envelope.HeaderAttempts))
		if _, j, err := envelope.DecodeJob(m.Data()); err == nil {
			d.Job = &j
		}
		if !f.until.IsZero() && !d.DiedAt.Before(f.until) {
			break // the stream is in time order
		}
		if f.match(d) {
			out = append(out, d)
			if f.Limit > 0 && len(out) == f.Limit {
				break
			}
		}
	}
	return out, nil
}

func dlqRedriveCmd() *command {
	var f dlqFilter
	var yes bool
	return &command{name: "redrive", summary: "rerun the dead jobs that match the filter (POST /v1/admin/dlq/redrive)",
		help: "Each matching dead job is rerun as a new job and leaves the DLQ once its rerun\n" +
			"is stored. Needs an admin token. A filter that matches nothing redrives 0 jobs\n" +
			"(not an error). Without any filter, --all is required.",
		needs: apiNeeds,
		flags: func(fs *flag.FlagSet) {
			f.flags(fs)
			fs.BoolVar(&yes, "all", false, "redrive every dead job (required when no filter is given)")
		},
		run: func(ctx context.Context, e *env, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if err := f.check(time.Now()); err != nil {
				return err
			}
			if !yes && f == (dlqFilter{}) {
				return usagef("no filter given: pass --all to redrive every dead job")
			}
			b, err := e.apiCall(ctx, http.MethodPost, "/v1/admin/dlq/redrive", f)
			if err != nil {
				return err
			}
			if e.json() {
				return writeJSON(e.stdout, b)
			}
			return keyValues(e, b)
		},
	}
}
