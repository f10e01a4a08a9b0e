package notifier

import "time"

// transport carries one session's frames between the notifier and a client
// (in the manner of centrifuge's transport.go): websocket.go and
// longpoll.go implement it, one file each, and the session never knows
// which one it is on.
//
// The goroutine that reads the client (or waits for it) runs the
// transport's loop under session.run, which tears the session down when it
// returns. It hands every inbound frame to session.receive, holding
// session.in, and writes what is queued, reporting each frame written with
// session.sent. The WebSocket transport writes in wake, inline, or on a
// writer goroutine of its own (writer.go); another WebSocket library
// implements it all in one file, as websocket.go and writer.go do for
// gorilla/websocket: the upgrade handler, a read loop that returns why
// reading ended (interrupt makes it return: an expired read deadline, a
// cancelled context), the writes, and close.
type transport interface {
	// loop runs on the goroutine that session.run starts for the
	// transport: it reads the client (or waits for the session to end)
	// until the client goes away or interrupt is called, and returns why
	// reading ended.
	loop() disconnect
	// wake tells the transport that frames are queued: session.take
	// returns them (or the transport takes c.queue itself, in wake). It
	// is called with the session's lock held, so it must neither block
	// nor call a session method that takes the lock.
	wake()
	// interrupt tells the transport that the session failed: it stops
	// reading (or waiting), so that session.run returns and tears the
	// session down. It never blocks and may be called more than once.
	interrupt()
	// close runs once, on the transport's goroutine, after the session
	// was torn down (no frame will be queued any more): it tells the
	// client d (nothing when d.code is 0), stops the transport's writes
	// and releases what it holds.
	close(d disconnect)
}

// outFrame is one queued frame.
type outFrame struct {
	data   []byte
	binary bool
	pong   bool      // a WebSocket pong (binary and pong: wsOpPong wins)
	at     time.Time // event time, for the latency metric (zero: not an event)
	trace  eventTrace
}
