package mongolock_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mongolock/mongolock"
)

// TestSemaphoreLimit: 6 sessions on separate clients, 2 goroutines each,
// take 1,000 permits of a semaphore of 3 in all. The test's own count of
// live holds (raised after Acquire returns, lowered before Release) never
// exceeds 3, and no slot's fencing token is seen twice.
func TestSemaphoreLimit(t *testing.T) {
	const limit, total = 3, 1000
	e := newEnv(t)
	ctx := ctxT(t, 5*time.Minute)
	var live, most, done atomic.Int64
	var mu sync.Mutex
	seen := map[[2]int64]bool{} // slot, token
	var wg sync.WaitGroup
	for range 6 {
		l, _ := e.locker("")
		sem := session(t, l).NewSemaphore("import", limit)
		for range 2 {
			wg.Go(func() {
				for done.Add(1) <= total {
					p, err := sem.Acquire(ctx)
					if err != nil {
						t.Error(err)
						return
					}
					n := live.Add(1)
					for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
					}
					mu.Lock()
					key := [2]int64{int64(p.Slot()), p.Token()}
					dup := seen[key]
					seen[key] = true
					mu.Unlock()
					if dup {
						t.Errorf("slot %d token %d held twice", key[0], key[1])
					}
					time.Sleep(2 * time.Millisecond) // holds overlap
					live.Add(-1)
					if err := p.Release(); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	if most.Load() > limit {
		t.Fatalf("%d permits held at once, limit %d", most.Load(), limit)
	}
	if most.Load() < 2 {
		t.Fatalf("never more than %d permit held at once: the test checks nothing", most.Load())
	}
	if len(seen) != total {
		t.Fatalf("%d holds recorded, want %d", len(seen), total)
	}
	t.Logf("at most %d held at once over %d acquisitions", most.Load(), total)
}

// TestSemaphoreRoundTrips: with a permit free (and the slots made),
// TryAcquire and Release are one command each; making the slots costs a
// few more once.
func TestSemaphoreRoundTrips(t *testing.T) {
	e := newEnv(t)
	l, cnt := e.locker("")
	ctx := ctxT(t, time.Minute)
	s := session(t, l, mongolock.WithTTL(time.Hour))
	sem := s.NewSemaphore("rt", 3)
	cnt.Reset()
	p, err := sem.TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := cnt.Commands(); len(got) > 5 {
		t.Fatalf("first TryAcquire, making the slots, sent %v", got)
	}
	if err := p.Release(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		cnt.Reset()
		p, err := sem.TryAcquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Release(); err != nil {
			t.Fatal(err)
		}
		if got := cnt.Commands(); len(got) != 2 {
			t.Fatalf("TryAcquire+Release sent %v, want 2 commands", got)
		}
	}
	// Another process's value reads the limit once, then finds the slots
	// made: 3 commands, then 2.
	other, cnt2 := e.locker("")
	sem2 := session(t, other).NewSemaphore("rt", 3)
	for want := 3; want >= 2; want-- {
		cnt2.Reset()
		p, err = sem2.TryAcquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p.Release()
		if got := cnt2.Commands(); len(got) != want {
			t.Fatalf("another process's TryAcquire+Release sent %v, want %d commands", got, want)
		}
	}
}

// TestSemaphoreWaits: with every permit held TryAcquire says ErrLocked,
// and Acquire gets the first permit released, by another process or this
// one; a permit's Token grows with every holding of its slot.
func TestSemaphoreWaits(t *testing.T) {
	e := newEnv(t)
	la, _ := e.locker("")
	lb, _ := e.locker("")
	ctx := ctxT(t, time.Minute)
	a, b := session(t, la).NewSemaphore("pool", 2), session(t, lb).NewSemaphore("pool", 2)
	p1, err := a.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := a.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p1.Slot() == p2.Slot() {
		t.Fatalf("two permits on slot %d", p1.Slot())
	}
	if _, err := b.TryAcquire(ctx); !errors.Is(err, mongolock.ErrLocked) {
		t.Fatalf("TryAcquire with all held = %v, want ErrLocked", err)
	}
	got := make(chan *mongolock.Permit)
	go func() {
		p, err := b.Acquire(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- p
	}()
	if err := p1.Release(); err != nil {
		t.Fatal(err)
	}
	p3 := <-got
	if p3 == nil {
		t.FailNow()
	}
	if p3.Slot() != p1.Slot() || p3.Token() <= p1.Token() {
		t.Fatalf("after slot %d token %d: slot %d token %d", p1.Slot(), p1.Token(), p3.Slot(), p3.Token())
	}
	// The same process's waiter.
	go func() {
		p, err := a.Acquire(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- p
	}()
	if err := p2.Release(); err != nil {
		t.Fatal(err)
	}
	p4 := <-got
	if p4 == nil {
		t.FailNow()
	}
	p3.Release()
	p4.Release()
	if err := p4.Release(); !errors.Is(err, mongolock.ErrNotHeld) {
		t.Fatalf("second Release = %v, want ErrNotHeld", err)
	}
}

// TestSemaphoreHolderCutOff: a holder cut off from the server loses its
// permit (Done, ErrLockLost) before its lease ends, and a waiter of another
// process gets it after the lease, by its timer.
func TestSemaphoreHolderCutOff(t *testing.T) {
	e := newEnv(t)
	proxy, uri := newCutProxy(t)
	cut, _ := e.locker(uri)
	other, _ := e.locker("", mongolock.WithPollInterval(time.Minute))
	const ttl = 2 * time.Second
	ctx := ctxT(t, time.Minute)
	lost, err := session(t, cut, mongolock.WithTTL(ttl)).NewSemaphore("jobs", 1).Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sem := session(t, other).NewSemaphore("jobs", 1)
	proxy.Cut()
	p, err := sem.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost.Done():
	default:
		t.Fatal("the permit was taken again before its holder gave it up")
	}
	if !errors.Is(lost.Err(), mongolock.ErrLockLost) {
		t.Fatalf("cut-off permit's Err = %v, want ErrLockLost", lost.Err())
	}
	if p.Token() <= lost.Token() {
		t.Fatalf("token %d after %d", p.Token(), lost.Token())
	}
	p.Release()
}

// TestSemaphoreBadInput: bad limits and names are refused before any
// round trip; parties that disagree on the limit get ErrLimitMismatch.
func TestSemaphoreBadInput(t *testing.T) {
	e := newEnv(t)
	l, cnt := e.locker("")
	ctx := ctxT(t, time.Minute)
	s := session(t, l)
	cnt.Reset()
	for _, tc := range []struct {
		name  string
		limit int
		want  error
	}{
		{"zero", 0, mongolock.ErrInvalidOption},
		{"negative", -1, mongolock.ErrInvalidOption},
		{"too many", mongolock.MaxLimit + 1, mongolock.ErrInvalidOption},
		{"", 3, mongolock.ErrInvalidName},
		{"slot\x1f0", 3, mongolock.ErrInvalidName},
	} {
		sem := s.NewSemaphore(tc.name, tc.limit)
		if _, err := sem.Acquire(ctx); !errors.Is(err, tc.want) {
			t.Errorf("%q limit %d: Acquire = %v, want %v", tc.name, tc.limit, err, tc.want)
		}
		if _, err := sem.TryAcquire(ctx); !errors.Is(err, tc.want) {
			t.Errorf("%q limit %d: TryAcquire = %v, want %v", tc.name, tc.limit, err, tc.want)
		}
	}
	// The slot scheme's separator is refused in every name.
	if err := s.NewMutex("a\x1f1").TryLock(ctx); !errors.Is(err, mongolock.ErrInvalidName) {
		t.Errorf("Mutex on a slot's name = %v, want ErrInvalidName", err)
	}
	if got := cnt.Commands(); len(got) != 0 {
		t.Fatalf("bad input sent %v", got)
	}
	p, err := s.NewSemaphore("agreed", 3).TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int{2, 5} {
		other, _ := e.locker("")
		sem := session(t, other).NewSemaphore("agreed", limit)
		for range 2 { // and again: nothing the first attempt did lets it in
			if _, err := sem.TryAcquire(ctx); !errors.Is(err, mongolock.ErrLimitMismatch) {
				t.Errorf("limit %d against 3: %v, want ErrLimitMismatch", limit, err)
			}
		}
	}
	p.Release()
	// A semaphore and another kind of lock on one name exclude each other.
	if err := s.NewMutex("agreed").TryLock(ctx); !errors.Is(err, mongolock.ErrLocked) {
		t.Errorf("Mutex on a semaphore's name = %v, want ErrLocked", err)
	}
	if err := s.NewMutex("mutex").TryLock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NewSemaphore("mutex", 3).TryAcquire(ctx); !errors.Is(err, mongolock.ErrLimitMismatch) {
		t.Errorf("Semaphore on a Mutex's name = %v, want ErrLimitMismatch", err)
	}
}
