package chaos

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// LostAckProxy is a TCP proxy between workers and Postgres (loopback only)
// that, for every Every-th COMMIT it sees, lets the COMMIT reach the server
// but drops the server's answer: it closes both sides of the connection
// instead of forwarding the CommandComplete "COMMIT". The client then does
// not know whether its transaction committed (it did).
//
// It parses the PostgreSQL wire protocol (v3, no TLS: sslmode=disable):
// the client's untyped startup message, then typed messages both ways. A
// COMMIT is a simple Query whose text starts with "commit" (what pgx's
// Tx.Commit sends).
type LostAckProxy struct {
	Target string
	Every  int64
	// BeforeCommit, if set, is called with the connection's
	// application_name when a COMMIT arrives, before it is forwarded; if it
	// returns true, the COMMIT is not forwarded and the connection closed.
	BeforeCommit func(app string) bool
	// AfterCommit, if set, is called when the server's CommandComplete
	// COMMIT arrives, before it is forwarded; if it returns true, the answer
	// is dropped and the connection closed.
	AfterCommit func(app string) bool

	ln      net.Listener
	commits atomic.Int64
	dropped atomic.Int64
	wg      sync.WaitGroup
	conns   connSet
}

// Listen starts the proxy on a free loopback port.
func (p *LostAckProxy) Listen() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	p.ln = ln
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.serve(c)
			}()
		}
	}()
	return ln.Addr().String(), nil
}

// Dropped is the number of COMMIT answers dropped.
func (p *LostAckProxy) Dropped() int64 { return p.dropped.Load() }

// Close stops the proxy and closes every connection.
func (p *LostAckProxy) Close() {
	p.conns.closeAll()
	if p.ln != nil {
		p.ln.Close()
	}
	p.wg.Wait()
}

// connSet is a proxy's open connections, closed all at once by Close.
type connSet struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// track adds c, or reports false once the set was closed.
func (s *connSet) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

// untrack removes and closes c.
func (s *connSet) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// closeAll closes every connection; later tracks are refused.
func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
}

func (p *LostAckProxy) serve(client net.Conn) {
	if !p.conns.track(client) {
		client.Close()
		return
	}
	defer p.conns.untrack(client)
	server, err := net.DialTimeout("tcp", p.Target, 5*time.Second)
	if err != nil {
		return
	}
	if !p.conns.track(server) {
		server.Close()
		return
	}
	defer p.conns.untrack(server)
	var drop atomic.Bool // the next CommandComplete COMMIT is dropped
	var app atomic.Value // the client's application_name
	app.Store("")
	done := make(chan struct{}, 2)
	go func() { // client -> server
		defer func() { done <- struct{}{} }()
		first := true
		for {
			typ, msg, err := readMsg(client, first)
			if err != nil {
				return
			}
			if first {
				app.Store(startupParam(msg, "application_name"))
			}
			if !first && typ == 'Q' && len(msg) > 5 && bytes.HasPrefix(bytes.ToLower(msg[5:]), []byte("commit")) {
				if n := p.commits.Add(1); p.Every > 0 && n%p.Every == 0 {
					drop.Store(true)
				}
				if p.BeforeCommit != nil && p.BeforeCommit(app.Load().(string)) {
					return // the COMMIT never reaches the server
				}
			}
			first = false
			if _, err := server.Write(msg); err != nil {
				return
			}
		}
	}()
	go func() { // server -> client
		defer func() { done <- struct{}{} }()
		for {
			typ, msg, err := readMsg(server, false)
			if err != nil {
				return
			}
			if typ == 'C' && drop.Load() && len(msg) > 5 && bytes.HasPrefix(msg[5:], []byte("COMMIT")) {
				p.dropped.Add(1)
				return // the answer is lost: close both sides
			}
			if typ == 'C' && p.AfterCommit != nil && len(msg) > 5 && bytes.HasPrefix(msg[5:], []byte("COMMIT")) &&
				p.AfterCommit(app.Load().(string)) {
				return // the answer is lost: close both sides
			}
			if _, err := client.Write(msg); err != nil {
				return
			}
		}
	}()
	<-done
}

// readMsg reads one protocol message, returning its type and its bytes as
// they were on the wire. The startup message (and an SSLRequest) has no type.
func readMsg(r io.Reader, untyped bool) (byte, []byte, error) {
	if untyped {
		var hdr [4]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return 0, nil, err
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n < 4 || n > 1<<20 {
			return 0, nil, io.ErrUnexpectedEOF
		}
		msg := make([]byte, n)
		copy(msg, hdr[:])
		_, err := io.ReadFull(r, msg[4:])
		return 0, msg, err
	}
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n < 4 || n > 1<<30 {
		return 0, nil, io.ErrUnexpectedEOF
	}
	msg := make([]byte, 1+n)
	copy(msg, hdr[:])
	_, err := io.ReadFull(r, msg[5:])
	return hdr[0], msg, err
}

// startupParam is the value of parameter name in a startup message (length,
// protocol version, then NUL-terminated name and value pairs), or "".
func startupParam(msg []byte, name string) string {
	if len(msg) < 8 {
		return ""
	}
	parts := bytes.Split(msg[8:], []byte{0})
	for i := 0; i+1 < len(parts); i += 2 {
		if string(parts[i]) == name {
			return string(parts[i+1])
		}
	}
	return ""
}
