// Package natsx holds what every Beamline binary does with NATS: connect with
// reconnects that never give up, and run an embedded server for devstack and
// tests.
package natsx

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"time"

	"github.com/nats-io/nats.go"
)

// DefaultURL is used when neither -nats nor $NATS_URL is set.
const DefaultURL = "nats://127.0.0.1:4222"

// URLFromEnv returns $NATS_URL or DefaultURL, the default of every -nats flag.
func URLFromEnv() string {
	if u := os.Getenv("NATS_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// Redact hides the password of a URL for logs.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// Connect dials NATS and keeps reconnecting for as long as the connection is
// open: a binary survives a NATS restart without being restarted itself.
// Disconnects and reconnects are logged. The first dial is retried until ctx
// ends so that services may start before the server.
func Connect(ctx context.Context, rawURL, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.ReconnectBufSize(8 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
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
