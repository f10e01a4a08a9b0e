package notifier

// disconnect is why a session ended: what the client is told and what
// beamline_notifier_disconnects_total counts (in the manner of centrifuge's
// disconnect.go). Every way a session ends is one of the named values
// below; only tests make others.
type disconnect struct {
	// code is the WebSocket close code sent to the client; 0 sends no
	// close frame (the client went away, or the transport has none).
	code int
	// reason is the close frame's reason text.
	reason string
	// label is the metric's reason label.
	label string
}

// WebSocket close codes (RFC 6455 §7.4.1, and the IANA registry for 1012
// and 1013) the notifier sends.
const (
	closeGoingAway      = 1001
	closeInvalidPayload = 1007
	closePolicy         = 1008
	closeMessageTooBig  = 1009
	closeInternalError  = 1011
	closeServiceRestart = 1012
	closeTryAgainLater  = 1013
	closeNone           = 0 // no close frame
)

// The ways a session ends.
var (
	// disconnectShutdown: the notifier is stopping; clients reconnect to
	// another one.
	disconnectShutdown = disconnect{closeServiceRestart, "server shutting down", "shutdown"}
	// disconnectSlowConsumer: the client let its send queue fill up, or a
	// write to it timed out.
	disconnectSlowConsumer = disconnect{closeTryAgainLater, "slow consumer", "slow_consumer"}
	// disconnectWriteError: a write to the client failed.
	disconnectWriteError = disconnect{closeTryAgainLater, "write failed", "write_error"}
	// disconnectIdle: the client sent nothing for Config.IdleTimeout.
	disconnectIdle = disconnect{closeGoingAway, "idle timeout", "idle"}
	// disconnectFrameTooLarge: an inbound frame over Config.MaxFrame.
	disconnectFrameTooLarge = disconnect{closeMessageTooBig, "frame too large", "frame_too_large"}
	// disconnectMalformed: an inbound frame that is not a V2 frame and
	// cannot be answered with an error reply.
	disconnectMalformed = disconnect{closeInvalidPayload, "malformed frame", "malformed_frame"}
	// disconnectPanic: handling the client panicked (see session.panicked).
	disconnectPanic = disconnect{closeInternalError, "internal error", "panic"}
	// disconnectExpired: a long-poll session nobody polled for lpExpiry.
	disconnectExpired = disconnect{closeNone, "session expired", "lp_expired"}
	// disconnectClientClosed: the client closed the connection.
	disconnectClientClosed = disconnect{closeNone, "", "client closed"}
	// disconnectReadError: reading from the client failed.
	disconnectReadError = disconnect{closeNone, "", "read error"}
	// disconnectTokenExpired: the token the session was opened with
	// expired (docs/phoenix-protocol.md#12-token-expiry). Any code but 1000
	// makes the client reconnect, asking its app for a fresh token; 1008 is
	// what Phoenix's own long-poll client closes with when refused.
	disconnectTokenExpired = disconnect{closePolicy, "token expired", "token_expired"}
	// disconnectSessionsFull: a long-poll session refused because
	// Config.LongPollSessions are open (counted, never opened).
	disconnectSessionsFull = disconnect{closeNone, "", "lp_sessions_full"}
)

// countDisconnect counts a session that ended with d.
func (s *Service) countDisconnect(d disconnect) {
	s.m.disconnects.WithLabelValues(d.label).Inc()
}
