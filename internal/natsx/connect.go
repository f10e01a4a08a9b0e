// Package natsx holds what every Beamline binary does with NATS: connect with
// reconnects that never give up, and run an embedded server for devstack and
// tests.
package natsx

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// DefaultPort is the NATS client port: DefaultURL's, and the embedded
// server's when EmbeddedConfig.Port is 0.
const DefaultPort = 4222

// DefaultURL is used when neither -nats nor $NATS_URL is set.
var DefaultURL = "nats://127.0.0.1:" + strconv.Itoa(DefaultPort)

// URLFromEnv returns $NATS_URL or DefaultURL, the default of every -nats flag.
func URLFromEnv() string {
	if u := os.Getenv("NATS_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// Redact hides the secrets of a NATS URL for logs: the password of
// user:password, and a lone user, which NATS URLs use for a token. It works
// on comma-separated server lists and on strings that are not valid URLs
// (a bad %-escape, no scheme), without parsing them, so nothing slips
// through a parse error.
func Redact(raw string) string {
	if !strings.Contains(raw, "@") {
		return raw
	}
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		parts[i] = redactOne(p)
	}
	return strings.Join(parts, ",")
}

const redacted = "xxxxx"

func redactOne(s string) string {
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return s
	}
	start := 0
	if i := strings.Index(s, "://"); i >= 0 && i < at {
		start = i + len("://")
	}
	user, _, hasPassword := strings.Cut(s[start:at], ":")
	if !hasPassword {
		return s[:start] + redacted + s[at:] // a token
	}
	return s[:start] + user + ":" + redacted + s[at:]
}

// InboxPrefix is the reply-subject prefix of one service's connections,
// "_INBOX_<service>" (e.g. _INBOX_ingest): nats.conf lets each service user
// subscribe to its own _INBOX_<service>.> only, so a compromised service
// cannot read the replies (JetStream acks, KV reads, pulled jobs) meant for
// another. service must be a NATS subject token (no '.', '*', '>').
func InboxPrefix(service string) string { return "_INBOX_" + service }

// Inbox is the Connect option that gives a connection the service's own
// inbox prefix (InboxPrefix); every request, JetStream pull and KV read of
// that connection then gets its replies under it.
func Inbox(service string) nats.Option { return nats.CustomInboxPrefix(InboxPrefix(service)) }

// Connect dials NATS and keeps reconnecting for as long as the connection is
// open: a binary survives a NATS restart without being restarted itself.
// Disconnects and reconnects are logged. The first dial is retried until ctx
// ends so that services may start before the server. extra options come
// last; every service passes Inbox(<its name>).
func Connect(ctx context.Context, rawURL, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.ReconnectBufSize(8 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil { // our own Close at shutdown, not a fault
				log.Debug("nats connection closed")
				return
			}
			log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Error("nats async error", "subject", subj, "err", err)
		}),
	}
	opts = append(opts, extra...)
	for {
		nc, err := nats.Connect(rawURL, opts...)
		if err == nil {
			log.Info("nats connected", "server", nc.ConnectedUrlRedacted(), "name", name)
			return nc, nil
		}
		log.Warn("nats connect failed; retrying", "url", Redact(rawURL), "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("natsx: connect %s: %w", Redact(rawURL), err)
		case <-time.After(time.Second):
		}
	}
}
