package mongolock_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mongolock/mongolock"
)

// findAndModifies counts the acquire attempts of the lock name among a
// client's commands.
func findAndModifies(c *counter, name string) int {
	n := 0
	for _, b := range c.Bodies() {
		if _, ok := b.Lookup("findAndModify").StringValueOK(); ok && b.Lookup("query", "_id").StringValue() == name {
			n++
		}
	}
	return n
}

// TestHoldAtLeast: an Unlock before acquiredAt+d ends the hold at once but
// leaves the lock taken until then, for every reader and taker; a waiter of
// another process takes it no earlier, and without polling in between (one
// failed attempt, then the one that takes it); a waiter of the same process
// makes no attempt before.
func TestHoldAtLeast(t *testing.T) {
	const least = 2 * time.Second
	e := newEnv(t)
	la, ca := e.locker("")
	lb, cb := e.locker("")
	ctx := ctxT(t, time.Minute)
	sa := session(t, la, mongolock.WithOwner("host-a"))
	ma := sa.NewMutex("job", mongolock.WithHoldAtLeast(least))

	if err := ma.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	first, err := la.Status(ctx, "job")
	if err != nil {
		t.Fatal(err)
	}
	done := ma.Done()
	if err := ma.Unlock(); err != nil {
		t.Fatalf("Unlock within the least hold = %v", err)
	}
	select {
	case <-done:
	default:
		t.Fatal("Done still open after Unlock")
	}
	if ma.Err() != nil {
		t.Fatalf("Err after Unlock = %v", ma.Err())
	}
	if err := ma.Unlock(); !errors.Is(err, mongolock.ErrNotHeld) {
		t.Fatalf("second Unlock = %v, want ErrNotHeld", err)
	}

	// Held for everyone until acquiredAt+least, by its owner.
	st, err := lb.Status(ctx, "job")
	if err != nil {
		t.Fatal(err)
	}
	if !st.Held || !st.ExpiresAt.Equal(first.AcquiredAt.Add(least)) || st.Owner != "host-a" || st.Token != first.Token {
		t.Fatalf("Status after Unlock = %+v, want held by host-a until %v", st, first.AcquiredAt.Add(least))
	}
	if owner, err := lb.IsUsedLock(ctx, "job"); err != nil || owner != "host-a" {
		t.Fatalf("IsUsedLock = %q, %v", owner, err)
	}
	sb := session(t, lb)
	mb := sb.NewMutex("job")
	if err := mb.TryLock(ctx); !errors.Is(err, mongolock.ErrLocked) {
		t.Fatalf("TryLock of another session = %v, want ErrLocked", err)
	}
	if err := lb.GetLock(ctx, "job", "host-b", 0, 0); !errors.Is(err, mongolock.ErrLocked) {
		t.Fatalf("GetLock of another owner = %v, want ErrLocked", err)
	}

	// Another process's waiter, its change stream (if any) already open:
	// a stream's opening costs an attempt of its own, since a release
	// before it would be missed.
	if hasChangeStreams(t) {
		held := session(t, la).NewMutex("held")
		if err := held.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		other := session(t, lb).NewMutex("held")
		wctx, stop := context.WithCancel(ctx)
		waited := make(chan struct{})
		go func() {
			defer close(waited)
			other.Lock(wctx)
		}()
		defer func() { stop(); <-waited }()
		for !lb.Streaming() {
			time.Sleep(10 * time.Millisecond)
		}
	}
	cb.Reset()
	if err := mb.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	second, err := lb.Status(ctx, "job")
	if err != nil {
		t.Fatal(err)
	}
	attempts := findAndModifies(cb, "job")
	if err := mb.Unlock(); err != nil {
		t.Fatal(err)
	}
	if second.AcquiredAt.Before(first.AcquiredAt.Add(least)) {
		t.Fatalf("taken at %v, before the least hold's end %v", second.AcquiredAt, first.AcquiredAt.Add(least))
	}
	// With change streams the waiter learns the end from the event of the
	// Unlock or from one read; polling, it reads it once its pauses reach
	// 100ms, after a few quick attempts.
	most := 2
	if !hasChangeStreams(t) {
		most = 7
	}
	if attempts > most {
		t.Fatalf("the waiter made %d acquire attempts (%v), want at most %d", attempts, cb.Commands(), most)
	}
	t.Logf("other process: %d attempts; commands %v", attempts, cb.Commands())

	// A waiter of the same process (another session) makes one attempt
	// (a new waiter trusts what it knows of a kept lock only while the
	// change stream would tell it of a ForceRelease), then none before the
	// end.
	if err := ma.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	third, _ := la.Status(ctx, "job")
	if err := ma.Unlock(); err != nil {
		t.Fatal(err)
	}
	ca.Reset()
	m2 := session(t, la).NewMutex("job")
	if err := m2.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	fourth, _ := la.Status(ctx, "job")
	if fourth.AcquiredAt.Before(third.AcquiredAt.Add(least)) {
		t.Fatalf("taken at %v, before the least hold's end %v", fourth.AcquiredAt, third.AcquiredAt.Add(least))
	}
	if n := findAndModifies(ca, "job"); n != 2 {
		t.Fatalf("the same process's waiter made %d acquire attempts (%v), want 2", n, ca.Commands())
	}
	if err := m2.Unlock(); err != nil {
		t.Fatal(err)
	}
}

// TestForceReleaseOfKeptLock: an admin's ForceRelease of a kept lock lets
// a new Lock of the holder's process take it at once, though that process
// knew the lock kept for an hour.
func TestForceReleaseOfKeptLock(t *testing.T) {
	e := newEnv(t)
	l, _ := e.locker("")
	admin, _ := e.locker("")
	ctx := ctxT(t, time.Minute)
	m := session(t, l).NewMutex("n", mongolock.WithHoldAtLeast(time.Hour))
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := admin.ForceRelease(ctx, "n"); err != nil {
		t.Fatal(err)
	}
	if err := session(t, l).NewMutex("n").Lock(ctxT(t, 20*time.Second)); err != nil {
		t.Fatalf("Lock after the kept lock was force-released = %v", err)
	}
}

// TestHoldAtLeastPassed: an Unlock after the least hold frees the lock at
// once, as without the option.
func TestHoldAtLeastPassed(t *testing.T) {
	e := newEnv(t)
	l, _ := e.locker("")
	ctx := ctxT(t, time.Minute)
	m := session(t, l).NewMutex("n", mongolock.WithHoldAtLeast(time.Nanosecond))
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Unlock(); err != nil {
		t.Fatal(err)
	}
	if free, err := l.IsFreeLock(ctx, "n"); err != nil || !free {
		t.Fatalf("after Unlock: free %v, err %v", free, err)
	}
}

// TestHoldAtLeastOnSessionClose: Session.Close keeps the lock until the
// least hold's end, as Unlock does.
func TestHoldAtLeastOnSessionClose(t *testing.T) {
	e := newEnv(t)
	l, _ := e.locker("")
	ctx := ctxT(t, time.Minute)
	s := session(t, l)
	m := s.NewMutex("n", mongolock.WithHoldAtLeast(time.Hour))
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(m.Err(), mongolock.ErrSessionClosed) {
		t.Fatalf("Err after Close = %v", m.Err())
	}
	st, err := l.Status(ctx, "n")
	if err != nil {
		t.Fatal(err)
	}
	if !st.Held || !st.ExpiresAt.Equal(st.AcquiredAt.Add(time.Hour)) {
		t.Fatalf("Status after Close = %+v, want held for an hour from its acquire", st)
	}
	if err := session(t, l).NewMutex("n").TryLock(ctx); !errors.Is(err, mongolock.ErrLocked) {
		t.Fatalf("TryLock after Close = %v, want ErrLocked", err)
	}
}

// TestHoldAtMost: a hold never unlocked ends at its cap as a lost one
// (Done, ErrHoldCapped matching ErrLockLost), its keepalive stops renewing
// it, and another process takes the lock after the margin, never before the
// cap.
func TestHoldAtMost(t *testing.T) {
	const most = time.Second
	e := newEnv(t)
	la, _ := e.locker("")
	lb, _ := e.locker("")
	ctx := ctxT(t, time.Minute)
	sa := session(t, la, mongolock.WithTTL(5*time.Second))
	ma := sa.NewMutex("cap", mongolock.WithHoldAtLeast(most/2), mongolock.WithHoldAtMost(most))
	if err := ma.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	first, _ := la.Status(ctx, "cap")
	mb := session(t, lb).NewMutex("cap")
	if err := mb.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ma.Done():
	default:
		t.Fatal("another took the lock while the capped hold was live")
	}
	if err := ma.Err(); !errors.Is(err, mongolock.ErrHoldCapped) || !errors.Is(err, mongolock.ErrLockLost) {
		t.Fatalf("Err after the cap = %v, want ErrHoldCapped and ErrLockLost", err)
	}
	if err := ma.Unlock(); !errors.Is(err, mongolock.ErrHoldCapped) {
		t.Fatalf("Unlock after the cap = %v, want ErrHoldCapped", err)
	}
	second, _ := lb.Status(ctx, "cap")
	// The cap counts from the acquire's sending; the margin (TTL/10) comes
	// on top of it on the server.
	if second.AcquiredAt.Before(first.AcquiredAt.Add(most)) {
		t.Fatalf("taken again at %v, before the cap at %v", second.AcquiredAt, first.AcquiredAt.Add(most))
	}
	if second.Token != first.Token+1 {
		t.Fatalf("token %d after %d", second.Token, first.Token)
	}
	if err := mb.Unlock(); err != nil {
		t.Fatal(err)
	}
}

// TestHoldBoundsRefused: bad hold bounds are refused by Lock and TryLock
// with ErrInvalidOption before any round trip, and nothing is taken.
func TestHoldBoundsRefused(t *testing.T) {
	e := newEnv(t)
	l, cnt := e.locker("")
	ctx := ctxT(t, time.Minute)
	s := session(t, l)
	for _, tc := range []struct {
		name string
		opts []mongolock.MutexOption
	}{
		{"negative least", []mongolock.MutexOption{mongolock.WithHoldAtLeast(-time.Second)}},
		{"negative most", []mongolock.MutexOption{mongolock.WithHoldAtMost(-time.Nanosecond)}},
		{"most below least", []mongolock.MutexOption{mongolock.WithHoldAtLeast(time.Minute), mongolock.WithHoldAtMost(time.Second)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := s.NewMutex("bad", tc.opts...)
			cnt.Reset()
			for _, op := range []func() error{func() error { return m.Lock(ctx) }, func() error { return m.TryLock(ctx) }} {
				if err := op(); !errors.Is(err, mongolock.ErrInvalidOption) {
					t.Fatalf("= %v, want ErrInvalidOption", err)
				}
			}
			if got := cnt.Commands(); len(got) != 0 {
				t.Fatalf("sent %v", got)
			}
		})
	}
	// Equal bounds, or a cap alone, are fine.
	for i, opts := range [][]mongolock.MutexOption{
		{mongolock.WithHoldAtLeast(time.Second), mongolock.WithHoldAtMost(time.Second)},
		{mongolock.WithHoldAtMost(time.Hour)},
	} {
		m := s.NewMutex(fmt.Sprint("good", i), opts...)
		if err := m.TryLock(ctx); err != nil {
			t.Fatal(err)
		}
		if err := m.Unlock(); err != nil {
			t.Fatal(err)
		}
	}
	if st, err := l.Status(ctx, "bad"); err != nil || st.Token != 0 {
		t.Fatalf("Status of the refused name = %+v, %v", st, err)
	}
}
