package mongolock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mopt "go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/mongolock/mongolock/internal/cutproxy"
)

// internalColl returns a fresh collection on MONGODB_URI, dropped at the
// end of the test.
func internalColl(t *testing.T) *mongo.Collection {
	t.Helper()
	return internalCollMonitored(t, nil)
}

// internalCollMonitored is internalColl on a client whose commands mon
// sees (nil: none).
func internalCollMonitored(t *testing.T, mon *event.CommandMonitor) *mongo.Collection {
	t.Helper()
	c, err := mongo.Connect(mopt.Client().ApplyURI(os.Getenv("MONGODB_URI")).SetTimeout(30 * time.Second).SetMonitor(mon))
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	rand.Read(b[:])
	coll := c.Database("mongolock_test").Collection("internal_" + hex.EncodeToString(b[:]))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		coll.Drop(ctx)
		c.Disconnect(ctx)
	})
	return coll
}

func internalLocker(t *testing.T, coll *mongo.Collection, opts ...Option) *Locker {
	t.Helper()
	l, err := New(coll, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestUnlockRacingKeepalive: a keepalive tick that runs after the server
// freed the lock for an Unlock, and before the Unlock saw the reply, does
// not report a loss: Unlock returns nil and Err stays nil.
func TestUnlockRacingKeepalive(t *testing.T) {
	// The tick runs when the release's reply reaches the driver, before
	// Unlock sees it: the first update answered once armed.
	var armed atomic.Bool
	var s *Session
	mon := &event.CommandMonitor{Succeeded: func(_ context.Context, e *event.CommandSucceededEvent) {
		if e.CommandName == "update" && armed.CompareAndSwap(true, false) {
			s.renew()
		}
	}}
	l := internalLocker(t, internalCollMonitored(t, mon))
	ctx := context.Background()
	var err error
	// No tick of its own in the test's time: the first update answered
	// once armed is the release's.
	s, err = l.NewSession(ctx, WithTTL(time.Minute), WithRenewInterval(25*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := s.NewMutex("race")
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	if err := m.Unlock(); err != nil {
		t.Fatalf("Unlock racing a keepalive tick: %v", err)
	}
	if armed.Load() {
		t.Fatal("no keepalive tick ran between the release's reply and Unlock's return")
	}
	if err := m.Err(); err != nil {
		t.Fatalf("Err after Unlock racing a keepalive tick: %v", err)
	}
}

// TestIsFreeLockWithinClockError: inside the window where a taker would
// not yet count an expired lease as over (its clock's error), IsFreeLock,
// IsUsedLock and Status say held, as GetLock acts.
func TestIsFreeLockWithinClockError(t *testing.T) {
	coll := internalColl(t)
	other := internalLocker(t, coll)
	l := internalLocker(t, coll)
	ctx := context.Background()
	if _, err := l.IsFreeLock(ctx, "w"); err != nil { // measures
		t.Fatal(err)
	}
	l.clock.mu.Lock()
	l.clock.rtt = 20 * time.Second // an error bound of 10s
	l.clock.mu.Unlock()
	if err := other.GetLock(ctx, "w", "alice", 0, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for free := false; !free; time.Sleep(20 * time.Millisecond) { // expired for a tight clock
		free, _ = other.IsFreeLock(ctx, "w")
	}
	free, err := l.IsFreeLock(ctx, "w")
	if err != nil {
		t.Fatal(err)
	}
	getErr := l.GetLock(ctx, "w", "bob", 0, time.Second)
	if free != (getErr == nil) {
		t.Fatalf("IsFreeLock = %v but GetLock = %v", free, getErr)
	}
	if st, _ := l.Status(ctx, "w"); st.Held == free {
		t.Fatalf("Status.Held = %v, IsFreeLock = %v", st.Held, free)
	}
}

// TestHoldDeadlineUsesErrorAtSend: a hold's deadline allows for the
// clock's error known when its acquire was sent, not for a tighter one
// measured while the reply was on its way (the times written were off by
// the error at sending).
func TestHoldDeadlineUsesErrorAtSend(t *testing.T) {
	proxy, uri, err := cutproxy.ForURI(os.Getenv("MONGODB_URI"))
	if err != nil {
		t.Skip(err)
	}
	defer proxy.Close()
	c, err := mongo.Connect(mopt.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(context.Background())
	l := internalLocker(t, c.Database("mongolock_test").Collection(internalColl(t).Name()))
	ctx := context.Background()
	s, err := l.NewSession(ctx, WithTTL(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	setRTT := func(d time.Duration) {
		l.clock.mu.Lock()
		l.clock.rtt = d
		l.clock.mu.Unlock()
	}
	setRTT(4 * time.Second) // an error of 2s when the acquire is sent
	proxy.Delay(300 * time.Millisecond)
	go func() {
		time.Sleep(100 * time.Millisecond)
		setRTT(2 * time.Millisecond) // tight by the time the reply comes
	}()
	m := s.NewMutex("n")
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	proxy.Delay(0)
	h := m.hold()
	s.mu.Lock()
	left := time.Until(h.life.validUntil)
	s.mu.Unlock()
	if most := 20*time.Second - safetyMargin(20*time.Second) - 2*time.Second; left > most {
		t.Fatalf("the hold believes in %v more, beyond TTL - margin - the error at sending (%v)", left, most)
	}
	m.Unlock()
}

// TestWaiterPassesNews: a head told that the lock may be free gives up
// (its ctx ends) before trying: the news goes to the next waiter, which
// tries at once instead of at its next poll (an hour away here).
func TestWaiterPassesNews(t *testing.T) {
	f := &fakeLink{now: time.Unix(1e9, 0), delays: [][2]time.Duration{{0, 0}}}
	clock := newServerClock(f, standalone(f.hello), 0)
	clock.Ensure(context.Background())
	r := newWaitRegistry(options{pollInterval: time.Hour, safetyPoll: time.Hour, window: defaultWindow}, clock, nil)
	headCtx, cancelHead := context.WithCancel(context.Background())
	headTried := make(chan struct{}, 10)
	headDone := make(chan error, 1)
	go func() {
		headDone <- runWait(headCtx, r, nil, "n", attempt{try: func(context.Context) (bool, error) {
			headTried <- struct{}{}
			return false, nil
		}}, nil, nil)
	}()
	<-headTried // the head tried once and waits
	nextTried := make(chan struct{}, 10)
	nextDone := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		nextDone <- runWait(ctx, r, nil, "n", attempt{try: func(context.Context) (bool, error) {
			nextTried <- struct{}{}
			return true, nil
		}}, nil, nil)
	}()
	for { // the second waiter is queued
		r.mu.Lock()
		n := len(r.names["n"].waiters)
		r.mu.Unlock()
		if n == 2 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancelHead()
	r.wake("n") // the news reaches the head as it gives up
	<-headDone
	select {
	case <-nextTried:
	case <-time.After(10 * time.Second):
		t.Fatal("the news that the lock may be free was lost with the head that gave up")
	}
	if err := <-nextDone; err != nil {
		t.Fatal(err)
	}
}

// TestWatcherResumesFromLatestToken: a stream that ends after moving its
// resume token past the last event it passed (the server's
// postBatchResumeToken) is resumed from that token.
func TestWatcherResumesFromLatestToken(t *testing.T) {
	transient := mongo.CommandError{Code: 6, Name: "HostUnreachable", Labels: []string{"ResumableChangeStreamError"}}
	sc := &script{streams: [][]step{
		{{op: "update", name: "a"}, {token: "later", err: transient}},
		{{op: "update", name: "b"}},
	}}
	rec := newRecorder()
	w := newTestWatcher(sc, rec, nil)
	w.want()
	rec.waitFor(t, 6)
	w.close()
	if opens := sc.openedWith(); len(opens) < 2 || opens[1] != "later" {
		t.Fatalf("opened with tokens %q, want a resume from the stream's latest token", opens)
	}
}

// TestWatcherCloseBounded: closing the stream (killCursors) when the
// server does not answer does not hold up Locker.Close.
func TestWatcherCloseBounded(t *testing.T) {
	sc := &script{hangClose: true, streams: [][]step{{{op: "update", name: "a"}}}}
	rec := newRecorder()
	w := newTestWatcher(sc, rec, nil)
	w.want()
	rec.waitFor(t, 3)
	done := make(chan struct{})
	go func() { w.close(); close(done) }()
	select {
	case <-done:
	case <-time.After(4 * streamCloseTimeout):
		t.Fatal("watcher.close waited for a server that does not answer")
	}
}

// TestNewsNeverPutsOffThePoll: while the stream runs, news of acquires by
// others (each wakes the head to reconsider its timer) must not put its
// safety poll off for ever: with a 200ms safety interval and an acquire
// seen every 50ms, the head still polls. (A poll also repairs this
// process's place among the waiting ones.)
func TestNewsNeverPutsOffThePoll(t *testing.T) {
	f := &fakeLink{now: time.Unix(1e9, 0), delays: [][2]time.Duration{{0, 0}}}
	clock := newServerClock(f, standalone(f.hello), 0)
	clock.Ensure(context.Background())
	r := newWaitRegistry(options{pollInterval: 200 * time.Millisecond, safetyPoll: 200 * time.Millisecond, window: defaultWindow}, clock, nil)
	r.streaming(true)
	tries := make(chan struct{}, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runWait(ctx, r, nil, "n", attempt{try: func(context.Context) (bool, error) {
			tries <- struct{}{}
			return false, nil
		}}, nil, nil)
	}()
	<-tries // the first attempt
	stop := time.After(2 * time.Second)
	polled := false
	for !polled {
		select {
		case <-tries:
			polled = true
		case <-time.After(50 * time.Millisecond):
			r.taken("n", time.Time{}, false) // another process took it (lease end unknown)
		case <-stop:
			cancel()
			<-done
			t.Fatal("no poll in 2s of news, with a 200ms safety interval")
		}
	}
	cancel()
	<-done
}

// TestEagerTriesWhenTaken: a new head does not try while the stream's
// news says another holds the lock, except an eager one (the seed API,
// whose owner may take its own lock again).
func TestEagerTriesWhenTaken(t *testing.T) {
	f := &fakeLink{now: time.Unix(1e9, 0), delays: [][2]time.Duration{{0, 0}}}
	clock := newServerClock(f, standalone(f.hello), 0)
	clock.Ensure(context.Background())
	r := newWaitRegistry(options{pollInterval: time.Hour, safetyPoll: time.Hour, window: defaultWindow}, clock, nil)
	r.streaming(true)
	r.mu.Lock()
	q := r.queue("n")
	q.observers = append(q.observers, make(chan struct{}, 1)) // keeps the queue
	r.mu.Unlock()
	r.taken("n", clock.Now().Add(time.Hour), false) // the stream: taken, lease for an hour
	for _, eager := range []bool{false, true} {
		tried := make(chan struct{}, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		runWait(ctx, r, nil, "n", attempt{eager: eager, try: func(context.Context) (bool, error) {
			tried <- struct{}{}
			return true, nil
		}}, nil, nil)
		cancel()
		select {
		case <-tried:
			if !eager {
				t.Fatal("a new head tried although the stream said the lock is taken")
			}
		default:
			if eager {
				t.Fatal("an eager head did not try")
			}
		}
	}
}
