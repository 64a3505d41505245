package mongolock_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.uber.org/goleak"

	"github.com/mongolock/mongolock"
	"github.com/mongolock/mongolock/internal/cutproxy"
)

const testDB = "mongolock_test"

func TestMain(m *testing.M) {
	if os.Getenv("MONGODB_URI") == "" {
		fmt.Fprintln(os.Stderr, "mongolock tests need a server: run `make test` (embedded server), "+
			"or set MONGODB_URI to a MongoDB you can write to")
		os.Exit(1)
	}
	code := m.Run()
	printBenchTable(os.Stdout) // when benchmarks ran
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// counter counts the commands a client sends, by the driver's command
// monitor.
type counter struct {
	mu     sync.Mutex
	names  []string
	bodies []bson.Raw
	ended  func(name string) // called when a command's reply (or failure) came back
}

func (c *counter) monitor() *event.CommandMonitor {
	end := func(name string) {
		c.mu.Lock()
		f := c.ended
		c.mu.Unlock()
		if f != nil {
			f(name)
		}
	}
	return &event.CommandMonitor{
		Started: func(_ context.Context, e *event.CommandStartedEvent) {
			c.mu.Lock()
			c.names = append(c.names, e.CommandName)
			c.bodies = append(c.bodies, append(bson.Raw(nil), e.Command...))
			c.mu.Unlock()
		},
		Succeeded: func(_ context.Context, e *event.CommandSucceededEvent) { end(e.CommandName) },
		Failed:    func(_ context.Context, e *event.CommandFailedEvent) { end(e.CommandName) },
	}
}

// OnEnded has f called with the name of every command whose reply (or
// failure) comes back from now on.
func (c *counter) OnEnded(f func(name string)) {
	c.mu.Lock()
	c.ended = f
	c.mu.Unlock()
}

// Bodies returns the commands sent since the last Reset.
func (c *counter) Bodies() []bson.Raw {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]bson.Raw(nil), c.bodies...)
}

// Reset forgets the commands counted so far.
func (c *counter) Reset() {
	c.mu.Lock()
	c.names, c.bodies = nil, nil
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

// newCutProxy starts a proxy to the single host of MONGODB_URI, closed at
// the end of the test, and returns it with the URI that reaches the server
// through it. It skips the test when MONGODB_URI names several hosts.
func newCutProxy(t testing.TB) (*cutproxy.Proxy, string) {
	t.Helper()
	p, uri, err := cutproxy.ForURI(os.Getenv("MONGODB_URI"))
	if err != nil {
		t.Skipf("needs a MONGODB_URI with a single host to cut it off: %v", err)
	}
	t.Cleanup(p.Close)
	return p, uri
}

// steppedClock is a local clock whose wall time is off by a step that the
// test can change at any time (an NTP step, a resumed VM), while its
// monotonic reading runs on undisturbed.
type steppedClock struct {
	origin time.Time
	step   atomic.Int64
}

func newSteppedClock(step time.Duration) *steppedClock {
	c := &steppedClock{origin: time.Now()}
	c.step.Store(int64(step))
	return c
}

func (c *steppedClock) Step(d time.Duration)     { c.step.Store(int64(d)) }
func (c *steppedClock) Now() time.Time           { return time.Now().Add(time.Duration(c.step.Load())) }
func (c *steppedClock) Monotonic() time.Duration { return time.Since(c.origin) }

// serverNow returns the server's clock, read with hello through client.
func serverNow(t testing.TB, client *mongo.Client) time.Time {
	t.Helper()
	return hello(t, client).LocalTime
}

// helloReply is what the tests read of a hello reply.
type helloReply struct {
	LocalTime  time.Time     `bson:"localTime"`
	ElectionID bson.ObjectID `bson:"electionId"` // zero on a standalone
}

// hello runs hello through client.
func hello(t testing.TB, client *mongo.Client) helloReply {
	t.Helper()
	var reply helloReply
	if err := client.Database("admin").RunCommand(context.Background(), bson.D{{Key: "hello", Value: 1}}).Decode(&reply); err != nil {
		t.Fatal(err)
	}
	return reply
}
