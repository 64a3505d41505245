package mongolock_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mongolock/mongolock"
)

// recorded is an Observer that records what it is told.
type recorded struct {
	mu     sync.Mutex
	events []string
	lost   []error
}

func (r *recorded) add(s string) {
	r.mu.Lock()
	r.events = append(r.events, s)
	r.mu.Unlock()
}

func (r *recorded) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

func (r *recorded) observer() mongolock.Observer {
	return mongolock.Observer{
		Acquired: func(ev mongolock.Event) { r.add(fmt.Sprintf("acquired %s %s %d", ev.Kind, ev.Name, ev.Token)) },
		Released: func(ev mongolock.Event) { r.add(fmt.Sprintf("released %s %s %d", ev.Kind, ev.Name, ev.Token)) },
		Lost: func(ev mongolock.Event) {
			r.add(fmt.Sprintf("lost %s %s %d", ev.Kind, ev.Name, ev.Token))
			r.mu.Lock()
			r.lost = append(r.lost, ev.Err)
			r.mu.Unlock()
		},
		Renewed: func(holds int, _ time.Duration, err error) { r.add(fmt.Sprintf("renewed %d %v", holds, err)) },
		ChangeStream: func(on bool) {
			if on {
				r.add("stream on")
			}
		},
	}
}

// TestObserver: an Observer hears of holds taken and released by each
// primitive, by kind and name, of keepalive ticks, of the change stream
// coming on for a waiter, and of a hold lost when the link is cut.
func TestObserver(t *testing.T) {
	e := newEnv(t)
	var rec recorded
	l, _ := e.locker("", mongolock.WithObserver(rec.observer()))
	ctx := ctxT(t, time.Minute)
	s := session(t, l)
	m := s.NewMutex("m")
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	m.Unlock()
	p, err := s.NewSemaphore("sem", 2).Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p.Release()
	rw := s.NewRWMutex("rw")
	if err := rw.RLock(ctx); err != nil {
		t.Fatal(err)
	}
	if !mongolock.RenewNow(s) {
		t.Fatal("renewal failed")
	}
	rw.RUnlock()
	el := s.NewElection("el")
	if err := el.Campaign(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	el.Resign(ctx)
	got := rec.all()
	for _, want := range []string{
		"acquired mutex m 1", "released mutex m 1",
		"acquired permit sem 1", "released permit sem 1",
		"acquired read rw 0", "renewed 1 <nil>", "released read rw 0",
		"acquired election el 1", "released election el 1",
	} {
		if !slices.Contains(got, want) {
			t.Fatalf("no %q in %v", want, got)
		}
	}
	if hasChangeStreams(t) {
		// A waiter opens the change stream.
		other, _ := e.locker("")
		held := session(t, other).NewMutex("w")
		if err := held.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		waited := make(chan error, 1)
		go func() { waited <- s.NewMutex("w").Lock(ctx) }()
		for !slices.Contains(rec.all(), "stream on") {
			time.Sleep(10 * time.Millisecond)
		}
		held.Unlock()
		if err := <-waited; err != nil {
			t.Fatal(err)
		}
	}
	// A hold lost to a cut link.
	proxy, uri := newCutProxy(t)
	var cutRec recorded
	cut, _ := e.locker(uri, mongolock.WithObserver(cutRec.observer()))
	cm := session(t, cut, mongolock.WithTTL(2*time.Second)).NewMutex("cut")
	if err := cm.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	<-cm.Done()
	for !slices.Contains(cutRec.all(), "lost mutex cut 1") {
		time.Sleep(10 * time.Millisecond)
	}
	cutRec.mu.Lock()
	lostErr := cutRec.lost[0]
	cutRec.mu.Unlock()
	if !errors.Is(lostErr, mongolock.ErrLockLost) {
		t.Fatalf("lost with %v, want ErrLockLost", lostErr)
	}
}
