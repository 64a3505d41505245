package mongolock_test

// Change streams that a server refuses, or whose events come late
// (docs/replica-sets.md).

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"golang.org/x/sync/errgroup"

	"github.com/mongolock/mongolock"
)

// TestRefusedChangeStreams: a server that refuses change streams (Atlas's
// shared tiers: 8000; a user without the privilege: 13) has waiters poll,
// after one log line and one ChangeStream(false) event, and no attempt to
// open the stream again every few seconds.
func TestRefusedChangeStreams(t *testing.T) {
	for _, code := range []int{8000, 13} {
		t.Run(codeName(code), func(t *testing.T) {
			fault(t, "refuseChangeStreams", bson.E{Key: "code", Value: code}, bson.E{Key: "msg", Value: "refused by the test"})
			e := newEnv(t)
			var logs syncBuffer
			var mu sync.Mutex
			var events []bool
			l, cnt := e.locker("", mongolock.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))),
				mongolock.WithPollInterval(50*time.Millisecond),
				mongolock.WithObserver(mongolock.Observer{ChangeStream: func(on bool) {
					mu.Lock()
					events = append(events, on)
					mu.Unlock()
				}}))
			other, _ := e.locker("")
			ctx := ctxT(t, time.Minute)
			hold := session(t, other).NewMutex("job")
			if err := hold.Lock(ctx); err != nil {
				t.Fatal(err)
			}
			m := session(t, l).NewMutex("job")
			go func() {
				time.Sleep(time.Second)
				hold.Unlock()
			}()
			if err := m.Lock(ctx); err != nil {
				t.Fatal(err)
			}
			m.Unlock()
			if n := strings.Count(logs.String(), "no change streams"); n != 1 {
				t.Fatalf("logged %d times, want once:\n%s", n, logs.String())
			}
			if n := countOf(cnt.Commands(), "aggregate"); n != 1 {
				t.Fatalf("%d aggregates, want one attempt to open the stream", n)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(events) != 1 || events[0] {
				t.Fatalf("ChangeStream events %v, want one false", events)
			}
			if l.Streaming() {
				t.Fatal("Streaming() after the refusal")
			}
		})
	}
}

func codeName(code int) string {
	return map[int]string{8000: "AtlasError", 13: "Unauthorized"}[code]
}

// TestSlowEventsPoll: change events 300ms late (a sharded cluster's, or
// across regions) are too late to wait on with the default poll interval:
// the Locker's waiters poll (Streaming is false), its stream closes (no
// getMore while it polls), and they still get the lock in turn.
func TestSlowEventsPoll(t *testing.T) {
	fault(t, "delayEvents", bson.E{Key: "ms", Value: 300})
	e := newEnv(t)
	la, _ := e.locker("")
	lb, cb := e.locker("")
	ctx := ctxT(t, time.Minute)
	ma := session(t, la).NewMutex("job")
	mb := session(t, lb).NewMutex("job")
	stop := make(chan struct{})
	var g errgroup.Group
	for _, m := range []*mongolock.Mutex{ma, mb} {
		g.Go(func() error {
			for {
				select {
				case <-stop:
					return nil
				default:
				}
				if err := m.Lock(ctx); err != nil {
					return err
				}
				time.Sleep(50 * time.Millisecond)
				m.Unlock()
			}
		})
	}
	defer func() {
		close(stop)
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for lb.Streaming() || countOf(cb.Commands(), "getMore") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the waiters still wait on events 300ms late")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	cb.Reset()
	time.Sleep(time.Second)
	if n := countOf(cb.Commands(), "getMore"); n != 0 {
		t.Fatalf("%d getMores in a second of polling: the stream should be closed", n)
	}
	if n := countOf(cb.Commands(), "findAndModify"); n == 0 {
		t.Fatal("no acquire in a second: the waiters starve")
	}
}

// TestResumedStreamIsNotLate: a change stream whose link is cut (as at a
// failover) is resumed by the driver itself, inside its Next, and the
// events written during the outage come in the new cursor's first batches;
// their age is the outage's, not how late events come. The Locker must keep
// waiting on its stream, not take its events for slow and poll for a minute
// (which a full make test once did, when mongotest's filter failed every
// stream at once: TestContentionCost then counted polls). Events late after
// the resume are still judged so.
func TestResumedStreamIsNotLate(t *testing.T) {
	if !hasChangeStreams(t) {
		t.Skip("needs change streams")
	}
	e := newEnv(t)
	proxy, uri := newCutProxy(t)
	var mu sync.Mutex
	var told []bool // what the Observer's ChangeStream said
	l, cnt := e.locker(uri, mongolock.WithObserver(mongolock.Observer{ChangeStream: func(on bool) {
		mu.Lock()
		told = append(told, on)
		mu.Unlock()
	}}))
	other, _ := e.locker("")
	ctx := ctxT(t, time.Minute)
	so := session(t, other)
	hold := so.NewMutex("held")
	if err := hold.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	m := session(t, l).NewMutex("held")
	go func() { waited <- m.Lock(ctx) }()
	for !l.Streaming() {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the waiter tried, joined, and waits on the stream
	proxy.Cut()
	// 300 holds by the other Locker, 600 events over a few seconds: more
	// than one batch replays them (mongotest's hold 500 at most, MongoDB's
	// first 101), and the first live event after them comes late, while
	// mongotest filters them: it must not decide alone.
	for i := range 300 {
		om := so.NewMutex(fmt.Sprint("other-", i))
		if err := om.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		om.Unlock()
	}
	cnt.Reset()
	proxy.Restore()
	// The driver resumes the stream (an aggregate), which replays them.
	deadline := time.Now().Add(30 * time.Second)
	for countOf(cnt.Commands(), "aggregate") == 0 || countOf(cnt.Commands(), "getMore") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the stream was not resumed: %v", cnt.Commands())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // time to judge the replayed events
	if !l.Streaming() {
		t.Fatal("the Locker took the replayed events for late ones and polls")
	}
	if n := countOf(cnt.Commands(), "killCursors"); n != 0 {
		t.Fatalf("%d killCursors after the resume: the stream was closed", n)
	}
	// And the waiter still hears of the release at once.
	cnt.Reset()
	hold.Unlock()
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	m.Unlock()
	mu.Lock()
	if slices.Contains(told, false) {
		t.Fatalf("ChangeStream told %v: the stream went off", told)
	}
	mu.Unlock()
	t.Run("late after the resume", func(t *testing.T) {
		// Events that do come late after the resume are measured: with
		// events 300ms late, the waiter polls and the stream closes.
		fault(t, "delayEvents", bson.E{Key: "ms", Value: 300}) // skips on MongoDB
		if err := hold.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		go func() { waited <- m.Lock(ctx) }()
		deadline := time.Now().Add(20 * time.Second)
		for i := 0; l.Streaming(); i++ {
			if time.Now().After(deadline) {
				t.Fatal("events 300ms late after the resume were not judged slow")
			}
			om := so.NewMutex(fmt.Sprint("late-", i%10))
			if err := om.Lock(ctx); err != nil {
				t.Fatal(err)
			}
			om.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
		cnt.Reset()
		time.Sleep(500 * time.Millisecond)
		if n := countOf(cnt.Commands(), "getMore"); n != 0 {
			t.Fatalf("%d getMores while the waiter polls: the stream should be closed", n)
		}
		hold.Unlock()
		if err := <-waited; err != nil {
			t.Fatal(err)
		}
		m.Unlock()
	})
}
