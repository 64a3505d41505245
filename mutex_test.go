package mongolock_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mongolock/mongolock"
)

// TestMutualExclusion runs 4 sessions on separate clients, 3 goroutines
// each, through 1,200 acquisitions of one name, and checks on its own that
// there is never more than one holder and that fencing tokens grow in the
// order holds begin.
func TestMutualExclusion(t *testing.T) {
	e := newEnv(t)
	const sessions, goroutines, each = 4, 3, 100
	var (
		holders  atomic.Int32
		mu       sync.Mutex
		last     int64
		acquired int
	)
	ctx := ctxT(t, 5*time.Minute)
	var wg sync.WaitGroup
	errs := make(chan error, sessions*goroutines)
	for i := range sessions {
		l, _ := e.locker("", mongolock.WithPollInterval(50*time.Millisecond))
		s := session(t, l, mongolock.WithOwner(fmt.Sprint("host-", i)))
		for range goroutines {
			m := s.NewMutex("shared")
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					if err := m.Lock(ctx); err != nil {
						errs <- err
						return
					}
					if n := holders.Add(1); n != 1 {
						errs <- fmt.Errorf("%d holders at once", n)
					}
					mu.Lock()
					if tok := m.Token(); tok <= last {
						errs <- fmt.Errorf("token %d after %d", tok, last)
					} else {
						last = tok
					}
					acquired++
					mu.Unlock()
					holders.Add(-1)
					if err := m.Unlock(); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if acquired != sessions*goroutines*each {
		t.Fatalf("%d acquisitions, want %d", acquired, sessions*goroutines*each)
	}
	t.Logf("%d acquisitions, one holder at a time, last token %d", acquired, last)
}

// TestSameSessionExclusion: two Mutex values of one session on one name
// exclude each other (etcd issue #10756), and so do goroutines sharing one.
func TestSameSessionExclusion(t *testing.T) {
	e := newEnv(t)
	l, _ := e.locker("")
	s := session(t, l)
	ctx := ctxT(t, time.Minute)
	a, b := s.NewMutex("x"), s.NewMutex("x")
	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.TryLock(ctx); !errors.Is(err, mongolock.ErrLocked) {
		t.Fatalf("second Mutex of the session: TryLock = %v, want ErrLocked", err)
	}
	got := make(chan error, 1)
	go func() { got <- b.Lock(ctx) }()
	select {
	case err := <-got:
		t.Fatalf("second Mutex locked while the first held: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	tokA := a.Token()
	if err := a.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if b.Token() <= tokA {
		t.Fatalf("token %d after %d", b.Token(), tokA)
	}
	if err := b.Unlock(); err != nil {
		t.Fatal(err)
	}

	// One Mutex shared by goroutines.
	shared := s.NewMutex("y")
	var holders atomic.Int32
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if err := shared.Lock(ctx); err != nil {
					t.Error(err)
					return
				}
				if holders.Add(1) != 1 {
					t.Error("two goroutines hold one shared Mutex")
				}
				holders.Add(-1)
				if err := shared.Unlock(); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
}

// TestHoldLifecycle checks Done, Err and Token across Lock, Unlock and a
// second Unlock.
func TestHoldLifecycle(t *testing.T) {
	e := newEnv(t)
	l, _ := e.locker("")
	s := session(t, l)
	ctx := ctxT(t, time.Minute)
	m := s.NewMutex("life")
	if m.Token() != 0 || !errors.Is(m.Err(), mongolock.ErrNotHeld) {
		t.Fatalf("fresh Mutex: token %d, err %v", m.Token(), m.Err())
	}
	select {
	case <-m.Done():
	default:
		t.Fatal("Done of a fresh Mutex is not closed")
	}
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	done := m.Done()
	select {
	case <-done:
		t.Fatal("Done closed while held")
	default:
	}
	if m.Err() != nil {
		t.Fatalf("Err while held: %v", m.Err())
	}
	if err := m.Unlock(); err != nil {
		t.Fatal(err)
	}
	<-done
	if m.Err() != nil {
		t.Fatalf("Err after Unlock: %v", m.Err())
	}
	if err := m.Unlock(); !errors.Is(err, mongolock.ErrNotHeld) {
		t.Fatalf("second Unlock = %v, want ErrNotHeld", err)
	}
	// The document is kept: the next hold's token is larger.
	tok := m.Token()
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if m.Token() <= tok {
		t.Fatalf("token %d after %d", m.Token(), tok)
	}
	// Closing the session ends the hold and frees the lock.
	done = m.Done()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	<-done
	if !errors.Is(m.Err(), mongolock.ErrSessionClosed) {
		t.Fatalf("Err after Session.Close = %v", m.Err())
	}
	if free, err := l.IsFreeLock(ctx, "life"); err != nil || !free {
		t.Fatalf("after Session.Close: free %v, err %v", free, err)
	}
	if err := m.Lock(ctx); !errors.Is(err, mongolock.ErrSessionClosed) {
		t.Fatalf("Lock after Session.Close = %v", err)
	}
}

// TestRoundTrips counts commands with the driver's monitor: Lock+Unlock
// uncontended sends 2, a keepalive tick for 100 locks sends 1.
func TestRoundTrips(t *testing.T) {
	e := newEnv(t)
	l, cnt := e.locker("")
	s := session(t, l, mongolock.WithTTL(time.Hour))
	ctx := ctxT(t, time.Minute)
	m := s.NewMutex("rt")
	cnt.Reset()
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Unlock(); err != nil {
		t.Fatal(err)
	}
	if got := cnt.Commands(); len(got) != 2 {
		t.Fatalf("Lock+Unlock sent %v, want 2 commands", got)
	}
	for i := range 100 {
		if err := s.NewMutex(fmt.Sprint("k", i)).Lock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cnt.Reset()
	if !mongolock.RenewNow(s) {
		t.Fatal("renewal failed")
	}
	if got := cnt.Commands(); len(got) != 1 {
		t.Fatalf("a keepalive tick for 100 locks sent %v, want 1 command", got)
	}
}

// TestLossWhenUnreachable cuts a session off the server: its hold ends
// (ErrLockLost) while the lease is still live on the server, and another
// session takes over at expiry, by its timer rather than a poll.
func TestLossWhenUnreachable(t *testing.T) {
	e := newEnv(t)
	proxy, uri := newCutProxy(t)
	cut, _ := e.locker(uri)
	const ttl = 2 * time.Second
	s := session(t, cut, mongolock.WithTTL(ttl), mongolock.WithRenewInterval(200*time.Millisecond))
	ctx := ctxT(t, time.Minute)
	m := s.NewMutex("lost")
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	// The other side polls once a minute: only its expiry timer can get it
	// the lock within the test's time.
	other, _ := e.locker("", mongolock.WithPollInterval(time.Minute))
	proxy.Cut()
	<-m.Done()
	owner, err := other.IsUsedLock(ctx, "lost")
	if err != nil {
		t.Fatal(err)
	}
	if owner == "" {
		t.Fatal("the hold ended only after its lease expired on the server")
	}
	if !errors.Is(m.Err(), mongolock.ErrLockLost) {
		t.Fatalf("Err = %v, want ErrLockLost", m.Err())
	}
	<-s.Done()
	if !errors.Is(s.Err(), mongolock.ErrLockLost) || !errors.Is(s.Err(), mongolock.ErrSessionClosed) {
		t.Fatalf("session Err = %v", s.Err())
	}
	s2 := session(t, other)
	m2 := s2.NewMutex("lost")
	if err := m2.Lock(ctxT(t, 4*ttl)); err != nil {
		t.Fatalf("takeover after expiry: %v", err)
	}
	if m2.Token() <= m.Token() {
		t.Fatalf("token %d after %d", m2.Token(), m.Token())
	}
	m2.Unlock()
}

// TestLossWithSlowReplies holds a lock through a link whose replies come
// 700ms late (the clock estimate's error bound is then 350ms, more than
// the TTL/10 margin). The hold must last while the link works: renewals
// keep their cadence from their sending and are not refused by the
// driver's operation timeout. Cut off, the holder must still give up
// before the server ends the lease.
func TestLossWithSlowReplies(t *testing.T) {
	e := newEnv(t)
	proxy, uri := newCutProxy(t)
	proxy.Delay(700 * time.Millisecond)
	slow, _ := e.locker(uri)
	s := session(t, slow, mongolock.WithTTL(3*time.Second), mongolock.WithRenewInterval(300*time.Millisecond))
	ctx := ctxT(t, time.Minute)
	m := s.NewMutex("slow")
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // past a TTL: renewals through the slow link
	select {
	case <-m.Done():
		t.Fatalf("hold lost through a slow but working link: %v", m.Err())
	default:
	}
	other, _ := e.locker("")
	proxy.Cut()
	<-m.Done()
	if owner, err := other.IsUsedLock(ctx, "slow"); err != nil || owner == "" {
		t.Fatalf("the hold ended only after its lease expired on the server (%q, %v)", owner, err)
	}
	if !errors.Is(m.Err(), mongolock.ErrLockLost) {
		t.Fatalf("Err = %v, want ErrLockLost", m.Err())
	}
}

// TestClockSkew runs clients whose clocks are a minute fast or slow: they
// neither take over a live lock nor keep one past its expiry.
func TestClockSkew(t *testing.T) {
	for _, skew := range []time.Duration{time.Minute, -time.Minute} {
		t.Run(fmt.Sprint(skew), func(t *testing.T) {
			e := newEnv(t)
			skewed, _ := e.locker("", mongolock.WithClock(newSteppedClock(skew)))
			honest, _ := e.locker("")
			ctx := ctxT(t, time.Minute)

			// A live lock of an honest client stays taken for the skewed one.
			hs := session(t, honest, mongolock.WithTTL(2*time.Second))
			hm := hs.NewMutex("live")
			if err := hm.Lock(ctx); err != nil {
				t.Fatal(err)
			}
			ss := session(t, skewed, mongolock.WithTTL(2*time.Second))
			if err := ss.NewMutex("live").TryLock(ctx); !errors.Is(err, mongolock.ErrLocked) {
				t.Fatalf("skewed client on a live lock: %v, want ErrLocked", err)
			}
			if err := skewed.GetLock(ctx, "live", "skewed", 0, time.Second); !errors.Is(err, mongolock.ErrLocked) {
				t.Fatalf("skewed GetLock on a live lock: %v, want ErrLocked", err)
			}
			if owner, _ := skewed.IsUsedLock(ctx, "live"); owner != hs.Owner() {
				t.Fatalf("skewed IsUsedLock = %q, want %q", owner, hs.Owner())
			}

			// A skewed client's lock is live for others, and expires on time.
			if err := skewed.GetLock(ctx, "short", "skewed", 0, 500*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			if owner, _ := honest.IsUsedLock(ctx, "short"); owner != "skewed" {
				t.Fatalf("honest IsUsedLock of the skewed client's lock = %q", owner)
			}
			if err := honest.GetLock(ctx, "short", "honest", 0, time.Second); !errors.Is(err, mongolock.ErrLocked) {
				t.Fatalf("honest GetLock on the skewed client's live lock: %v", err)
			}
			if err := honest.GetLock(ctx, "short", "honest", 5*time.Second, time.Second); err != nil {
				t.Fatalf("honest GetLock after the skewed lease: %v", err)
			}
			if err := skewed.RenewLock(ctx, "short", "skewed", time.Second); !errors.Is(err, mongolock.ErrNotHeld) {
				t.Fatalf("skewed RenewLock after expiry: %v, want ErrNotHeld", err)
			}
			// The skewed session's Mutex is held and renewed, not lost.
			sm := ss.NewMutex("mine")
			if err := sm.Lock(ctx); err != nil {
				t.Fatal(err)
			}
			select {
			case <-sm.Done():
				t.Fatalf("skewed hold lost: %v", sm.Err())
			case <-time.After(3 * time.Second): // past a TTL: renewals kept it
			}
			if err := honest.GetLock(ctx, "mine", "honest", 0, time.Second); !errors.Is(err, mongolock.ErrLocked) {
				t.Fatalf("honest GetLock on the skewed session's renewed lock: %v", err)
			}
		})
	}
}

// TestWaitersCostOne parks many goroutines on one held name for a while:
// only one of them talks to the server.
func TestWaitersCostOne(t *testing.T) {
	e := newEnv(t)
	holder, _ := e.locker("")
	hm := session(t, holder, mongolock.WithTTL(time.Hour)).NewMutex("busy")
	ctx := ctxT(t, time.Minute)
	if err := hm.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	measure := func(waiters int) int {
		l, cnt := e.locker("", mongolock.WithPollInterval(100*time.Millisecond))
		s := session(t, l, mongolock.WithTTL(time.Hour))
		wctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		cnt.Reset()
		for range waiters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.NewMutex("busy").Lock(wctx)
			}()
		}
		time.Sleep(2 * time.Second)
		cancel()
		wg.Wait()
		return cnt.Count()
	}
	one, many := measure(1), measure(1000)
	t.Logf("commands in 2s: 1 waiter %d, 1,000 waiters %d", one, many)
	// Jitter makes the count vary a little between runs; 1,000 pollers
	// would make it 1,000 times larger.
	if many > 2*one+2 {
		t.Fatalf("1,000 waiters sent %d commands, one waiter %d", many, one)
	}
}
