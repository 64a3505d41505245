package mongolock_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mongolock/mongolock"
)

// TestElection runs 5 campaigners on separate clients. Leaders give
// leadership up in turn by resigning, by closing their session, and (the
// one behind a proxy) by losing the server. There is never more than one
// leader; an observer sees every leader, in order, once; Leader agrees.
func TestElection(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 3*time.Minute)
	proxy, proxied := newCutProxy(t)
	obsLocker, _ := e.locker("", mongolock.WithPollInterval(20*time.Millisecond))
	obs := session(t, obsLocker).NewElection("leader")
	if _, err := obs.Leader(ctx); !errors.Is(err, mongolock.ErrNoLeader) {
		t.Fatalf("Leader before any campaign: %v", err)
	}
	obsCtx, stopObs := context.WithCancel(ctx)
	observed := obs.Observe(obsCtx)
	var (
		seenMu sync.Mutex
		seen   []string
	)
	obsDone := make(chan struct{})
	go func() {
		defer close(obsDone)
		for v := range observed {
			seenMu.Lock()
			seen = append(seen, v)
			seenMu.Unlock()
		}
	}()

	var (
		leaders atomic.Int32
		mu      sync.Mutex
		order   []string
	)
	const rounds = 3
	var wg sync.WaitGroup
	for i := range 5 {
		uri := ""
		if i == 0 {
			uri = proxied
		}
		l, _ := e.locker(uri, mongolock.WithPollInterval(50*time.Millisecond))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range rounds {
				if i == 0 && round > 0 {
					return // cut off from the server after its first term
				}
				s, err := l.NewSession(ctx, mongolock.WithTTL(time.Second), mongolock.WithRenewInterval(200*time.Millisecond))
				if err != nil {
					t.Error(err)
					return
				}
				el := s.NewElection("leader")
				value := fmt.Sprintf("c%d-r%d", i, round)
				if err := el.Campaign(ctx, value); err != nil {
					t.Error(err)
					s.Close()
					return
				}
				if n := leaders.Add(1); n != 1 {
					t.Errorf("%d leaders at once", n)
				}
				mu.Lock()
				order = append(order, value)
				mu.Unlock()
				if got, err := el.Leader(ctx); err != nil || got != value {
					t.Errorf("Leader = %q, %v; want %q", got, err, value)
				}
				time.Sleep(150 * time.Millisecond) // lead for a while
				switch {
				case i == 0: // lose the server: leadership ends by itself
					proxy.Cut()
					<-el.Done()
					leaders.Add(-1)
				case round%2 == 0:
					leaders.Add(-1)
					if err := el.Resign(ctx); err != nil {
						t.Error(err)
					}
					<-el.Done()
				default:
					leaders.Add(-1)
				}
				s.Close()
			}
		}()
	}
	wg.Wait()
	// Let the observer catch the last leader, then stop it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(order)
		mu.Unlock()
		seenMu.Lock()
		got := len(seen)
		seenMu.Unlock()
		if got >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopObs()
	<-obsDone
	if !slices.Equal(seen, order) {
		t.Fatalf("observed %q\nleaders  %q", seen, order)
	}
	// A leadership lost with the server (c0's) is not freed: its lease runs
	// out on the server, within a TTL (1s) of its last renewal.
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, err := obs.Leader(ctx)
		if errors.Is(err, mongolock.ErrNoLeader) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Leader after all resigned, and the lost lease ran out: %v", err)
		}
	}
	t.Logf("%d leaderships, observed in order: %v", len(order), seen)
}

// TestElectionToken (issue 22, item 3): an Election's Token is 0 before it
// led, then the fencing token Status shows for its leadership, growing
// with every leadership of the name; Run's lead reads it on its Election.
func TestElectionToken(t *testing.T) {
	e := newEnv(t)
	l, _ := e.locker("")
	ctx := ctxT(t, time.Minute)
	a, b := session(t, l).NewElection("tok"), session(t, l).NewElection("tok")
	if a.Token() != 0 {
		t.Fatalf("Token before leading = %d, want 0", a.Token())
	}
	var last int64
	for i, el := range []*mongolock.Election{a, b, a} {
		if err := el.Campaign(ctx, fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
		info, err := l.Status(ctx, "tok")
		if err != nil {
			t.Fatal(err)
		}
		if el.Token() != info.Token || el.Token() <= last {
			t.Fatalf("leadership %d: Token %d, Status shows %d, the last was %d", i, el.Token(), info.Token, last)
		}
		last = el.Token()
		if err := el.Resign(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if a.Token() != last {
		t.Fatalf("Token after resigning = %d, want the last leadership's %d", a.Token(), last)
	}
	runCtx, stop := context.WithCancel(ctx)
	var inLead int64
	err := b.Run(runCtx, "b", func(context.Context) { inLead = b.Token(); stop() })
	if !errors.Is(err, context.Canceled) || inLead <= last {
		t.Fatalf("Run = %v; lead read Token %d, want above %d", err, inLead, last)
	}
}
