package mongolock_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mongolock/mongolock"
)

// TestRWMutexExclusion: readers and writers on 6 sessions with separate
// clients. The test's own counts of live holds (raised after the lock
// returns, lowered before the unlock) never show a reader with a writer or
// two writers, and readers do hold together.
func TestRWMutexExclusion(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 5*time.Minute)
	var readers, writers, mostReaders atomic.Int64
	var mu sync.Mutex
	tokens := map[int64]bool{}
	var wg sync.WaitGroup
	for range 6 {
		l, _ := e.locker("")
		s := session(t, l)
		wg.Go(func() {
			rw := s.NewRWMutex("table")
			for range 15 {
				if err := rw.Lock(ctx); err != nil {
					t.Error(err)
					return
				}
				if w := writers.Add(1); w != 1 || readers.Load() != 0 {
					t.Errorf("a writer holds with %d writers and %d readers", w, readers.Load())
				}
				mu.Lock()
				if tokens[rw.Token()] {
					t.Errorf("write token %d seen twice", rw.Token())
				}
				tokens[rw.Token()] = true
				mu.Unlock()
				time.Sleep(time.Millisecond)
				writers.Add(-1)
				if err := rw.Unlock(); err != nil {
					t.Error(err)
					return
				}
			}
		})
		for range 2 {
			wg.Go(func() {
				rw := s.NewRWMutex("table")
				for range 30 {
					if err := rw.RLock(ctx); err != nil {
						t.Error(err)
						return
					}
					n := readers.Add(1)
					if writers.Load() != 0 {
						t.Errorf("a reader holds with a writer")
					}
					for m := mostReaders.Load(); n > m && !mostReaders.CompareAndSwap(m, n); m = mostReaders.Load() {
					}
					time.Sleep(2 * time.Millisecond)
					readers.Add(-1)
					if err := rw.RUnlock(); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	if len(tokens) != 6*15 {
		t.Fatalf("%d write holds, want %d", len(tokens), 6*15)
	}
	if mostReaders.Load() < 2 {
		t.Fatalf("readers never held together (at most %d)", mostReaders.Load())
	}
	t.Logf("up to %d readers at once; %d write holds", mostReaders.Load(), len(tokens))
}

// TestRWMutexWriterNotStarved: while readers of another process keep
// arriving, with always one in, a writer gets in, and no reader holds
// with it.
func TestRWMutexWriterNotStarved(t *testing.T) {
	e := newEnv(t)
	lr, _ := e.locker("")
	lw, _ := e.locker("")
	ctx := ctxT(t, time.Minute)
	sr := session(t, lr)
	stop := make(chan struct{})
	var readers, during atomic.Int64
	var writing atomic.Bool
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			rw := sr.NewRWMutex("doc")
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := rw.RLock(ctx); err != nil {
					t.Error(err)
					return
				}
				readers.Add(1)
				if writing.Load() {
					during.Add(1)
				}
				time.Sleep(20 * time.Millisecond)
				readers.Add(-1)
				rw.RUnlock()
			}
		})
	}
	for readers.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	w := session(t, lw).NewRWMutex("doc")
	if err := w.TryLock(ctx); !errors.Is(err, mongolock.ErrLocked) {
		t.Fatalf("TryLock with readers in = %v, want ErrLocked", err)
	}
	if err := w.Lock(ctx); err != nil {
		t.Fatalf("the writer did not get in: %v", err)
	}
	writing.Store(true)
	if n := readers.Load(); n != 0 {
		t.Errorf("%d readers hold with the writer", n)
	}
	time.Sleep(50 * time.Millisecond)
	writing.Store(false)
	if err := w.Unlock(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if during.Load() != 0 {
		t.Fatalf("%d read holds began while the writer held", during.Load())
	}
}

// TestRWMutexRoundTrips: RLock+RUnlock and Lock+Unlock cost 2 commands
// each with no one in the way; a keepalive tick of a session holding a
// read lock and a Mutex is one command.
func TestRWMutexRoundTrips(t *testing.T) {
	e := newEnv(t)
	l, cnt := e.locker("")
	ctx := ctxT(t, time.Minute)
	s := session(t, l, mongolock.WithTTL(time.Hour))
	rw := s.NewRWMutex("rt")
	for range 2 {
		cnt.Reset()
		if err := rw.RLock(ctx); err != nil {
			t.Fatal(err)
		}
		if err := rw.RUnlock(); err != nil {
			t.Fatal(err)
		}
		if got := cnt.Commands(); len(got) != 2 {
			t.Fatalf("RLock+RUnlock sent %v, want 2 commands", got)
		}
		cnt.Reset()
		if err := rw.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		if err := rw.Unlock(); err != nil {
			t.Fatal(err)
		}
		if got := cnt.Commands(); len(got) != 2 {
			t.Fatalf("Lock+Unlock sent %v, want 2 commands", got)
		}
	}
	if err := rw.RLock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.NewMutex("m").Lock(ctx); err != nil {
		t.Fatal(err)
	}
	cnt.Reset()
	if !mongolock.RenewNow(s) {
		t.Fatal("renewal failed")
	}
	if got := cnt.Commands(); len(got) != 1 {
		t.Fatalf("a keepalive tick with a read lock and a Mutex sent %v, want 1 command", got)
	}
	select {
	case <-rw.RDone():
		t.Fatalf("the read hold ended at the renewal: %v", rw.RErr())
	default:
	}
}

// TestRWMutexReaderCutOff: a reader cut off from the server loses its hold
// before its lease ends, and a writer of another process gets in after the
// lease; bad calls are refused.
func TestRWMutexReaderCutOff(t *testing.T) {
	e := newEnv(t)
	proxy, uri := newCutProxy(t)
	cut, _ := e.locker(uri)
	other, _ := e.locker("")
	ctx := ctxT(t, time.Minute)
	r := session(t, cut, mongolock.WithTTL(2*time.Second)).NewRWMutex("rw")
	if err := r.RLock(ctx); err != nil {
		t.Fatal(err)
	}
	w := session(t, other).NewRWMutex("rw")
	proxy.Cut()
	if err := w.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.RDone():
	default:
		t.Fatal("the writer got in before the cut-off reader gave up")
	}
	if !errors.Is(r.RErr(), mongolock.ErrLockLost) {
		t.Fatalf("RErr = %v, want ErrLockLost", r.RErr())
	}
	if err := w.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := w.Unlock(); !errors.Is(err, mongolock.ErrNotHeld) {
		t.Fatalf("second Unlock = %v", err)
	}
	if err := w.RUnlock(); !errors.Is(err, mongolock.ErrNotHeld) {
		t.Fatalf("RUnlock never read-locked = %v", err)
	}
	if err := session(t, other).NewRWMutex("a\x1fb").RLock(ctx); !errors.Is(err, mongolock.ErrInvalidName) {
		t.Fatalf("bad name = %v", err)
	}
}
