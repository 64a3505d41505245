package mongotest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

const (
	opMsg          = 2013
	flagChecksum   = 1 << 0
	flagMoreToCome = 1 << 1
	headerLen      = 16
	maxMessageLen  = 48 << 20 // MongoDB's maxMessageSizeBytes
)

// proxy accepts client connections and forwards each wire-protocol message
// to the backend, holding one lock from the moment a request is sent until
// its reply has been read: the backend sees one command at a time.
type proxy struct {
	ln      net.Listener
	backend func() string // current backend address

	serial  sync.Mutex // held for one request/reply exchange
	streams *streams   // change streams served here; nil when off
	member  *member    // what hello says of the server (member.go)
	faults  faults     // injected by tests (faults.go)

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	cut   bool
	delay time.Duration
	wg    sync.WaitGroup
	done  chan struct{}
}

func newProxy(addr string, backend func() string) (*proxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("mongotest: listen %s: %w", addr, err)
	}
	p := &proxy{ln: ln, backend: backend, member: newMember(), conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(c)
	}
}

// serve forwards the messages of one client connection over its own
// backend connection.
func (p *proxy) serve(client net.Conn) {
	defer p.wg.Done()
	defer p.forget(client)
	server, err := net.DialTimeout("tcp", p.backend(), 5*time.Second)
	if err != nil {
		return
	}
	p.track(server)
	defer p.forget(server)
	for {
		req, err := readMessage(client)
		if err != nil {
			return
		}
		body, name := command(req)
		if isHello(name) {
			if !p.awaitHello(body) {
				return
			}
			req = withoutExhaust(req)
		}
		var out []byte
		var after func()
		handled := false
		if name == "mongotest" {
			var res bson.D
			res, after = p.control(body)
			out, handled = reply(req, res), true
		}
		if refused, ok := p.faults.refusal(); ok && !handled && name == "aggregate" && isChangeStream(body) {
			out, handled = reply(req, refused), true
		}
		if p.streams != nil && body != nil && !handled {
			out, handled = p.streams.handle(req, body, name)
		}
		if !handled {
			if p.streams != nil && body != nil && replacement(req, body, name) {
				out, err = p.streams.replaced(func() ([]byte, error) { return p.exchangeHeld(server, req) })
			} else {
				out, err = p.exchange(server, req)
			}
			if err != nil {
				return
			}
			if p.streams != nil && body != nil && out != nil {
				p.streams.wrote(body, name, out)
			}
			if out != nil {
				out = p.answer(req, name, out)
			}
		}
		if out == nil {
			continue // moreToCome: the server sends no reply
		}
		if d := p.replyDelay(); d > 0 {
			select {
			case <-time.After(d):
			case <-p.done:
				return
			}
		}
		if _, err := client.Write(out); err != nil {
			return
		}
		if after != nil {
			after()
		}
	}
}

// awaitHello holds an awaitable hello until the server's state changes or
// its time runs out, as MongoDB does (member.awaitable); it reports false
// when the proxy closes meanwhile.
func (p *proxy) awaitHello(body bson.Raw) bool {
	wait, changed, ok := p.member.awaitable(body)
	if !ok {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-changed:
	case <-p.done:
		return false
	}
	return true
}

// answer is the reply the client gets to a command FerretDB answered: a
// hello as this member's, a write as a fault may have it.
func (p *proxy) answer(req []byte, name string, answer []byte) []byte {
	if isHello(name) {
		return p.member.hello(req, answer)
	}
	if failed, ok := p.faults.writeFailure(name, answer, p.member); ok {
		return reply(req, failed)
	}
	return answer
}

// exchange sends one request and reads its reply under the serial lock.
func (p *proxy) exchange(server net.Conn, req []byte) ([]byte, error) {
	p.serial.Lock()
	defer p.serial.Unlock()
	return p.exchangeHeld(server, req)
}

// exchangeHeld is exchange with the serial lock held.
func (p *proxy) exchangeHeld(server net.Conn, req []byte) ([]byte, error) {
	if moreToCome(req) {
		return nil, p.unacknowledged(server, req)
	}
	if _, err := server.Write(req); err != nil {
		return nil, err
	}
	return readMessage(server)
}

// unacknowledged sends a request the client wants no reply to (a write
// with w:0) as one that has a reply, which it reads and drops: so that the
// serial lock covers the command until it is done, as every other one.
func (p *proxy) unacknowledged(server net.Conn, req []byte) error {
	flags := binary.LittleEndian.Uint32(req[16:])
	if flags&flagChecksum != 0 { // the checksum covers the flags: sent as is
		_, err := server.Write(req)
		return err
	}
	acked := append([]byte(nil), req...)
	binary.LittleEndian.PutUint32(acked[16:], flags&^flagMoreToCome)
	if _, err := server.Write(acked); err != nil {
		return err
	}
	_, err := readMessage(server)
	return err
}

// withoutExhaust clears the exhaustAllowed flag of a request: mongotest
// answers an awaitable hello once, which drivers accept (they send the
// next one), and FerretDB does not serve exhaust.
func withoutExhaust(msg []byte) []byte {
	const flagExhaustAllowed = 1 << 16
	if len(msg) < headerLen+4 || binary.LittleEndian.Uint32(msg[12:]) != opMsg {
		return msg
	}
	flags := binary.LittleEndian.Uint32(msg[16:])
	if flags&flagExhaustAllowed == 0 || flags&flagChecksum != 0 {
		return msg
	}
	out := append([]byte(nil), msg...)
	binary.LittleEndian.PutUint32(out[16:], flags&^flagExhaustAllowed)
	return out
}

func moreToCome(msg []byte) bool {
	if len(msg) < headerLen+4 || binary.LittleEndian.Uint32(msg[12:]) != opMsg {
		return false
	}
	return binary.LittleEndian.Uint32(msg[16:])&flagMoreToCome != 0
}

// readMessage reads one whole message by its length prefix.
func readMessage(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if n < headerLen || n > maxMessageLen {
		return nil, errors.New("mongotest: bad message length")
	}
	msg := make([]byte, n)
	copy(msg, hdr[:])
	if _, err := io.ReadFull(r, msg[4:]); err != nil {
		return nil, err
	}
	return msg, nil
}

func (p *proxy) track(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		c.Close()
	}
	p.conns[c] = struct{}{}
}

func (p *proxy) forget(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *proxy) replyDelay() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay
}

// setCut closes every open connection when on, and refuses new ones until
// it is switched off again.
func (p *proxy) setCut(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = on
	if on {
		p.closeAllLocked()
	}
}

func (p *proxy) dropAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeAllLocked()
}

func (p *proxy) closeAllLocked() {
	for c := range p.conns {
		c.Close()
	}
}

func (p *proxy) setDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

func (p *proxy) close() {
	close(p.done)
	p.ln.Close()
	p.dropAll()
	p.wg.Wait()
	if p.streams != nil {
		p.streams.close()
	}
}
