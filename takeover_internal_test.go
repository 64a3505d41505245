package mongolock

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// streamingRegistry returns a registry whose change stream runs and whose
// safety poll is an hour away: any try after the first comes from what
// the waiter knew of the lease, never from a poll.
func streamingRegistry() (*waitRegistry, *serverClock) {
	f := &fakeLink{now: time.Unix(1e9, 0), delays: [][2]time.Duration{{0, 0}}}
	clock := newServerClock(f, standalone(f.hello), 0)
	clock.Ensure(context.Background())
	r := newWaitRegistry(options{pollInterval: time.Hour, safetyPoll: time.Hour, window: defaultWindow}, clock, nil)
	r.streaming(true)
	return r, clock
}

// waitTwice runs a wait whose first try fails and whose second succeeds,
// reading the lock with peek, and calls between after the first read; it
// reports whether the second try came within 10s (the safety poll is an
// hour away).
func waitTwice(t *testing.T, r *waitRegistry, peek func(context.Context) peeked, between func()) bool {
	t.Helper()
	tries := make(chan struct{}, 10)
	peeks := make(chan struct{}, 10)
	n := 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- runWait(ctx, r, nil, "n", attempt{
			try: func(context.Context) (bool, error) {
				n++
				tries <- struct{}{}
				return n > 1, nil
			},
			peek: func(ctx context.Context) peeked { defer func() { peeks <- struct{}{} }(); return peek(ctx) },
		}, nil, nil)
	}()
	<-tries
	<-peeks
	between()
	select {
	case <-tries:
		return <-done == nil
	case <-time.After(10 * time.Second):
		cancel()
		<-done
		return false
	}
}

// TestFreeReadTriesAtOnce (issue 27, first cause): a read after a failed
// attempt that finds the lease over (or the lock free) has the head try
// again at once, not at its safety poll.
func TestFreeReadTriesAtOnce(t *testing.T) {
	r, _ := streamingRegistry()
	if !waitTwice(t, r, func(context.Context) peeked { return peeked{free: true} }, func() {}) {
		t.Fatal("the read found the lock free, and the head waited for its safety poll")
	}
}

// TestNewsKeepsLeaseEndTimer (issue 27, second cause): news that comes
// after the head armed its timer for the holder's lease end, and tells
// nothing of that lease (an acquire whose event has no lease end), must
// not put the try off to the safety poll.
func TestNewsKeepsLeaseEndTimer(t *testing.T) {
	r, clock := streamingRegistry()
	end := clock.Now().Add(50 * time.Millisecond)
	ok := waitTwice(t, r, func(context.Context) peeked { return peeked{until: end} }, func() {
		r.taken("n", time.Time{}, false)
	})
	if !ok {
		t.Fatal("news after the lease-end timer was armed put the try off to the safety poll")
	}
}

// TestFreeReadAgainBacksOff: a read that shows the lock free after a try
// that failed on a free read already does not bring a try at once again
// (a lock this kind of hold cannot take: no loop of reads and tries).
func TestFreeReadAgainBacksOff(t *testing.T) {
	r, _ := streamingRegistry()
	var tries, peeks int
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	runWait(ctx, r, nil, "n", attempt{
		try:  func(context.Context) (bool, error) { tries++; return false, nil },
		peek: func(context.Context) peeked { peeks++; return peeked{free: true} },
	}, nil, nil)
	if tries != 2 || peeks != 2 {
		t.Fatalf("%d tries and %d reads of a lock that reads free but cannot be taken; want 2 and 2", tries, peeks)
	}
}

// TestInsertEventTellsLeaseEnd (issue 27, third cause): the first acquire
// of a name is an insert, whose lease end is in its full document.
func TestInsertEventTellsLeaseEnd(t *testing.T) {
	end := time.Unix(1e9, 0).UTC()
	doc, err := bson.Marshal(bson.D{{Key: "_id", Value: "n"}, {Key: "holder", Value: "h"}, {Key: "expiresAt", Value: end}})
	if err != nil {
		t.Fatal(err)
	}
	ev := changeEvent{OperationType: "insert", FullDocument: doc}
	if got := ev.leaseEnd(); !got.Equal(end) {
		t.Fatalf("an insert's lease end: %v, want %v", got, end)
	}
}

// TestWaitersRefreshBeforeStale (issues 22 and 28): a live waiter joins
// again well within staleAfter, even while it waits for a lock kept to a
// time far off (WithHoldAtLeast), which it would otherwise not poll.
func TestWaitersRefreshBeforeStale(t *testing.T) {
	// A wait lasts rejoinAfter at most, and the attempt that ends it joins
	// again when the last join is older than rejoinAfter: entries are
	// refreshed at least every 2*rejoinAfter.
	if 2*rejoinAfter >= staleAfter {
		t.Fatalf("waiters join again every %v at worst: not within the %v after which their entries go", 2*rejoinAfter, staleAfter)
	}
	r, clock := streamingRegistry()
	r.mu.Lock()
	r.queue("n").told.firm = clock.Now().Add(time.Hour) // kept for an hour
	r.mu.Unlock()
	if d, firm, _ := testNextWait(r, "n"); !firm || d > rejoinAfter {
		t.Fatalf("a wait for a lock kept an hour: %v (firm %v), want at most %v", d, firm, rejoinAfter)
	}
}

// TestStaleEntriesOnce: a Locker with entries of both kinds is stale only
// when its last join is, and its entries are unset once: a path twice in
// one update would make the server refuse the whole release.
func TestStaleEntriesOnce(t *testing.T) {
	now := time.Unix(1e9, 0)
	old, fresh := now.Add(-3*time.Minute), now.Add(-time.Second)
	d := turnsDoc{
		Waiting: map[string]time.Time{"dead": old, "moved": old, "live": fresh},
		Pollers: map[string]time.Time{"dead": old.Add(time.Second), "moved": fresh},
	}
	w := d.waiters(now, staleAfter)
	if len(w.stale) != 1 || w.stale[0] != "dead" {
		t.Fatalf("stale: %v, want [dead] (moved joined again as a poller)", w.stale)
	}
	if keys := staleEntries(append(w.stale, w.stale...), "", ""); len(keys) != 3 {
		t.Fatalf("unset %v, want dead's three entries once", keys)
	}
	if keys := staleEntries([]string{"dead"}, "dead", ""); len(keys) != 0 {
		t.Fatalf("unset %v of the heir, whom the release writes", keys)
	}
}

// TestJoinerIsNotStale (issue 28, item 1): a Locker whose entry the
// acquire saw stale, and whose join the change stream told during the
// hold, is back: the release names it and keeps its entries, and so does
// a keep.
func TestJoinerIsNotStale(t *testing.T) {
	r, clock := streamingRegistry()
	r.self = "a"
	acquired := clock.Now()
	doc := turnsDoc{Waiting: map[string]time.Time{"c": acquired.Add(-staleAfter - time.Second)}}
	w := doc.waiters(acquired, staleAfter)
	if len(w.streaming) != 0 || !slices.Equal(w.stale, []string{"c"}) {
		t.Fatalf("at the acquire: streaming %v, stale %v; want none, [c]", w.streaming, w.stale)
	}
	r.mu.Lock()
	r.queue("n").local = 1
	r.mu.Unlock()
	r.joined("n", "c") // its join, told by the change stream during the hold
	if stale := r.staleOf("n", w); len(stale) != 0 {
		t.Fatalf("a keep removes %v, want none", stale)
	}
	if tr := r.turnFor("n", w, acquired, clock.Now()); tr.heir != "c" || len(tr.stale) != 0 {
		t.Fatalf("the release names %q and removes %v; want heir c, nothing removed", tr.heir, tr.stale)
	}
}

// TestJoinWhoseReplyWasLost: a join whose reply was lost (it may or may
// not have applied) is sent again at the next attempt, as news, rather
// than taken for a refresh of the entry; one that was answered is not
// sent again until rejoinAfter, and then as a refresh, in the same wait.
func TestJoinWhoseReplyWasLost(t *testing.T) {
	r, _ := streamingRegistry()
	var sent []entry
	r.entries = fakeEntries(func(e entry) error {
		sent = append(sent, e)
		if len(sent) == 1 {
			return context.DeadlineExceeded // the reply lost
		}
		return nil
	})
	ctx := context.Background()
	r.join(ctx, "n")
	r.join(ctx, "n")
	r.join(ctx, "n")
	if len(sent) != 2 || !sent[0].news || !sent[0].began || !sent[1].news || !sent[1].began {
		t.Fatalf("joins sent %+v; want the first again, as the wait's first news, then none", sent)
	}
	r.mu.Lock()
	r.queue("n").member.joinedAt = time.Now().Add(-rejoinAfter - time.Millisecond)
	r.mu.Unlock()
	r.join(ctx, "n")
	if len(sent) != 3 || sent[2].news || sent[2].began {
		t.Fatalf("after rejoinAfter: %+v; want a refresh", sent[2:])
	}
	// Stopped (a paused process) for so long that a release may have
	// removed its entry as stale: news again.
	r.mu.Lock()
	r.queue("n").member.joinedAt = time.Now().Add(-staleAfter)
	r.mu.Unlock()
	r.join(ctx, "n")
	if len(sent) != 4 || !sent[3].news || sent[3].began {
		t.Fatalf("after staleAfter: %+v; want news", sent[3:])
	}
}

// TestStaleSinceAcquireNotNamed (issue 28, item 1): judged by its
// acquire's view (a short hold), a release does not name a waiter whose
// entry has grown stale since, and does not remove it either (a refresh
// since would not show in that view).
func TestStaleSinceAcquireNotNamed(t *testing.T) {
	r, clock := streamingRegistry()
	r.self = "a"
	acquired := clock.Now()
	doc := turnsDoc{Waiting: map[string]time.Time{"b": acquired.Add(-staleAfter + time.Second)}}
	w := doc.waiters(acquired, staleAfter)
	if !slices.Equal(w.streaming, []string{"b"}) {
		t.Fatalf("at the acquire: streaming %v, want [b]", w.streaming)
	}
	if tr := r.turnFor("n", w, acquired, acquired.Add(2*time.Second)); tr.heir != "" || len(tr.stale) != 0 {
		t.Fatalf("the release names %q and removes %v; want neither", tr.heir, tr.stale)
	}
}

// fakeEntries is a store's side of the turns whose joins go to a function
// of the test's and whose leaves do nothing.
type fakeEntries func(e entry) error

func (f fakeEntries) join(_ context.Context, _, _ string, e entry) error { return f(e) }
func (f fakeEntries) leave(context.Context, string, string) error        { return nil }
