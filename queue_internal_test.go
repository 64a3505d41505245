package mongolock

import (
	"testing"
	"time"
)

// TestQueueStateChanges: the in-process queue's decisions, without a
// server: what a new waiter does (head, try at once) and what a waiting
// head is told (kicked, freed), after each sequence of what the registry
// hears (this process's holds, the change stream's news).
func TestQueueStateChanges(t *testing.T) {
	later := func(r *waitRegistry) time.Time { now, _ := r.clock.Read(); return now.Add(time.Minute) }
	type step func(r *waitRegistry)
	held := func(r *waitRegistry) { r.held("n") }
	released := func(r *waitRegistry) { r.released("n") }
	kept := func(r *waitRegistry) { r.kept("n", later(r)) }
	takenByOther := func(r *waitRegistry) { r.taken("n", later(r), false) }
	releasedByOther := func(r *waitRegistry) { r.notify("n") }
	streamDown := func(r *waitRegistry) { r.streaming(false) }
	keptByOther := func(r *waitRegistry) { r.taken("n", later(r), true) }
	keptUntilPast := func(r *waitRegistry) { now, _ := r.clock.Read(); r.taken("n", now.Add(-time.Minute), true) }
	turnOfOther := func(r *waitRegistry) { r.turn("n", "other", later(r)) }
	turnEnded := func(r *waitRegistry) { now, _ := r.clock.Read(); r.turn("n", "other", now.Add(-time.Minute)) }
	turnOfSelf := func(r *waitRegistry) { r.turn("n", r.self, later(r)) }
	// A waiter of this process that was there when the stream told of
	// another's acquire, and left: the queue keeps the news.
	visitedWhile := func(news step) step {
		return func(r *waitRegistry) {
			v := &waiter{kick: make(chan struct{}, 1)}
			r.enqueue("n", v, false)
			news(r)
			r.leave("n", v, false)
		}
	}
	visitedWhileTaken := visitedWhile(takenByOther)
	for _, c := range []struct {
		what          string
		before        []step // before the waiter comes
		after         []step // once it waits
		head, tryNow  bool   // the waiter, as it comes
		kicked, freed bool   // what it was told since
	}{
		{what: "nothing known: a new head tries at once, a second waits",
			head: true, tryNow: true},
		{what: "a hold of this process: the head waits, and its release frees it",
			before: []step{held}, after: []step{released},
			head: true, kicked: true, freed: true},
		{what: "kept by this process's hold (WithHoldAtLeast): the head waits for its end",
			before: []step{held, kept},
			head:   true},
		{what: "another's release during this process's hold: old news, no wake",
			before: []step{held}, after: []step{releasedByOther},
			head: true},
		{what: "taken by another, as the stream told an earlier waiter: a new head waits",
			before: []step{visitedWhileTaken},
			head:   true},
		{what: "taken by another while the head waits: kicked (its timer may be moot), not freed",
			after: []step{takenByOther},
			head:  true, tryNow: true, kicked: true},
		{what: "then another's release: the head is freed",
			before: []step{visitedWhileTaken}, after: []step{releasedByOther},
			head: true, kicked: true, freed: true},
		{what: "kept by another (WithHoldAtLeast), as the stream told: a new head waits for its end",
			before: []step{visitedWhile(keptByOther)},
			head:   true},
		{what: "kept until a time already past: the head is freed",
			after: []step{keptUntilPast},
			head:  true, tryNow: true, kicked: true, freed: true},
		{what: "another Locker's turn, as the stream told: a new head waits for its end",
			before: []step{visitedWhile(turnOfOther)},
			head:   true},
		{what: "another Locker's turn while the head waits: no kick (a timer wakes it at the turn's end)",
			after: []step{turnOfOther},
			head:  true, tryNow: true},
		{what: "another Locker's turn that has ended: a new head tries at once",
			before: []step{visitedWhile(turnEnded)},
			head:   true, tryNow: true},
		{what: "this Locker's turn while the head waits: the head is freed",
			after: []step{turnOfSelf},
			head:  true, tryNow: true, kicked: true, freed: true},
		{what: "the stream down: another's acquire and release are not news to act on",
			before: []step{streamDown}, after: []step{takenByOther, releasedByOther},
			head: true, tryNow: true},
	} {
		r := eventsRegistry()
		r.self = "me"
		r.eventLag(time.Millisecond)
		for _, s := range c.before {
			s(r)
		}
		w := &waiter{kick: make(chan struct{}, 1)}
		head, tryNow := r.enqueue("n", w, false)
		secondHead, secondTo := r.enqueue("n", &waiter{kick: make(chan struct{}, 1)}, false)
		for _, s := range c.after {
			s(r)
		}
		kicked := false
		select {
		case <-w.kick:
			kicked = true
		default:
		}
		freed := r.kicked("n", w, false).freed
		if head != c.head || tryNow != c.tryNow || kicked != c.kicked || freed != c.freed || secondHead || secondTo {
			t.Errorf("%s: head %v, tries at once %v, kicked %v, freed %v (second: head %v, tries %v); want %v, %v, %v, %v (second waits)",
				c.what, head, tryNow, kicked, freed, secondHead, secondTo, c.head, c.tryNow, c.kicked, c.freed)
		}
	}
}

// TestKickedHeadWaitsForKeptEnd: a polling head kicked when this process's
// hold ended kept (WithHoldAtLeast) is told, in the one decision that it
// heads the queue, to read the lock at the kept end (the wait counts from
// then, however long its join takes: waiting.kicked).
func TestKickedHeadWaitsForKeptEnd(t *testing.T) {
	r, clock := testRegistry(t)
	w := &waiter{kick: make(chan struct{}, 1)}
	r.held("n")
	r.enqueue("n", w, false)
	r.kept("n", clock.Now().Add(2*time.Second))
	k := r.kicked("n", w, true)
	if !k.head || k.freed || !k.next.reads || k.next.wait < 1900*time.Millisecond || k.next.wait > 2100*time.Millisecond {
		t.Errorf("kicked after a keep of 2s: %+v; want the head told to read in about 2s", k)
	}
}
