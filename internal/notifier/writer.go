package notifier

import (
	"errors"
	"sync/atomic"
	"time"
)

// frameWriter is the write side of a transport that streams frames to
// its client as they are queued (a WebSocket).
type frameWriter interface {
	// writeFrame writes one frame to the client. deadline bounds the
	// write (it is the same for every frame of a batch); an error that
	// reports Timeout() means the client does not read.
	writeFrame(f outFrame, deadline time.Time) error
}

// burstWriter writes a session's queued frames on a goroutine that exists
// only while frames are queued, so an idle client costs no writer. A
// streaming transport calls kick from its wake and wait from its close.
type burstWriter struct {
	running atomic.Bool // a writer goroutine runs (or is about to)
}

// kick starts the writer unless it runs. Like transport.wake it is called
// with the session's lock held and never blocks.
func (b *burstWriter) kick(c *session, w frameWriter) {
	if b.running.CompareAndSwap(false, true) {
		c.s.wg.Add(1)
		go b.run(c, w)
	}
}

// run writes what the session queued, batch by batch, until the queue is
// empty. A failed write ends the session: a timeout means the client does
// not keep up (slow consumer).
func (b *burstWriter) run(c *session, w frameWriter) {
	defer c.s.wg.Done()
	for {
		batch := c.take()
		if batch == nil {
			b.running.Store(false)
			// A frame queued before the store saw a writer running.
			if !c.queued() || !b.running.CompareAndSwap(false, true) {
				c.mu.Lock()
				c.cond.Broadcast() // for wait
				c.mu.Unlock()
				return
			}
			continue
		}
		deadline := time.Now().Add(c.s.cfg.WriteTimeout)
		for _, f := range batch {
			if err := w.writeFrame(f, deadline); err != nil {
				d := disconnectWriteError
				if isTimeout(err) {
					d = disconnectSlowConsumer
				}
				c.fail(d)
				break
			}
			c.sent(f)
		}
		c.recycle(batch)
	}
}

// wait waits for the writer to exit; the session is closed (so no kick
// comes any more) and the transport made its writes fail fast. (The
// session's condition, not a WaitGroup: it costs an idle connection
// nothing.)
func (b *burstWriter) wait(c *session) {
	c.mu.Lock()
	for b.running.Load() {
		c.cond.Wait()
	}
	c.mu.Unlock()
}

// isTimeout reports whether err is a timeout (a deadline or a context's).
func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}
