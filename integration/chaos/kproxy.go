package chaos

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Kafka API keys the proxy looks for.
const (
	apiEndTxn          int16 = 26
	apiTxnOffsetCommit int16 = 28
)

// KafkaProxy is a TCP proxy of the suite's own between one worker and the
// brokers (loopback only): one listener per broker, so it knows which broker
// every request goes to, and one proxy per worker, so it knows whose it is.
// The worker dials through it (the worker's -dial-via flag installs a
// kgo.Dialer mapping each broker address to its listener), so the brokers'
// advertised addresses in Metadata need no rewriting.
//
// It understands only Kafka's framing: every message is a 4-byte big-endian
// size and its bytes; a request's header starts with its api key (int16),
// api version (int16) and correlation id (int32), a response's with the
// correlation id. It remembers the api key of each request it cares about by
// correlation id, per connection, and never decodes a body.
type KafkaProxy struct {
	Targets []string // broker addresses, in node order (node id = index+1)
	// DropEndTxnEvery > 0 drops the response to every DropEndTxnEvery-th
	// EndTxn request (the request reaches the broker) and closes the
	// client's connection instead: a lost acknowledgement.
	DropEndTxnEvery int64
	// DropFor > 0 keeps dropping: after a dropped answer, every EndTxn
	// answer (the client's retries) is dropped for this long, so that the
	// client cannot learn the outcome before its deadline.
	DropFor time.Duration
	// OnRequest, if set, is called after a request with one of the api keys
	// above was forwarded to Targets[target], before the next request of
	// that connection is read. It may block (e.g. to kill the broker).
	OnRequest func(target int, apiKey int16)
	// Log, if set, logs every dropped answer.
	Log func(format string, args ...any)

	endTxns atomic.Int64
	until   atomic.Int64 // unix ns: drop every EndTxn answer until then
	dropped atomic.Int64
	lns     []net.Listener
	addrs   []string
	wg      sync.WaitGroup
	conns   connSet
}

// Listen starts one listener per target on free loopback ports and returns
// their addresses, in the order of Targets.
func (p *KafkaProxy) Listen() ([]string, error) {
	for i := range p.Targets {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("kafka proxy for %s: %w", p.Targets[i], err)
		}
		p.lns = append(p.lns, ln)
		p.addrs = append(p.addrs, ln.Addr().String())
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
					p.serve(c, i)
				}()
			}
		}()
	}
	return append([]string(nil), p.addrs...), nil
}

// DialVia is the worker's -dial-via value: broker=listener pairs.
func (p *KafkaProxy) DialVia() string {
	s := ""
	for i, a := range p.addrs {
		if i > 0 {
			s += ","
		}
		s += p.Targets[i] + "=" + a
	}
	return s
}

// EndTxns is the number of EndTxn requests forwarded.
func (p *KafkaProxy) EndTxns() int64 { return p.endTxns.Load() }

// Dropped is the number of EndTxn responses dropped.
func (p *KafkaProxy) Dropped() int64 { return p.dropped.Load() }

// Close stops the listeners and closes every connection.
func (p *KafkaProxy) Close() {
	p.conns.closeAll()
	for _, ln := range p.lns {
		ln.Close()
	}
	p.wg.Wait()
}

func (p *KafkaProxy) serve(client net.Conn, target int) {
	if !p.conns.track(client) {
		client.Close()
		return
	}
	defer p.conns.untrack(client)
	server, err := net.DialTimeout("tcp", p.Targets[target], 5*time.Second)
	if err != nil {
		return // the broker is down: the client sees a closed connection
	}
	if !p.conns.track(server) {
		server.Close()
		return
	}
	defer p.conns.untrack(server)
	var (
		mu      sync.Mutex
		pending = map[int32]bool{} // correlation id -> drop its response
	)
	done := make(chan struct{}, 2)
	go func() { // client -> server
		defer func() { done <- struct{}{} }()
		for {
			msg, err := readKafkaFrame(client)
			if err != nil {
				return
			}
			key := int16(-1)
			if len(msg) >= 12 {
				key = int16(binary.BigEndian.Uint16(msg[4:6]))
			}
			if key == apiEndTxn {
				n := p.endTxns.Add(1)
				if p.DropEndTxnEvery > 0 && n%p.DropEndTxnEvery == 0 || time.Now().UnixNano() < p.until.Load() {
					mu.Lock()
					pending[int32(binary.BigEndian.Uint32(msg[8:12]))] = true
					mu.Unlock()
				}
			}
			if _, err := server.Write(msg); err != nil {
				return
			}
			if (key == apiEndTxn || key == apiTxnOffsetCommit) && p.OnRequest != nil {
				p.OnRequest(target, key)
			}
		}
	}()
	go func() { // server -> client
		defer func() { done <- struct{}{} }()
		for {
			msg, err := readKafkaFrame(server)
			if err != nil {
				return
			}
			if len(msg) >= 8 {
				corr := int32(binary.BigEndian.Uint32(msg[4:8]))
				mu.Lock()
				drop := pending[corr]
				delete(pending, corr)
				mu.Unlock()
				if drop {
					p.dropped.Add(1)
					if p.DropFor > 0 && time.Now().UnixNano() >= p.until.Load() {
						p.until.Store(time.Now().Add(p.DropFor).UnixNano())
					}
					if p.Log != nil {
						p.Log("dropped the answer to EndTxn (correlation id %d) from %s; closing the connection", corr, p.Targets[target])
					}
					return // the answer is lost: close both sides
				}
			}
			if _, err := client.Write(msg); err != nil {
				return
			}
		}
	}()
	<-done
	client.Close() // ends the other direction too
	server.Close()
	<-done
}

// readKafkaFrame reads one size-prefixed Kafka message and returns it as it
// was on the wire (size included).
func readKafkaFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > 1<<30 {
		return nil, fmt.Errorf("kafka frame of %d bytes: not Kafka", n)
	}
	msg := make([]byte, 4+n)
	copy(msg, hdr[:])
	_, err := io.ReadFull(r, msg[4:])
	return msg, err
}
