package kit

import (
	"context"
	"net/http"
	"time"

	"github.com/beamline/beamline/internal/phoenix/phoenixtest"
)

// Frame is one Phoenix V2 frame: [join_ref, ref, topic, event, payload].
type Frame = phoenixtest.Frame

// Reply is the payload of a phx_reply.
type Reply = phoenixtest.Reply

// Socket is a minimal Phoenix V2 client (phoenixtest.Client): it answers
// nothing, sends heartbeats, matches replies by ref and hands every other
// frame to Pushes.
type Socket struct {
	*phoenixtest.Client
	// Pushes receives every frame that is not a reply to a request of this
	// client. It is large; read it promptly or the reader stalls (and the
	// notifier cuts the client off as slow, as it should).
	Pushes <-chan Frame
}

// heartbeatEvery is how often a Socket sends a heartbeat.
const heartbeatEvery = 10 * time.Second

// WebSocketURL turns the notifier's http://host:port into its Phoenix
// endpoint with token.
func WebSocketURL(base, token string) string { return phoenixtest.URL(base, token) }

// Dial connects to the notifier at base (http://host:port). hdr may carry an
// Origin. On a refused upgrade the *http.Response tells the status.
func Dial(ctx context.Context, base, token string, hdr http.Header) (*Socket, *http.Response, error) {
	c, resp, err := phoenixtest.Dial(ctx, WebSocketURL(base, token), phoenixtest.Options{
		Header: hdr, HandshakeTimeout: 5 * time.Second, Heartbeat: heartbeatEvery})
	if err != nil {
		return nil, resp, err
	}
	return &Socket{Client: c, Pushes: c.Frames()}, resp, nil
}

// Close closes the connection and waits for its goroutines.
func (s *Socket) Close() { s.Abort() }
