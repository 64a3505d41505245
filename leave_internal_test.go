package mongolock

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// This Locker's entry among a lock's waiting Lockers, left in the
// background when its last waiter gives up (turnstate.go).

// orderedEntries records this Locker's joins and leaves as they land; a
// leave lands only once gate is closed.
type orderedEntries struct {
	gate   chan struct{}
	mu     sync.Mutex
	landed []string
}

func (o *orderedEntries) join(context.Context, string, string, entry) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.landed = append(o.landed, "join")
	return nil
}

func (o *orderedEntries) leave(context.Context, string, string) error {
	<-o.gate
	o.mu.Lock()
	defer o.mu.Unlock()
	o.landed = append(o.landed, "leave")
	return nil
}

// leavingRegistry returns a registry whose leave of the name "n" is in
// flight until the entries' gate closes.
func leavingRegistry(t *testing.T) (*waitRegistry, *serverClock, *orderedEntries) {
	r, clock := testRegistry(t)
	o := &orderedEntries{gate: make(chan struct{})}
	r.entries = o
	r.mu.Lock()
	r.leaveTurnsLocked("n")
	r.mu.Unlock()
	return r, clock, o
}

// TestJoinAfterLeaveLands: a wait that begins while this Locker's leave
// of the name (its last waiter gave up) is in flight joins only once the
// leave has landed, which would otherwise undo the join and leave the
// Locker out of every turn (TestWaitAgainRightAfterGivingUp).
func TestJoinAfterLeaveLands(t *testing.T) {
	r, _, o := leavingRegistry(t)
	r.mu.Lock()
	r.leaveTurnsLocked("n") // a second leave while the first is in flight: nothing to do
	r.mu.Unlock()
	joined := make(chan struct{})
	go func() {
		defer close(joined)
		r.join(context.Background(), "n")
	}()
	time.Sleep(20 * time.Millisecond) // a join that did not wait lands meanwhile
	close(o.gate)
	<-joined
	r.bg.close()
	if !slices.Equal(o.landed, []string{"leave", "join"}) {
		t.Fatalf("landed %v, want one leave, then the join", o.landed)
	}
	if len(r.leaving) != 0 {
		t.Fatalf("%d leaves still recorded in flight", len(r.leaving))
	}
}

// TestNoStayDuringLeave: while this Locker's leave of a name is in flight,
// a join whose context ends first sends nothing, and a release of a hold
// whose process has waiters names the next Locker without staying among
// the waiting ones (its entry could land before the leave); once the
// leave has landed, the release stays again.
func TestNoStayDuringLeave(t *testing.T) {
	r, clock, o := leavingRegistry(t)
	r.mu.Lock()
	q := r.queue("n")
	q.waiters = append(q.waiters, &waiter{kick: make(chan struct{}, 1)})
	r.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r.join(ctx, "n") // a join it needs (it holds nothing), given up
	r.mu.Lock()
	q.local = 1
	q.own.run = pollerRunLength // its run is over: the turn passes
	r.mu.Unlock()
	w := waiters{streaming: []string{"other"}, read: true}
	if tr := r.turnFor("n", w, clock.Now(), clock.Now()); tr.heir != "other" || tr.stay {
		t.Fatalf("during the leave: heir %q, stay %v; want other, no stay", tr.heir, tr.stay)
	}
	close(o.gate)
	r.bg.close()
	if !slices.Equal(o.landed, []string{"leave"}) {
		t.Fatalf("landed %v, want the leave alone", o.landed)
	}
	r.mu.Lock()
	q.own.run = pollerRunLength
	r.mu.Unlock()
	if tr := r.turnFor("n", w, clock.Now(), clock.Now()); tr.heir != "other" || !tr.stay {
		t.Fatalf("after the leave: heir %q, stay %v; want other, stay", tr.heir, tr.stay)
	}
}
