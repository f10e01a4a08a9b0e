package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/beamline/beamline/internal/phoenix"
	"github.com/beamline/beamline/internal/phoenix/phoenixtest"
)

// A presence member is what the scenario's members need: join the room,
// then hand every presence_diff frame to the measurement with the time it
// was read. Two kinds exist (-presence-client):
//
//   - std: phoenixtest's client (gorilla/websocket), which reads every
//     message into a fresh slice and decodes every frame with the
//     notifier's codec, presence_state (~150 KB in a 1,000-member room)
//     included;
//   - lean: leanMember below, which reads the WebSocket frames itself.
//
// On the 2-core machine the 1,000 members share the cores with the two
// notifiers being measured, so their CPU delays what they measure.
type presMember interface {
	join(ctx context.Context, topic string) error
	abort()
}

// stdMember is a phoenixtest client as a presMember.
type stdMember struct{ c *phoenixtest.Client }

func (m stdMember) join(ctx context.Context, topic string) error { return joinWS(ctx, m.c, topic) }
func (m stdMember) abort()                                       { m.c.Abort() }

// dialMember connects a member of the given kind; onDiff gets the bytes of
// every presence_diff frame (the whole V2 frame for lean, the payload for
// std: the change markers are the same in both) and the time it was read.
func dialMember(ctx context.Context, kind, base, token string, onDiff func(b []byte, at time.Time)) (presMember, error) {
	if kind == "lean" {
		return dialLeanMember(ctx, base, token, leanDiffEvent, onDiff)
	}
	c, err := dialWS(ctx, base, token, nil, func(f *phoenixtest.Frame, at time.Time) {
		if f.Event == "presence_diff" {
			onDiff(f.Payload, at)
		}
	})
	if err != nil {
		return nil, err
	}
	return stdMember{c}, nil
}

// leanMember is a Phoenix V2 member that reads its WebSocket the way a
// dedicated load generator would: one goroutine per connection reading
// frames from a 4 KiB bufio.Reader; a frame's first bytes (peeked, not
// copied) tell its event; a presence_diff is read into a buffer the member
// reuses and handed over as raw bytes, whose change markers ("meta":{"c":N)
// are found by a byte search; every other frame (presence_state, the
// replies) is skipped without being copied, except the join's reply. No
// timers, no JSON decoding, no allocation per frame once the buffer has
// grown. What it measures is what phoenixtest's client measures: the time
// just after the whole frame carrying the change was read.
type leanMember struct {
	c      net.Conn
	r      *bufio.Reader
	wmu    sync.Mutex
	wbuf   []byte
	event  []byte // the event marker of the frames handed to onDiff, e.g. leanDiffEvent
	onDiff func(b []byte, at time.Time)
	joined chan error // the outcome of the join (one value)
	done   chan struct{}
	err    error // why the reading stopped (after done)
}

// dialLeanMember opens the WebSocket by hand (no compression offered) and
// starts the member's reader, which hands the frames of event (a marker
// such as leanDiffEvent) to onDiff. The push scenario's lean clients are
// leanMembers too, handed the job pushes (leanJobEvent).
func dialLeanMember(ctx context.Context, base, token string, event []byte, onDiff func(b []byte, at time.Time)) (*leanMember, error) {
	u, err := url.Parse(phoenixtest.URL(base, token))
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("dial notifier: %w", err)
	}
	var key [16]byte
	_, _ = rand.Read(key[:])
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
		base64.StdEncoding.EncodeToString(key[:]) + "\r\n\r\n"
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, fmt.Errorf("dial notifier: %w", err)
	}
	r := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("dial notifier: upgrade: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		conn.Close()
		return nil, fmt.Errorf("dial notifier: upgrade refused (HTTP %s)", resp.Status)
	}
	_ = conn.SetDeadline(time.Time{})
	m := &leanMember{c: conn, r: r, event: event, onDiff: onDiff, joined: make(chan error, 1), done: make(chan struct{})}
	go m.read()
	return m, nil
}

// The lean member's join is ["1","1",topic,"phx_join",{}]; its reply is
// the only frame that starts with leanJoinReplyPrefix and names phx_reply.
const leanJoinRef = "1"

var (
	leanJoinReplyPrefix = []byte(`["1","1",`)
	leanDiffEvent       = []byte(`,"presence_diff",`)
	leanReplyEvent      = []byte(`,"phx_reply",`)
	leanStatusOK        = []byte(`"status":"ok"`)
	errLeanProtocol     = errors.New("lean member: unexpected WebSocket frame")
)

// leanPeek is how much of a frame is looked at to tell its event: the
// V2 frame's refs, topic and event come first.
const leanPeek = 256

func (m *leanMember) join(ctx context.Context, topic string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	frame := phoenix.AppendFrame(nil, phoenix.StrRef(leanJoinRef), phoenix.StrRef(leanJoinRef), topic, "phx_join", nil)
	if err := m.write(0x1, frame); err != nil {
		return fmt.Errorf("join %s: %w", topic, err)
	}
	select {
	case err := <-m.joined:
		if err != nil {
			return fmt.Errorf("join %s: %w", topic, err)
		}
		return nil
	case <-m.done:
		return fmt.Errorf("join %s: connection ended: %w", topic, m.err)
	case <-ctx.Done():
		return fmt.Errorf("join %s: %w", topic, ctx.Err())
	}
}

// write sends one masked client frame (RFC 6455 requires the mask; a zero
// key leaves the payload as it is, which the server accepts like any key).
func (m *leanMember) write(op byte, payload []byte) error {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	b := append(m.wbuf[:0], 0x80|op)
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, 0, 0, 0, 0)
	b = append(b, payload...)
	m.wbuf = b
	_ = m.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := m.c.Write(b)
	return err
}

// read reads frames until the connection ends.
func (m *leanMember) read() {
	err := m.readFrames()
	m.err = err
	close(m.done)
	m.c.Close()
}

func (m *leanMember) readFrames() error {
	var hdr [8]byte
	var msg []byte   // the presence_diff being read (reused)
	collect := false // the current message is a presence_diff
	joinAwaited := true
	for {
		if _, err := io.ReadFull(m.r, hdr[:2]); err != nil {
			return err
		}
		fin, op := hdr[0]&0x80 != 0, hdr[0]&0x0f
		if hdr[1]&0x80 != 0 {
			return fmt.Errorf("%w: masked by the server", errLeanProtocol)
		}
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(m.r, hdr[:2]); err != nil {
				return err
			}
			n = uint64(binary.BigEndian.Uint16(hdr[:2]))
		case 127:
			if _, err := io.ReadFull(m.r, hdr[:8]); err != nil {
				return err
			}
			n = binary.BigEndian.Uint64(hdr[:8])
		}
		if n > 1<<30 {
			return fmt.Errorf("%w: %d-byte frame", errLeanProtocol, n)
		}
		size := int(n)
		switch op {
		case 0x8: // close
			return io.EOF
		case 0x9: // ping: answer with its payload
			p := make([]byte, size)
			if _, err := io.ReadFull(m.r, p); err != nil {
				return err
			}
			if err := m.write(0xa, p); err != nil {
				return err
			}
			continue
		case 0xa: // pong
			if _, err := m.r.Discard(size); err != nil {
				return err
			}
			continue
		case 0x1, 0x2: // a message's first frame: tell its event
			peek, err := m.r.Peek(min(size, leanPeek))
			if err != nil {
				return err
			}
			collect = bytes.Contains(peek, m.event)
			msg = msg[:0]
			if joinAwaited && bytes.HasPrefix(peek, leanJoinReplyPrefix) && bytes.Contains(peek, leanReplyEvent) {
				joinAwaited = false
				if bytes.Contains(peek, leanStatusOK) {
					m.joined <- nil
				} else {
					m.joined <- fmt.Errorf("join refused: %.200s", peek)
				}
			}
		case 0x0: // continuation of the current message
		default:
			return fmt.Errorf("%w: opcode %d", errLeanProtocol, op)
		}
		if !collect {
			if _, err := m.r.Discard(size); err != nil {
				return err
			}
			continue
		}
		l := len(msg)
		msg = grow(msg, size)
		if _, err := io.ReadFull(m.r, msg[l:l+size]); err != nil {
			return err
		}
		msg = msg[:l+size]
		if fin {
			m.onDiff(msg, time.Now())
		}
	}
}

// grow makes room for n more bytes in b (keeping its length).
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, 2*(len(b)+n))
	copy(nb, b)
	return nb
}

// heartbeat sends a Phoenix heartbeat (its reply is skipped).
func (m *leanMember) heartbeat() { _ = m.write(0x1, leanHeartbeat) }

var leanHeartbeat = []byte(`[null,"hb","phoenix","heartbeat",{}]`)

// close sends a close frame and closes the connection.
func (m *leanMember) close() {
	_ = m.write(0x8, []byte{0x03, 0xe8}) // 1000, normal closure
	m.abort()
}

func (m *leanMember) abort() {
	_ = m.c.Close()
	<-m.done
}
