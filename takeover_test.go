package mongolock_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mongolock/mongolock"
)

// streamingWaiter returns a Locker whose change stream is already running
// (a waiter of its own keeps it open until the test ends), where the server
// has change streams, and whose safety poll and poll interval are a minute
// away, with its command counter: a takeover by one of its waiters within
// the test's time came from what it knew of the lease, not from a poll.
func streamingWaiter(t *testing.T, e *env) (*mongolock.Locker, *counter) {
	t.Helper()
	l, cnt := e.locker("", mongolock.WithSafetyPollInterval(time.Minute), mongolock.WithPollInterval(time.Minute))
	other, _ := e.locker("")
	ctx := ctxT(t, time.Minute)
	if err := other.GetLock(ctx, "keeps-the-stream-open", "other", 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.GetLock(wctx, "keeps-the-stream-open", "waiter", -1, time.Minute)
	}()
	t.Cleanup(func() { cancel(); <-done })
	// A server without change streams says so at once; one with them
	// opens the stream within a second or two.
	for deadline := time.Now().Add(3 * time.Second); !l.Streaming() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("change streams: %v", l.Streaming())
	return l, cnt
}

// TestTakeoverAtLeaseEnd (issue 27): with a change stream already running,
// a waiter takes a lock whose holder's lease (5ms to 40ms) ran out without
// a release (its holder died, or a seed lock's TTL passed) when that lease
// ends: before its safety poll, a minute away, and in at most three
// attempts.
func TestTakeoverAtLeaseEnd(t *testing.T) {
	e := newEnv(t)
	holder, _ := e.locker("")
	waiter, cnt := streamingWaiter(t, e)
	s := session(t, waiter)
	kinds := map[string]func(ctx context.Context, name string) error{
		"GetLock": func(ctx context.Context, name string) error { return waiter.GetLock(ctx, name, "b", -1, time.Minute) },
		"Mutex":   func(ctx context.Context, name string) error { return s.NewMutex(name).Lock(ctx) },
		"Campaign": func(ctx context.Context, name string) error {
			return s.NewElection(name).Campaign(ctx, "b")
		},
	}
	for kind, wait := range kinds {
		for _, ttl := range []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond} {
			t.Run(fmt.Sprintf("%s/%v", kind, ttl), func(t *testing.T) {
				name := fmt.Sprintf("takeover-%s-%v", kind, ttl)
				ctx := ctxT(t, 30*time.Second)
				if err := holder.GetLock(ctx, name, "a", 0, ttl); err != nil {
					t.Fatal(err)
				}
				cnt.Reset()
				if err := wait(ctx, name); err != nil {
					t.Fatalf("no takeover before the safety poll: %v", err)
				}
				attempts := 0
				for _, c := range cnt.Commands() {
					if c == "findAndModify" {
						attempts++
					}
				}
				if attempts > 3 {
					t.Fatalf("%d attempts to take over a lease of %v; want at most 3", attempts, ttl)
				}
			})
		}
	}
}

// TestTakeoverAtLeaseEndOfSession (issue 27): the same for the kinds of
// lock whose holder is a session (Semaphore, RWMutex): the holder's link is
// cut, its 300ms lease runs out, and the waiter takes over before its
// safety poll.
func TestTakeoverAtLeaseEndOfSession(t *testing.T) {
	e := newEnv(t)
	proxy, uri := newCutProxy(t)
	cut, _ := e.locker(uri)
	waiter, _ := streamingWaiter(t, e)
	ctx := ctxT(t, 30*time.Second)
	hs := session(t, cut, mongolock.WithTTL(300*time.Millisecond), mongolock.WithRenewInterval(100*time.Millisecond))
	ws := session(t, waiter)
	if _, err := hs.NewSemaphore("sem", 1).Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if err := hs.NewRWMutex("rw").Lock(ctx); err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	defer proxy.Restore()
	p, err := ws.NewSemaphore("sem", 1).Acquire(ctx)
	if err != nil {
		t.Fatalf("Semaphore: no takeover before the safety poll: %v", err)
	}
	p.Release()
	rw := ws.NewRWMutex("rw")
	if err := rw.RLock(ctx); err != nil {
		t.Fatalf("RWMutex: no takeover before the safety poll: %v", err)
	}
	rw.RUnlock()
}
