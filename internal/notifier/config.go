// Package notifier pushes job status to browsers over WebSockets speaking the
// Phoenix Channels V2 protocol (see docs/phoenix-protocol.md), and over
// Server-Sent Events for clients without WebSockets.
//
// The EVENTS stream is the source of truth. It re-publishes every stored
// event on live.events.<user>.<job> with its stream sequence (Nats-Sequence)
// and the sequence of the previous event on the same subject
// (Nats-Last-Sequence). A notifier subscribes on core NATS only to the live
// subjects of the topics its clients joined (reference-counted, one
// subscription per topic) and pushes what arrives without asking JetStream
// anything; when Nats-Last-Sequence shows that a message on the subject was
// missed, the missing ones are read from the stream first. Every topic
// keeps a contiguous watermark (all events on its filter up to it were
// handled) that only full reads move: a sweeper reconciles each topic with
// the stream every few seconds (a lost re-publish of a job's last event has
// no successor to reveal it) and, after a NATS reconnect, re-reads every
// topic from its watermark at once.
//
// A user: topic spans many jobs, and a gap filled on one job may go out
// after a later event of another job (a "late" event, with a lower
// stream_seq than one already pushed). Its pushes and its join reply
// therefore carry "resume_seq": the subscriber's contiguous watermark,
// every event of the topic with a stream seq up to it has reached the
// client (pushed, or covered by the join's snapshot or replay). A client
// resumes with last_seq = resume_seq, never the highest stream_seq it saw,
// and de-duplicates the overlap per job by seq; the join replays every
// event after last_seq in stream order.
package notifier

import (
	"github.com/beamline/beamline/pkg/envelope"

	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
)

// ErrInvalidConfig is wrapped by every configuration error.
var ErrInvalidConfig = errors.New("notifier: invalid config")

// DefaultAddr is where Run listens when Config.Addr is empty.
const DefaultAddr = "127.0.0.1:8090"

// Config configures a Service. Zero values are the documented defaults.
type Config struct {
	// Addr is where Run listens when Listener is nil. Default DefaultAddr.
	Addr string
	// Listener, when set, is used instead of listening on Addr.
	Listener net.Listener
	// Secret is the HS256 secret tokens are signed with (≥ 16 bytes). Required.
	Secret []byte
	// AllowedOrigins lists the Origin values accepted on WebSocket upgrades
	// ("*" accepts any). Empty means same origin as the Host header. Requests
	// without an Origin header (non-browser clients) are always accepted.
	AllowedOrigins []string
	// MaxChannels is the most topics one connection may join. Default 100.
	MaxChannels int
	// SendQueue is the most frames waiting to be written to one connection
	// (for a long-poll session: waiting for the next poll); a client that
	// lets it fill up is disconnected. Default 256.
	SendQueue int
	// LongPollSessions is the most long-poll sessions this process keeps
	// open; a client beyond it is told to retry later. Default 10000.
	LongPollSessions int
	// MaxFrame is the largest inbound frame in bytes. Default 64 KiB.
	MaxFrame int
	// PushRate is the most client frames per second per connection (a
	// token bucket with a burst of twice that); heartbeats are not counted.
	// Default 50.
	PushRate int
	// IdleTimeout closes a connection that sent nothing for this long.
	// Default 60s (twice the client's heartbeat interval).
	IdleTimeout time.Duration
	// WriteTimeout bounds one write to a client. Default 10s.
	WriteTimeout time.Duration
	// Static, when set, is mounted at / instead of the web UI below
	// (devstack adds its /v1/jobs proxy to it).
	Static http.Handler
	// Demo serves the demo page at / beside what every notifier serves
	// when Static is nil: the client (/beamline.js, /react.js) and the
	// dashboard (/admin). Default off: the demo page is for development.
	Demo bool
	// PresenceNode names this notifier among the others sharing presence
	// over NATS (an id: [A-Za-z0-9_-]{1,64}). A restarted notifier with the
	// same name replaces its former presences at once; default random.
	PresenceNode string
	// PresenceInterval is the presence heartbeat: every notifier publishes
	// its presences that often, and one not heard from for 1.5 intervals
	// is dropped (its presences leave). Default 5s.
	PresenceInterval time.Duration
	// PresenceMetaMax is the largest client presence meta, in bytes of
	// compact JSON. Default 256.
	PresenceMetaMax int
	// StudioMsgMax is the largest studio message payload in bytes. Default 1 KiB.
	StudioMsgMax int
	// StudioRate is the most studio messages per second per member and
	// room (burst twice that). Default 5.
	StudioRate int
	// TracerProvider records a span per event pushed to a socket, the
	// child of the event's traceparent. nil means no tracing.
	TracerProvider trace.TracerProvider

	// unanswered is a client event the server never replies to (tests of
	// the client's push timeout only; "" in production).
	unanswered string
	// reconcileEvery is how often each stream-fed topic is reconciled with
	// the stream (default 5s; tests stretch or shrink it).
	reconcileEvery time.Duration
	// beforeRefill, when set, runs before the topics are refilled after a
	// NATS reconnect (tests only).
	beforeRefill func()
	// sweepBatch, when set, runs after a sweep read a batch of a topic's
	// filter and before it delivers it under the topic's lock (tests only).
	sweepBatch func(topic string)
	// userScanMax and userScanTime bound the open-jobs scan of a user:
	// join (defaults 10000 jobs, 3s; tests shrink them).
	userScanMax  int
	userScanTime time.Duration
	// lpHold is how long a poll waits for frames (default 10s); lpExpiry
	// ends a session that was not polled for that long (default 15s).
	lpHold   time.Duration
	lpExpiry time.Duration
	// onFrame, when set, sees every inbound frame before it is handled
	// (tests only: a hook that panics).
	onFrame func(data []byte)
	// hideDirect, when set, hides from every direct-get answer the first
	// message it returns true for and what follows it, as a replica that
	// has not stored them yet answers (tests only).
	hideDirect func(m *jetstream.RawStreamMsg) bool
	// laneDepth is the capacity of each live-message lane (default
	// defaultLaneDepth; tests shrink it to make drops).
	laneDepth int
}

func (c *Config) setDefaults() error {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.MaxChannels == 0 {
		c.MaxChannels = 100
	}
	if c.SendQueue == 0 {
		c.SendQueue = 256
	}
	if c.LongPollSessions == 0 {
		c.LongPollSessions = 10000
	}
	if c.lpHold <= 0 {
		c.lpHold = 10 * time.Second
	}
	if c.lpExpiry <= 0 {
		c.lpExpiry = 15 * time.Second
	}
	if c.MaxFrame == 0 {
		c.MaxFrame = 64 << 10
	}
	if c.PushRate == 0 {
		c.PushRate = 50
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.userScanMax <= 0 {
		c.userScanMax = defaultUserScanMax
	}
	if c.userScanTime <= 0 {
		c.userScanTime = defaultUserScanTime
	}
	if c.laneDepth <= 0 {
		c.laneDepth = defaultLaneDepth
	}
	if c.PresenceNode == "" {
		c.PresenceNode = newNodeName()
	}
	if c.PresenceInterval <= 0 {
		c.PresenceInterval = 5 * time.Second
	}
	if c.PresenceMetaMax <= 0 {
		c.PresenceMetaMax = 256
	}
	if c.StudioMsgMax <= 0 {
		c.StudioMsgMax = 1 << 10
	}
	if c.StudioRate <= 0 {
		c.StudioRate = 5
	}
	if err := envelope.ValidateID("PresenceNode", c.PresenceNode); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if c.reconcileEvery <= 0 {
		c.reconcileEvery = defaultReconcileEvery
	}
	switch {
	case c.MaxChannels < 0:
		return fmt.Errorf("%w: MaxChannels must be > 0", ErrInvalidConfig)
	case c.LongPollSessions < 0:
		return fmt.Errorf("%w: LongPollSessions must be > 0", ErrInvalidConfig)
	case c.SendQueue < 0:
		return fmt.Errorf("%w: SendQueue must be > 0", ErrInvalidConfig)
	case c.MaxFrame < 256:
		return fmt.Errorf("%w: MaxFrame must be ≥ 256", ErrInvalidConfig)
	case c.PushRate < 0:
		return fmt.Errorf("%w: PushRate must be > 0", ErrInvalidConfig)
	case c.IdleTimeout < 0 || c.WriteTimeout < 0:
		return fmt.Errorf("%w: timeouts must be > 0", ErrInvalidConfig)
	}
	return nil
}
