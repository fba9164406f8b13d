package testkit

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Freezer is a kgo dialer (pass f.Dial to kgo.Dialer) whose connections can
// be frozen, as if the client's process had been stopped (SIGSTOP, a long GC
// pause) or its network had stalled:
//
//   - reads block until Thaw, so nothing the brokers answer reaches the
//     client;
//   - writes are held and delivered, in order, at Thaw — like bytes that sat
//     in a socket buffer — even if the client gave up on them meanwhile or
//     closed the connection;
//   - dials block until Thaw.
//
// Heartbeats then stop reaching the group coordinator, so the group expires
// the client after its session timeout while the client goes on believing
// it owns its partitions; its requests written while frozen reach the
// brokers late, after its replacement took over. FreezeAt freezes at an
// exact request (the zombie's EndTxn), which makes the zombie scenario
// deterministic on kfake and on a real broker alike.
type Freezer struct {
	d net.Dialer

	mu      sync.Mutex
	frozen  bool
	thawed  chan struct{} // closed by Thaw; replaced by Freeze
	conns   map[*freezableConn]struct{}
	trigger func(kmsg.Request) bool
	fired   chan struct{}
	held    kmsg.Request // the request that fired the trigger
}

// NewFreezer returns a Freezer that is not frozen.
func NewFreezer() *Freezer {
	return &Freezer{thawed: make(chan struct{}), conns: map[*freezableConn]struct{}{}}
}

// Freeze freezes every connection dialed through f until Thaw.
func (f *Freezer) Freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.freezeLocked()
}

func (f *Freezer) freezeLocked() {
	if !f.frozen {
		f.frozen = true
		f.thawed = make(chan struct{})
	}
}

// FreezeAt arms a one-shot trigger: the first request written through f for
// which match returns true freezes f before it is sent, and is held with the
// other writes until Thaw. The returned channel is closed when that
// happens; Held then returns the request.
func (f *Freezer) FreezeAt(match func(kmsg.Request) bool) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.trigger = match
	f.fired = make(chan struct{})
	return f.fired
}

// Held is the request that fired the trigger of FreezeAt, nil before.
func (f *Freezer) Held() kmsg.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held
}

// Thaw delivers every held write, releases blocked reads and dials, and
// closes the connections the client closed while frozen. Safe to call when
// not frozen and more than once.
func (f *Freezer) Thaw() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.frozen {
		return
	}
	for c := range f.conns {
		c.flushLocked()
	}
	f.frozen = false
	close(f.thawed)
}

// Dial dials like a net.Dialer, but waits for Thaw while f is frozen.
func (f *Freezer) Dial(ctx context.Context, network, host string) (net.Conn, error) {
	for {
		f.mu.Lock()
		frozen, thawed := f.frozen, f.thawed
		f.mu.Unlock()
		if !frozen {
			break
		}
		select {
		case <-thawed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c, err := f.d.DialContext(ctx, network, host)
	if err != nil {
		return nil, err
	}
	fc := &freezableConn{Conn: c, f: f, closed: make(chan struct{})}
	f.mu.Lock()
	f.conns[fc] = struct{}{}
	f.mu.Unlock()
	return fc, nil
}

type freezableConn struct {
	net.Conn
	f *Freezer

	// Guarded by f.mu.
	held       [][]byte
	closedUser bool          // the client closed it
	closed     chan struct{} // closed when the client closed it
}

// flushLocked writes the held bytes, and closes the connection if the
// client closed it meanwhile. f.mu is held.
func (c *freezableConn) flushLocked() {
	for _, b := range c.held {
		if _, err := c.Conn.Write(b); err != nil {
			break
		}
	}
	c.held = nil
	if c.closedUser {
		_ = c.Conn.Close()
		delete(c.f.conns, c)
	}
}

func (c *freezableConn) Read(b []byte) (int, error) {
	for {
		c.f.mu.Lock()
		frozen, thawed := c.f.frozen, c.f.thawed
		c.f.mu.Unlock()
		if !frozen {
			return c.Conn.Read(b)
		}
		select {
		case <-thawed:
		case <-c.closed:
			return 0, net.ErrClosed
		}
	}
}

func (c *freezableConn) Write(b []byte) (int, error) {
	f := c.f
	f.mu.Lock()
	if c.closedUser {
		f.mu.Unlock()
		return 0, net.ErrClosed
	}
	if !f.frozen && f.trigger != nil {
		if req, err := parseRequest(b); err == nil && f.trigger(req) {
			f.trigger = nil
			f.held = req
			f.freezeLocked()
			close(f.fired)
		}
	}
	if f.frozen {
		c.held = append(c.held, append([]byte(nil), b...))
		f.mu.Unlock()
		return len(b), nil
	}
	f.mu.Unlock()
	return c.Conn.Write(b)
}

// Close releases a read blocked on the connection at once; while frozen,
// the connection itself is closed at Thaw, after its held writes.
func (c *freezableConn) Close() error {
	f := c.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.closedUser {
		return nil
	}
	c.closedUser = true
	close(c.closed)
	if f.frozen && len(c.held) > 0 {
		return nil
	}
	delete(f.conns, c)
	return c.Conn.Close()
}

// parseRequest decodes one Kafka request as kgo writes it: a size, the
// request header (key, version, correlation id, client id, and tagged
// fields for flexible versions), the body.
func parseRequest(b []byte) (kmsg.Request, error) {
	if len(b) < 14 {
		return nil, errors.New("short request")
	}
	b = b[4:]
	key := int16(binary.BigEndian.Uint16(b))
	version := int16(binary.BigEndian.Uint16(b[2:]))
	b = b[8:] // key, version, correlation id
	if n := int16(binary.BigEndian.Uint16(b)); n > 0 {
		if len(b) < 2+int(n) {
			return nil, errors.New("short client id")
		}
		b = b[2+int(n):]
	} else {
		b = b[2:]
	}
	req := kmsg.RequestForKey(key)
	if req == nil {
		return nil, fmt.Errorf("unknown request key %d", key)
	}
	req.SetVersion(version)
	if req.IsFlexible() {
		tags, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, errors.New("bad tagged fields")
		}
		b = b[n:]
		for range tags {
			if _, n = binary.Uvarint(b); n <= 0 {
				return nil, errors.New("bad tag")
			}
			b = b[n:]
			size, n := binary.Uvarint(b)
			if n <= 0 || uint64(len(b)-n) < size {
				return nil, errors.New("bad tag size")
			}
			b = b[n+int(size):]
		}
	}
	if err := req.ReadFrom(b); err != nil {
		return nil, err
	}
	return req, nil
}
