// Package cutproxy is a TCP forwarder for tests that can cut every
// connection at once (to its clients the server becomes unreachable, while
// other clients still reach it), restore the link, and hold the server's
// replies back (a slow link, or with a long delay a server that stopped
// answering).
package cutproxy

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/connstring"
)

// Proxy forwards connections to one target until Cut.
type Proxy struct {
	ln     net.Listener
	target string
	cut    atomic.Bool
	delay  atomic.Int64 // nanoseconds each server reply is held back
	mu     sync.Mutex
	conns  []net.Conn
	cutNow chan struct{} // closed by Cut: held-back replies are dropped
	wg     sync.WaitGroup
}

// ForURI starts a proxy to the single host of the MongoDB URI uri and
// returns it with the URI that reaches the server through it. It fails
// when uri names several hosts.
func ForURI(uri string) (*Proxy, string, error) {
	cs, err := connstring.ParseAndValidate(uri)
	if err != nil {
		return nil, "", err
	}
	if len(cs.Hosts) != 1 {
		return nil, "", fmt.Errorf("cutproxy: the URI names %d hosts, want one", len(cs.Hosts))
	}
	p, err := Start(cs.Hosts[0])
	if err != nil {
		return nil, "", err
	}
	proxied := strings.Replace(uri, cs.Hosts[0], p.Addr(), 1)
	if !strings.Contains(proxied, "directConnection") {
		switch {
		case strings.Contains(proxied, "?"):
			proxied += "&directConnection=true"
		case strings.Contains(strings.TrimPrefix(proxied, "mongodb://"), "/"):
			proxied += "?directConnection=true"
		default:
			proxied += "/?directConnection=true"
		}
	}
	return p, proxied, nil
}

// Start starts a proxy to target (host:port) on a free loopback port.
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, cutNow: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.cut.Load() {
			c.Close()
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, s, true)
		go p.pipe(s, c, false)
	}
}

// pipe copies src to dst; replies (from the server) are held back by the
// current delay, one whole message at a time.
func (p *Proxy) pipe(dst, src net.Conn, replies bool) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()
	if !replies {
		io.Copy(dst, src)
		return
	}
	// Whole wire-protocol messages, each held back once.
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(src, hdr[:]); err != nil {
			return
		}
		n := int(binary.LittleEndian.Uint32(hdr[:]))
		if n < 4 || n > 64<<20 {
			return
		}
		msg := make([]byte, n)
		copy(msg, hdr[:])
		if _, err := io.ReadFull(src, msg[4:]); err != nil {
			return
		}
		if d := time.Duration(p.delay.Load()); d > 0 {
			p.mu.Lock()
			cut := p.cutNow
			p.mu.Unlock()
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-cut:
				t.Stop()
				return
			}
		}
		if _, err := dst.Write(msg); err != nil {
			return
		}
	}
}

// Delay holds every reply from the server back for d (0: none).
func (p *Proxy) Delay(d time.Duration) { p.delay.Store(int64(d)) }

// Cut closes every connection, drops the replies held back, and refuses
// new connections until Restore.
func (p *Proxy) Cut() {
	p.cut.Store(true)
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	select {
	case <-p.cutNow:
	default:
		close(p.cutNow)
	}
	p.mu.Unlock()
}

// Restore accepts connections again after Cut; clients reconnect.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.cutNow = make(chan struct{})
	p.mu.Unlock()
	p.cut.Store(false)
}

// Close cuts and stops the proxy, and waits for its goroutines.
func (p *Proxy) Close() {
	p.Cut()
	p.ln.Close()
	p.wg.Wait()
}
