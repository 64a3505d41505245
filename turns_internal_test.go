package mongolock

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func TestNextHeir(t *testing.T) {
	for _, c := range []struct {
		me      string
		waiting []string
		want    string
	}{
		{"b", []string{"c", "a"}, "c"},
		{"c", []string{"b", "a"}, "a"}, // wraps round
		{"a", []string{"c", "b"}, "b"},
		{"a", nil, ""},
		{"a", []string{"a"}, ""}, // only itself: anyone may take it
		{"b", []string{"b", "a"}, "a"},
	} {
		if got := nextHeir(c.me, c.waiting); got != c.want {
			t.Errorf("nextHeir(%q, %v) = %q, want %q", c.me, c.waiting, got, c.want)
		}
	}
	now := time.Unix(100, 0)
	const pollTurn = 30 * time.Millisecond
	for _, c := range []struct {
		what                          string
		w                             waiters
		local, streaming, stay, polls bool
		heir                          string
		turn                          time.Duration
	}{
		{"another waits", waiters{streaming: []string{"b"}}, true, true, true, false, "b", turnGrace},
		{"no other waits: the local head tries at once", waiters{}, true, true, false, false, "", 0},
		{"no local waiters", waiters{streaming: []string{"b"}}, false, true, false, false, "b", turnGrace},
		{"a poller is next, its turn is longer", waiters{streaming: []string{"c"}, pollers: []string{"b"}}, true, true, true, false, "b", turnGrace + pollTurn},
		{"the releaser polls, it stays as a poller", waiters{streaming: []string{"b"}}, true, false, true, true, "b", turnGrace},
	} {
		tr := nextTurn("a", c.w, c.local, c.streaming, run{holds: runLength - 1, lasted: pollerRun}, pollTurn, now)
		if tr.heir != c.heir || tr.stay != c.stay || tr.polls != c.polls || (c.heir != "" && !tr.until.Equal(now.Add(c.turn))) {
			t.Errorf("%s: %+v, want heir %q stay %v polls %v turn %v", c.what, tr, c.heir, c.stay, c.polls, c.turn)
		}
	}
}

func TestTurnRuns(t *testing.T) {
	now := time.Unix(100, 0)
	w := waiters{streaming: []string{"b"}}
	for n := range runLength - 1 {
		if tr := nextTurn("a", w, true, true, run{holds: n}, 0, now); tr.heir != "a" || tr.stay {
			t.Errorf("run %d with local waiters: %+v, want heir a (itself)", n, tr)
		}
	}
	if tr := nextTurn("a", w, true, true, run{holds: runLength - 1}, 0, now); tr.heir != "b" || !tr.stay {
		t.Errorf("after a run of %d: %+v, want heir b", runLength, tr)
	}
	if tr := nextTurn("a", w, false, true, run{}, 0, now); tr.heir != "b" {
		t.Errorf("no local waiters: %+v, want heir b", tr)
	}
}

// TestTurnRunsWithPollers: while a poller takes part in the turns, every
// run of quick holds has pollerRunLength holds (a handoff to a poller idles
// the lock until it reads, so the turn passes less often), whichever
// process releases, and a run of long holds ends after runLength holds
// once it lasted pollerRun.
func TestTurnRunsWithPollers(t *testing.T) {
	now := time.Unix(100, 0)
	quick := func(holds int) run { return run{holds: holds, lasted: time.Duration(holds) * 3 * time.Millisecond} }
	for _, c := range []struct {
		what      string
		w         waiters
		streaming bool // the releaser's stream runs
		r         run
		keeps     bool
	}{
		{"a poller next, quick holds", waiters{pollers: []string{"b"}}, true, quick(runLength), true},
		{"a poller next, the run is full", waiters{pollers: []string{"b"}}, true, quick(pollerRunLength - 1), false},
		{"a poller next, long holds", waiters{pollers: []string{"b"}}, true, run{holds: runLength - 1, lasted: pollerRun}, false},
		{"a poller next, long holds, within runLength", waiters{pollers: []string{"b"}}, true, run{holds: runLength - 2, lasted: time.Hour}, true},
		{"a poller after a streaming one", waiters{streaming: []string{"b"}, pollers: []string{"c"}}, true, quick(runLength), true},
		{"the releaser polls, a streaming one next", waiters{streaming: []string{"b"}}, false, quick(runLength), true},
		{"no poller takes part", waiters{streaming: []string{"b"}}, true, quick(runLength - 1), false},
	} {
		tr := nextTurn("a", c.w, true, c.streaming, c.r, 0, now)
		if want := map[bool]string{true: "a", false: "b"}[c.keeps]; tr.heir != want {
			t.Errorf("%s: heir %q, want %q", c.what, tr.heir, want)
		}
	}
}

func TestWaitersFreshPollers(t *testing.T) {
	now := time.Unix(1000, 0)
	d := turnsDoc{Waiting: map[string]time.Time{"b": now}, Pollers: map[string]time.Time{"old": now.Add(-staleAfter)}}
	if w := d.waiters(now, staleAfter); len(w.pollers) != 0 || len(w.streaming) != 1 {
		t.Errorf("stale poller: %+v, want it ignored", w)
	}
	d.Pollers["p"] = now.Add(-time.Second)
	if w := d.waiters(now, staleAfter); len(w.pollers) != 1 {
		t.Errorf("fresh poller: %+v, want polling", w)
	}
}

// TestFIFOHeir: under WithFIFO the heir is the other Locker that began to
// wait first, streaming or polling; one without a recorded start counts
// from its last join; a poller's turn is longer and keeps its place.
func TestFIFOHeir(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(int64(s), 0) }
	w := waiters{
		streaming: []string{"me", "s1", "s2"},
		pollers:   []string{"p1"},
		since:     map[string]time.Time{"me": at(1), "s1": at(5), "p1": at(3)},
		joinedAt:  map[string]time.Time{"s2": at(4)},
	}
	if heir, polls := fifoHeir("me", w); heir != "p1" || !polls {
		t.Fatalf("fifoHeir = %q, %v; want the poller that began first", heir, polls)
	}
	delete(w.since, "p1")
	w.pollers = nil
	if heir, _ := fifoHeir("me", w); heir != "s2" {
		t.Fatalf("fifoHeir = %q; want s2, counted from its last join", heir)
	}
	if heir, _ := fifoHeir("me", waiters{streaming: []string{"me"}}); heir != "" {
		t.Fatalf("fifoHeir with only the releaser waiting = %q", heir)
	}
	now := at(100)
	tp := nextFIFOTurn("me", waiters{pollers: []string{"p"}, since: map[string]time.Time{"p": at(1)}}, true, true, time.Second, now)
	if tp.heir != "p" || !tp.heirPolls || !tp.until.Equal(now.Add(turnGrace+time.Second)) || !tp.stay || tp.polls {
		t.Fatalf("turn to a poller = %+v", tp)
	}
}

// TestLookedForgetsTurn: a poller's read that shows another Locker's turn
// holds its next wait back to that turn's end; a later read showing no
// turn (the lock held, or free) lets go of it, so that a failed try after
// it does not sleep through this Locker's own turn to come.
func TestLookedForgetsTurn(t *testing.T) {
	f := &fakeLink{now: time.Unix(1e9, 0), delays: [][2]time.Duration{{0, 0}}}
	clock := newServerClock(f, standalone(f.hello), 0)
	clock.Ensure(context.Background())
	r := newWaitRegistry(options{pollInterval: time.Second, safetyPoll: time.Second, window: defaultWindow}, clock, nil)
	now := clock.Now()
	r.looked("n", lockView{until: now.Add(time.Minute), turn: true, holder: "x", place: 2})
	if d, _, _ := testNextWait(r, "n"); d < 30*time.Second {
		t.Fatalf("during another's turn: wait %v, want to its end", d)
	}
	for _, v := range []lockView{{free: true}, {until: now.Add(time.Minute), holder: "y", place: 1}} {
		r.looked("n", lockView{until: now.Add(time.Minute), turn: true, holder: "x", place: 2})
		r.looked("n", v)
		if d, _, _ := testNextWait(r, "n"); d > time.Second+time.Millisecond && !v.free || v.free && d > time.Second {
			t.Errorf("after a read showing %+v: wait %v, want at most the poll interval", v, d)
		}
	}
}

// TestPlaceInTurns: a poller's place counts the turns before its own, from
// the holder's, in the order releases name heirs (ids wrapping round, or
// WithFIFO's order of waiting).
func TestPlaceInTurns(t *testing.T) {
	at := time.Unix(100, 0)
	w := waiters{streaming: []string{"d", "b"}, pollers: []string{"a", "c"},
		since:    map[string]time.Time{"d": at, "c": at.Add(time.Second)},
		joinedAt: map[string]time.Time{"a": at.Add(3 * time.Second), "b": at.Add(2 * time.Second)}}
	for _, c := range []struct {
		self, holder string
		fifo         bool
		want         int
	}{
		{"c", "b", false, 1},
		{"d", "b", false, 2},
		{"a", "b", false, 3}, // wraps round
		{"b", "d", false, 2},
		{"a", "", false, 1},
		{"c", "x", false, 3}, // a holder that does not wait: from the first id
		{"e", "b", false, 0}, // not among the waiting Lockers
		{"d", "a", true, 1},
		{"c", "a", true, 2},
		{"b", "a", true, 3},
		{"a", "d", true, 3},
	} {
		if got := placeInTurns(c.self, c.holder, w, c.fifo); got != c.want {
			t.Errorf("placeInTurns(%q, holder %q, fifo %v) = %d, want %d", c.self, c.holder, c.fifo, got, c.want)
		}
	}
}

// TestPollerReadsBackOff: a head that reads the lock (pollturns.go) does
// not read it fast while a hold goes on: not at all while the hold is its
// own process's (whose end wakes it), and more and more slowly, turns away
// from its own, while another process's long hold goes on.
func TestPollerReadsBackOff(t *testing.T) {
	f := &fakeLink{now: time.Unix(1e9, 0), delays: [][2]time.Duration{{0, 0}}}
	clock := newServerClock(f, standalone(f.hello), 0)
	clock.Ensure(context.Background())
	r := newWaitRegistry(options{pollInterval: time.Second, safetyPoll: time.Second, window: defaultWindow}, clock, nil)
	r.held("n") // a hold of this process
	var reads atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	runWait(ctx, r, nil, "n", attempt{
		try:  func(context.Context) (bool, error) { return false, nil },
		look: func(context.Context) lockView { reads.Add(1); return lockView{until: clock.Now().Add(time.Minute)} },
	}, nil, nil)
	if n := reads.Load(); n != 0 {
		t.Errorf("%d reads during this process's own hold, want none", n)
	}

	now := clock.Now()
	v := lockView{until: now.Add(time.Minute), fence: 7, holder: "b", place: 3}
	r.looked("m", v)
	v.place = 2
	r.looked("m", v) // it moved up
	var d time.Duration
	for range 8 {
		_, d = r.looked("m", v) // the same hold goes on
	}
	if d < 500*time.Millisecond {
		t.Errorf("after 8 reads of the same hold, two turns away: next read in %v, want it backed off towards the poll interval", d)
	}
}

// testRegistry returns a registry on a clock that agrees with the server.
func testRegistry(t *testing.T) (*waitRegistry, *serverClock) {
	t.Helper()
	f := &fakeLink{now: time.Unix(1e9, 0), delays: [][2]time.Duration{{0, 0}}}
	clock := newServerClock(f, standalone(f.hello), 0)
	clock.Ensure(context.Background())
	return newWaitRegistry(options{pollInterval: time.Second, safetyPoll: time.Second, window: defaultWindow}, clock, nil), clock
}

// TestFarPollerReadsByPlace: turns away from its own, a poller whose
// reads show the turns moving on reads again as its place says, not at a
// pause backed off towards the poll interval: it would sleep through its
// turn (as it once did: reads 437ms apart while turns took 30ms).
func TestFarPollerReadsByPlace(t *testing.T) {
	r, clock := testRegistry(t)
	now := clock.Now()
	for i := range 8 {
		_, d := r.looked("n", lockView{until: now.Add(time.Minute), fence: int64(i), holder: "b", place: 4})
		if d > readsIn(4, heirPoll) {
			t.Fatalf("read %d, 4 turns away, a new hold at each read: next read in %v, want it within %v", i, d, readsIn(4, heirPoll))
		}
	}
}

// TestFarPollerBacksOffFromItsPlace: a poller far from its turn behind a
// long hold backs off from the wait its place gives, not from the next
// in turn's pace: 1,000 polling Lockers waiting for one hold, each
// reading again 10ms after its first read and doubling from there, kept
// the server busy for minutes (TestDeadWaitersLeave took 188s against
// 55s).
func TestFarPollerBacksOffFromItsPlace(t *testing.T) {
	r, clock := testRegistry(t)
	r.cfg.maxPause = time.Hour
	now := clock.Now()
	v := lockView{until: now.Add(2 * time.Hour), fence: 1, holder: "b", place: 500}
	for i := range 4 {
		if _, d := r.looked("n", v); d < readsIn(500, heirPoll)/2 {
			t.Fatalf("read %d of the same hold, 500 turns away: next read in %v, want at least %v", i, d, readsIn(500, heirPoll)/2)
		}
	}
}

// TestRejoinedPollerReadsAtThePace: a poller whose read finds it out of
// the waiting Lockers (a missed turn) joins again and reads at the pace;
// the read after that, which may find it next in turn behind the same
// hold, comes at the pace too, not after a pause backed off during the
// hold before: its turn would pass by again.
func TestRejoinedPollerReadsAtThePace(t *testing.T) {
	r, clock := testRegistry(t)
	now := clock.Now()
	for range 8 { // a long hold: the pause backs off
		r.looked("n", lockView{until: now.Add(time.Minute), fence: 1, holder: "b", place: 2})
	}
	r.looked("n", lockView{until: now.Add(time.Minute), fence: 2, holder: "c", place: 0}) // out: it joins
	if _, d := r.looked("n", lockView{until: now.Add(time.Minute), fence: 2, holder: "c", place: 1}); d > heirPoll {
		t.Fatalf("next in turn after joining again: next read in %v, want it within %v", d, heirPoll)
	}
}

// TestHandedOnHeadReads: when this process hands the lock on to a poller,
// its head does not attempt when that turn ends (the heir would have the
// lock by then: an attempt in vain), and reads the lock soon, to learn
// its place.
func TestHandedOnHeadReads(t *testing.T) {
	r, clock := testRegistry(t)
	r.held("n")
	var tries, reads atomic.Int64
	var firstRead atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	handed := make(chan time.Time, 1)
	go func() {
		time.Sleep(50 * time.Millisecond)
		handed <- time.Now()
		r.handedOn("n", turn{heir: "x", until: clock.Now().Add(100 * time.Millisecond)})
	}()
	runWait(ctx, r, nil, "n", attempt{
		try: func(context.Context) (bool, error) { tries.Add(1); return false, nil },
		look: func(context.Context) lockView {
			if reads.Add(1) == 1 {
				firstRead.Store(time.Now().UnixNano())
			}
			return lockView{until: clock.Now().Add(time.Minute), holder: "x", fence: 1, place: 2}
		},
	}, nil, nil)
	if n := tries.Load(); n != 0 {
		t.Errorf("%d attempts after handing the lock on, want reads only", n)
	}
	after := time.Unix(0, firstRead.Load()).Sub(<-handed)
	if reads.Load() == 0 || after > 100*time.Millisecond {
		t.Errorf("%d reads, the first %v after handing on; want one before the heir's turn ends", reads.Load(), after)
	}
}

// TestPollerBacksOff: turns away, a poller backs off while the same hold
// goes on (one goroutine per process, no runs), and so does one whose
// reads show the lock free but whose attempts fail (a name it may not
// take): neither reads at the next in turn's pace for ever.
func TestPollerBacksOff(t *testing.T) {
	r, clock := testRegistry(t)
	now := clock.Now()
	var d time.Duration
	for range 8 {
		_, d = r.looked("n", lockView{until: now.Add(time.Minute), fence: 3, holder: "b", place: 3})
	}
	if d < 250*time.Millisecond {
		t.Errorf("8 reads of the same hold, 3 turns away: next read in %v, want it backed off towards the poll interval", d)
	}
	for range 8 {
		if try, _ := r.looked("m", lockView{free: true}); !try {
			t.Fatal("a read showing the lock free should attempt")
		}
		d = r.afterTry("m", true).wait // the attempt failed
	}
	if d < 250*time.Millisecond {
		t.Errorf("8 failed attempts after reads showing the lock free: next read in %v, want it backed off", d)
	}
}

// TestPollerStaysJoinedBehindItsOwnLocker: a read showing the lock held by
// this very Locker (a seed lock of another owner's, a hold ended without a
// release that matched) does not make the head join the waiting Lockers
// again at every read: it is among them.
func TestPollerStaysJoinedBehindItsOwnLocker(t *testing.T) {
	r, clock := testRegistry(t)
	r.self = "me"
	r.mu.Lock()
	r.queue("n").member.joined = true
	r.mu.Unlock()
	r.looked("n", lockView{until: clock.Now().Add(time.Minute), fence: 1, holder: "me"})
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.queue("n").member.joined {
		t.Error("a read of the lock held by this Locker took the head out of the waiting Lockers: it would join again, a write at each read")
	}
}

// TestPollerDoesNotAttemptWithAnEndedContext: a read cut short by the
// wait's end (its context cancelled, a GetLock's time up) reads as free,
// but is not followed by an attempt: that attempt could not conclude, and
// its release would follow in the background, two writes for nothing.
func TestPollerDoesNotAttemptWithAnEndedContext(t *testing.T) {
	r, _ := testRegistry(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var tries atomic.Int64
	err := runWait(ctx, r, nil, "n", attempt{
		try:  func(context.Context) (bool, error) { tries.Add(1); return false, nil },
		look: func(context.Context) lockView { cancel(); return lockView{free: true} },
	}, nil, nil)
	if err != context.Canceled || tries.Load() != 1 {
		t.Errorf("wait returned %v after %d attempts; want context.Canceled after the first attempt only", err, tries.Load())
	}
}

// testNextWait is the wait a head of name would choose after news (no
// read of the lock), without queueing one.
func testNextWait(r *waitRegistry, name string) (time.Duration, bool, bool) {
	return (&waiting{r: r, ctx: context.Background(), name: name}).nextWait(r.afterTry(name, false).state, nil, false)
}
