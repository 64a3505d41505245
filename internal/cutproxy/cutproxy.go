// Package cutproxy is a TCP forwarder for tests that can cut every
// connection at once: to its clients the server becomes unreachable, while
// other clients still reach it.
package cutproxy

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/connstring"
)

// Proxy forwards connections to one target until Cut.
type Proxy struct {
	ln     net.Listener
	target string
	cut    atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
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
	p := &Proxy{ln: ln, target: target}
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
		go p.pipe(c, s)
		go p.pipe(s, c)
	}
}

func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// Cut closes every connection and refuses new ones.
func (p *Proxy) Cut() {
	p.cut.Store(true)
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
}

// Close cuts and stops the proxy, and waits for its goroutines.
func (p *Proxy) Close() {
	p.Cut()
	p.ln.Close()
	p.wg.Wait()
}
