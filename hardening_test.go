package mongolock_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/mongolock/mongolock"
	"github.com/mongolock/mongolock/internal/cutproxy"
)

// Regression tests of the hardening issue: each looks at the holder's side
// of a handoff, a slow or cut link, or a stepping clock.

// handoffPair returns a Locker whose link to the server goes through a
// proxy (to slow its replies), and one of another client that polls
// quickly, on one test collection.
func handoffPair(t *testing.T) (*cutproxy.Proxy, *mongolock.Locker, *mongolock.Locker) {
	e := newEnv(t)
	proxy, uri := newCutProxy(t)
	slow, _ := e.locker(uri)
	fast, _ := e.locker("", mongolock.WithPollInterval(10*time.Millisecond))
	return proxy, slow, fast
}

// TestUnlockEndsHoldBeforeRelease: the holder's replies come 400ms late;
// when another session's Lock returns after the holder's Unlock, the
// holder's Done must already be closed.
func TestUnlockEndsHoldBeforeRelease(t *testing.T) {
	proxy, slow, fast := handoffPair(t)
	ctx := ctxT(t, time.Minute)
	hm := session(t, slow).NewMutex("handoff")
	if err := hm.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	waiter := session(t, fast).NewMutex("handoff")
	locked := make(chan bool, 1) // whether the holder's Done was closed then
	go func() {
		if err := waiter.Lock(ctx); err != nil {
			t.Error(err)
		}
		select {
		case <-hm.Done():
			locked <- true
		default:
			locked <- false
		}
	}()
	time.Sleep(100 * time.Millisecond) // the waiter polls
	proxy.Delay(400 * time.Millisecond)
	if err := hm.Unlock(); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if !<-locked {
		t.Fatal("another session held the lock while the holder's Done was still open")
	}
	if err := hm.Err(); err != nil {
		t.Fatalf("Err after Unlock = %v, want nil", err)
	}
	proxy.Delay(0)
	waiter.Unlock()
}

// TestResignEndsLeadershipBeforeRelease: the same for an election, seen by
// another session's Campaign and by an Observe.
func TestResignEndsLeadershipBeforeRelease(t *testing.T) {
	proxy, slow, fast := handoffPair(t)
	ctx := ctxT(t, time.Minute)
	leader := session(t, slow).NewElection("lead")
	if err := leader.Campaign(ctx, "first"); err != nil {
		t.Fatal(err)
	}
	other := session(t, fast).NewElection("lead")
	octx, cancel := context.WithCancel(ctx)
	defer cancel()
	observed := other.Observe(octx)
	if v := <-observed; v != "first" {
		t.Fatalf("observed %q, want first", v)
	}
	var wg sync.WaitGroup
	check := func(what string, wait func() error) {
		defer wg.Done()
		if err := wait(); err != nil {
			t.Error(what, err)
			return
		}
		select {
		case <-leader.Done():
		default:
			t.Errorf("%s: a new leader while the old one's Done was still open", what)
		}
	}
	wg.Add(2)
	go check("Campaign", func() error { return other.Campaign(ctx, "second") })
	go check("Observe", func() error {
		for v := range observed {
			if v == "second" {
				return nil
			}
		}
		return errors.New("Observe ended")
	})
	time.Sleep(100 * time.Millisecond)
	proxy.Delay(400 * time.Millisecond)
	if err := leader.Resign(ctx); err != nil {
		t.Fatalf("Resign: %v", err)
	}
	wg.Wait()
	proxy.Delay(0)
}

// TestLostLeaseRunsOutOnServer: a holder cut off from the server loses its
// hold; when the link comes back the moment Done closes, the lock is not
// freed early: another session takes it no earlier than the lost lease's
// end, so that the margin is left to the holder's work to stop.
func TestLostLeaseRunsOutOnServer(t *testing.T) {
	e := newEnv(t)
	proxy, uri := newCutProxy(t)
	cut, _ := e.locker(uri)
	other, _ := e.locker("", mongolock.WithPollInterval(10*time.Millisecond))
	ctx := ctxT(t, time.Minute)
	hm := session(t, cut, mongolock.WithTTL(4*time.Second), mongolock.WithRenewInterval(500*time.Millisecond)).NewMutex("lost")
	if err := hm.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	waiter := session(t, other).NewMutex("lost")
	got := make(chan error, 1)
	go func() { got <- waiter.Lock(ctx) }()
	proxy.Cut()
	<-hm.Done()
	lost, err := other.Status(ctx, "lost") // the holder can write nothing now
	if err != nil {
		t.Fatal(err)
	}
	proxy.Restore()
	if !errors.Is(hm.Err(), mongolock.ErrLockLost) {
		t.Fatalf("Err = %v, want ErrLockLost", hm.Err())
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	taken, err := other.Status(ctx, "lost")
	if err != nil {
		t.Fatal(err)
	}
	if taken.AcquiredAt.Before(lost.ExpiresAt) {
		t.Fatalf("taken over at %v, %v before the lost lease's end", taken.AcquiredAt, lost.ExpiresAt.Sub(taken.AcquiredAt))
	}
	waiter.Unlock()
}

// TestWallClockSteps: a client whose wall clock steps by +15s neither
// takes nor calls free a live lease, and one whose clock steps by -15s
// writes full leases.
func TestWallClockSteps(t *testing.T) {
	e := newEnv(t)
	clock := newSteppedClock(0)
	stepped, _ := e.locker("", mongolock.WithClock(clock))
	honest, _ := e.locker("")
	client, _ := connect(t, "")
	ctx := ctxT(t, time.Minute)
	s := session(t, stepped, mongolock.WithTTL(20*time.Second)) // measures the server's clock

	if err := honest.GetLock(ctx, "live", "honest", 0, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	clock.Step(15 * time.Second)
	if err := stepped.GetLock(ctx, "live", "stepped", 0, time.Second); !errors.Is(err, mongolock.ErrLocked) {
		t.Fatalf("GetLock after a +15s step: %v, want ErrLocked", err)
	}
	if err := s.NewMutex("live").TryLock(ctx); !errors.Is(err, mongolock.ErrLocked) {
		t.Fatalf("TryLock after a +15s step: %v, want ErrLocked", err)
	}
	if free, err := stepped.IsFreeLock(ctx, "live"); err != nil || free {
		t.Fatalf("IsFreeLock after a +15s step: %v, %v; want held", free, err)
	}

	clock.Step(-15 * time.Second)
	m := s.NewMutex("mine")
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	mongolock.RenewNow(s)
	st, err := honest.Status(ctx, "mine")
	if err != nil {
		t.Fatal(err)
	}
	if left := st.ExpiresAt.Sub(serverNow(t, client)); left < 15*time.Second {
		t.Fatalf("a lease of 20s written after a -15s step ends in %v", left)
	}
	m.Unlock()
}

// TestFailedReentrantGetLockKeepsLock: an owner that holds a lock calls
// GetLock again and gives up before the reply: the lock it had stays.
func TestFailedReentrantGetLockKeepsLock(t *testing.T) {
	e := newEnv(t)
	proxy, uri := newCutProxy(t)
	owner, _ := e.locker(uri)
	other, _ := e.locker("")
	ctx := ctxT(t, time.Minute)
	if err := owner.GetLock(ctx, "again", "alice", 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	proxy.Delay(400 * time.Millisecond)
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := owner.GetLock(short, "again", "alice", 0, time.Minute); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GetLock with a short ctx: %v, want DeadlineExceeded", err)
	}
	proxy.Delay(0)
	owner.Close() // waits for the background clean-up
	if who, err := other.IsUsedLock(ctx, "again"); err != nil || who != "alice" {
		t.Fatalf("after a failed re-entrant GetLock the lock is held by %q (%v), want alice", who, err)
	}
}

// TestRenewNeverShortens: a renewal that would end the lease earlier than
// it ends already changes nothing, so a late-applied older renewal cannot
// shorten a newer one.
func TestRenewNeverShortens(t *testing.T) {
	e := newEnv(t)
	l, _ := e.locker("")
	ctx := ctxT(t, time.Minute)
	if err := l.GetLock(ctx, "n", "alice", 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	before, _ := l.Status(ctx, "n")
	if err := l.RenewLock(ctx, "n", "alice", time.Second); err != nil {
		t.Fatal(err)
	}
	after, _ := l.Status(ctx, "n")
	if after.ExpiresAt.Before(before.ExpiresAt) {
		t.Fatalf("the lease moved back from %v to %v", before.ExpiresAt, after.ExpiresAt)
	}
}

// TestLockerCloseEndsWaits: Close makes waiting Lock, Campaign and GetLock
// calls return ErrClosed at once (long before their next poll), and later
// calls on the sessions' values fail with it.
func TestLockerCloseEndsWaits(t *testing.T) {
	e := newEnv(t)
	holder, _ := e.locker("")
	ctx := ctxT(t, time.Minute)
	hs := session(t, holder)
	if err := hs.NewMutex("m").Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := hs.NewElection("e").Campaign(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	if err := holder.GetLock(ctx, "g", "alice", 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	l, _ := e.locker("", mongolock.WithPollInterval(time.Hour))
	s := session(t, l)
	calls := map[string]func() error{
		"Lock":     func() error { return s.NewMutex("m").Lock(ctx) },
		"Campaign": func() error { return s.NewElection("e").Campaign(ctx, "w") },
		"GetLock":  func() error { return l.GetLock(ctx, "g", "bob", -1, time.Minute) },
	}
	errs := make(chan error, len(calls))
	for what, call := range calls {
		go func() { errs <- fmt.Errorf("%s: %w", what, call()) }()
	}
	time.Sleep(200 * time.Millisecond) // all three wait
	l.Close()
	for range calls {
		select {
		case err := <-errs:
			if !errors.Is(err, mongolock.ErrClosed) {
				t.Errorf("%v, want ErrClosed", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a waiting call did not return after Locker.Close")
		}
	}
	if err := s.NewMutex("x").TryLock(ctx); !errors.Is(err, mongolock.ErrClosed) {
		t.Fatalf("TryLock after Locker.Close: %v, want ErrClosed", err)
	}
}

// TestSessionCloseIsOneIndexedCommand: with 1,000 other lock documents in
// the collection, Session.Close frees what it holds in one command whose
// filter names the session, so MongoDB serves it from the session index.
func TestSessionCloseIsOneIndexedCommand(t *testing.T) {
	e := newEnv(t)
	l, cnt := e.locker("")
	client, _ := connect(t, "")
	ctx := ctxT(t, time.Minute)
	docs := make([]any, 1000)
	for i := range docs {
		docs[i] = bson.D{{Key: "_id", Value: fmt.Sprint("other-", i)}, {Key: "holder", Value: nil}, {Key: "fence", Value: int64(1)}}
	}
	if _, err := client.Database(testDB).Collection(e.coll).InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}
	s, err := l.NewSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b", "c"} {
		if err := s.NewMutex(name).Lock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cnt.Reset()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := cnt.Commands(); !slices.Equal(got, []string{"update"}) {
		t.Fatalf("Session.Close sent %q, want one update", got)
	}
	filter := cnt.Bodies()[0].Lookup("updates").Array().Index(0).Document().Lookup("q").Document()
	if _, err := filter.LookupErr("session"); err != nil {
		t.Fatalf("the release's filter %v does not name the session", filter)
	}
	if free, _ := l.IsFreeLock(ctx, "b"); !free {
		t.Fatal("b still held after Close")
	}
}

// TestCloseBoundedWhenServerStalls: the server stops answering (replies
// held back for an hour) while a call with no deadline measures its clock
// and the keepalive's next tick wants the clock too: Session.Close still
// returns within its bound.
func TestCloseBoundedWhenServerStalls(t *testing.T) {
	e := newEnv(t)
	proxy, uri := newCutProxy(t)
	l, _ := e.locker(uri, mongolock.WithClockRefresh(50*time.Millisecond))
	s, err := l.NewSession(context.Background(), mongolock.WithTTL(3*time.Second), mongolock.WithRenewInterval(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	proxy.Delay(time.Hour)
	time.Sleep(100 * time.Millisecond) // the clock estimate is stale
	stuck := make(chan struct{})
	go func() {
		defer close(stuck)
		l.IsFreeLock(context.Background(), "x") // measures the clock: stalls
	}()
	time.Sleep(1500 * time.Millisecond) // the keepalive's tick waits for the clock
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case <-closed:
		closed = nil
	case <-time.After(8 * time.Second): // the bound: min(TTL, 5s) for the release
		t.Error("Session.Close did not return while the server stalled")
	}
	proxy.Cut() // ends the stalled call
	<-stuck
	if closed != nil {
		<-closed
	}
}

// TestGetLockReturnsBeforeCleanup: a GetLock whose ctx ends while its
// acquire's reply is on its way returns ctx.Err() at once; the release of
// what it may have taken runs in the background.
func TestGetLockReturnsBeforeCleanup(t *testing.T) {
	e := newEnv(t)
	proxy, uri := newCutProxy(t)
	l, cnt := e.locker(uri)
	ctx := ctxT(t, time.Minute)
	if _, err := l.IsFreeLock(ctx, "warm"); err != nil { // clock and index first
		t.Fatal(err)
	}
	var mu sync.Mutex
	var events []string
	add := func(s string) {
		mu.Lock()
		events = append(events, s)
		mu.Unlock()
	}
	cnt.OnEnded(func(name string) {
		if name == "update" { // the clean-up's release
			add("release answered")
		}
	})
	proxy.Delay(400 * time.Millisecond)
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	err := l.GetLock(short, "gone", "alice", 0, time.Minute)
	add("GetLock returned")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GetLock = %v, want DeadlineExceeded", err)
	}
	proxy.Delay(0)
	l.Close() // waits for the clean-up
	mu.Lock()
	defer mu.Unlock()
	if len(events) < 2 || events[0] != "GetLock returned" || events[1] != "release answered" {
		t.Fatalf("events %q: GetLock waited for its clean-up", events)
	}
	other, _ := e.locker("")
	if free, err := other.IsFreeLock(ctx, "gone"); err != nil || !free {
		t.Fatalf("the possibly taken lock was not released: free %v, %v", free, err)
	}
}

// TestLongGetLockRefreshesClock: a GetLock that waits longer than the
// clock's refresh interval measures the server's clock again meanwhile.
func TestLongGetLockRefreshesClock(t *testing.T) {
	e := newEnv(t)
	holder, _ := e.locker("")
	ctx := ctxT(t, time.Minute)
	if err := holder.GetLock(ctx, "busy", "alice", 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	// Polling, so that the waiter tries often (with a change stream it
	// waits for news instead).
	l, cnt := e.locker("", mongolock.WithClockRefresh(50*time.Millisecond), mongolock.WithPollInterval(20*time.Millisecond),
		mongolock.WithChangeStreams(false))
	if _, err := l.IsFreeLock(ctx, "busy"); err != nil {
		t.Fatal(err)
	}
	cnt.Reset()
	err := l.GetLock(ctx, "busy", "bob", time.Second, time.Minute)
	if !errors.Is(err, mongolock.ErrLocked) {
		t.Fatalf("GetLock = %v, want ErrLocked", err)
	}
	if n := countOf(cnt.Commands(), "hello"); n < 3 {
		t.Fatalf("%d clock measurements during a 1s wait with a 50ms refresh", n)
	}
}

func countOf(names []string, name string) int {
	n := 0
	for _, s := range names {
		if s == name {
			n++
		}
	}
	return n
}

// TestForceReleaseExpired: an expired lock that was never freed was not
// held: ForceRelease says so.
func TestForceReleaseExpired(t *testing.T) {
	e := newEnv(t)
	l, _ := e.locker("")
	ctx := ctxT(t, time.Minute)
	if err := l.GetLock(ctx, "short", "alice", 0, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for free := false; !free; time.Sleep(20 * time.Millisecond) {
		free, _ = l.IsFreeLock(ctx, "short")
	}
	if err := l.ForceRelease(ctx, "short"); !errors.Is(err, mongolock.ErrNotHeld) {
		t.Fatalf("ForceRelease of an expired lock: %v, want ErrNotHeld", err)
	}
}

// TestLateAcquireReplyHoldsNothing: an acquire whose reply comes after the
// hold would already have been given up (the link held it back longer than
// the lease; a stopped process is the same) does not return a hold that
// another may have by now: TryLock fails with ErrLockLost, and the lock is
// freed.
func TestLateAcquireReplyHoldsNothing(t *testing.T) {
	e := newEnv(t)
	proxy, uri := newCutProxy(t)
	slow, _ := e.locker(uri)
	other, _ := e.locker("")
	ctx := ctxT(t, time.Minute)
	s := session(t, slow, mongolock.WithTTL(time.Second), mongolock.WithRenewInterval(300*time.Millisecond))
	proxy.Delay(1200 * time.Millisecond)
	m := s.NewMutex("late")
	if err := m.TryLock(ctx); !errors.Is(err, mongolock.ErrLockLost) {
		t.Fatalf("TryLock answered after its lease: %v, want ErrLockLost", err)
	}
	if m.Token() != 0 {
		t.Fatalf("a hold with token %d after a late reply", m.Token())
	}
	proxy.Delay(0)
	slow.Close() // waits for the release of what the server gave
	if free, err := other.IsFreeLock(ctx, "late"); err != nil || !free {
		t.Fatalf("the late-acquired lock was left taken: free %v, %v", free, err)
	}
}
