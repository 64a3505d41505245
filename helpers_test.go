package mongolock_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/connstring"
	"go.uber.org/goleak"

	"github.com/mongolock/mongolock"
)

const testDB = "mongolock_test"

func TestMain(m *testing.M) {
	if os.Getenv("MONGODB_URI") == "" {
		fmt.Fprintln(os.Stderr, "mongolock tests need a server: run `make test` (embedded server), "+
			"or set MONGODB_URI to a MongoDB you can write to")
		os.Exit(1)
	}
	goleak.VerifyTestMain(m)
}

// counter counts the commands a client sends, by the driver's command
// monitor.
type counter struct {
	mu    sync.Mutex
	names []string
}

func (c *counter) monitor() *event.CommandMonitor {
	return &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		c.mu.Lock()
		c.names = append(c.names, e.CommandName)
		c.mu.Unlock()
	}}
}

// Reset forgets the commands counted so far.
func (c *counter) Reset() {
	c.mu.Lock()
	c.names = nil
	c.mu.Unlock()
}

// Commands returns the names of the commands sent since the last Reset.
func (c *counter) Commands() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.names...)
}

func (c *counter) Count() int { return len(c.Commands()) }

// connect returns a client of uri (MONGODB_URI when empty), disconnected at
// the end of the test, and the counter of its commands.
func connect(t testing.TB, uri string) (*mongo.Client, *counter) {
	t.Helper()
	if uri == "" {
		uri = os.Getenv("MONGODB_URI")
	}
	cnt := &counter{}
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetMonitor(cnt.monitor()).SetTimeout(30 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Bounded: a client cut off from the server would wait for it.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c.Disconnect(ctx)
	})
	return c, cnt
}

// collName returns a fresh collection name for one test; the collection
// is dropped at the end of the test.
func collName(t testing.TB) string {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	if len(name) > 40 {
		name = name[:40]
	}
	name += "_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		c, _ := connect(t, "")
		c.Database(testDB).Collection(name).Drop(context.Background())
	})
	return name
}

// env is one test's collection, reached by any number of clients.
type env struct {
	t    testing.TB
	coll string
}

func newEnv(t testing.TB) *env { return &env{t: t, coll: collName(t)} }

// locker returns a Locker on the test's collection through its own client
// (a separate host, as far as the lock is concerned) and its command
// counter. uri "" means MONGODB_URI.
func (e *env) locker(uri string, opts ...mongolock.Option) (*mongolock.Locker, *counter) {
	e.t.Helper()
	c, cnt := connect(e.t, uri)
	l, err := mongolock.New(c.Database(testDB).Collection(e.coll), opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { l.Close() })
	return l, cnt
}

// session returns a session of l closed at the end of the test.
func session(t testing.TB, l *mongolock.Locker, opts ...mongolock.SessionOption) *mongolock.Session {
	t.Helper()
	s, err := l.NewSession(context.Background(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// cutProxy forwards TCP connections to the test server until cut, which
// closes them all and refuses new ones: the server becomes unreachable for
// its clients only.
type cutProxy struct {
	ln     net.Listener
	target string
	cut    atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

// newCutProxy starts a proxy to the single host of MONGODB_URI and returns
// it with the URI that reaches the server through it. It skips the test
// when MONGODB_URI names several hosts.
func newCutProxy(t testing.TB) (*cutProxy, string) {
	t.Helper()
	uri := os.Getenv("MONGODB_URI")
	cs, err := connstring.ParseAndValidate(uri)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs.Hosts) != 1 {
		t.Skip("needs a MONGODB_URI with a single host to cut it off")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: cs.Hosts[0]}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	proxied := strings.Replace(uri, cs.Hosts[0], ln.Addr().String(), 1)
	if !strings.Contains(proxied, "directConnection") {
		sep := "?"
		if strings.Contains(proxied, "?") {
			sep = "&"
		} else if !strings.Contains(strings.TrimPrefix(proxied, "mongodb://"), "/") {
			sep = "/?"
		}
		proxied += sep + "directConnection=true"
	}
	return p, proxied
}

func (p *cutProxy) accept() {
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

func (p *cutProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// Cut makes the server unreachable through the proxy.
func (p *cutProxy) Cut() {
	p.cut.Store(true)
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
}

func (p *cutProxy) close() {
	p.Cut()
	p.ln.Close()
	p.wg.Wait()
}
