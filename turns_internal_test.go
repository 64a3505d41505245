package mongolock

import (
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
	for _, c := range []struct {
		what                   string
		w                      waiters
		local, streaming, stay bool
		heir                   string
	}{
		{"another waits", waiters{streaming: []string{"b"}}, true, true, true, "b"},
		{"no other waits: the local head tries at once", waiters{}, true, true, false, ""},
		{"a poller waits: no heir", waiters{streaming: []string{"b"}, polling: true}, true, true, false, ""},
		{"the releaser polls: it does not stay", waiters{streaming: []string{"b"}}, true, false, false, "b"},
		{"no local waiters", waiters{streaming: []string{"b"}}, false, true, false, "b"},
	} {
		tr := nextTurn("a", c.w, c.local, c.streaming, runLength-1, now)
		if tr.heir != c.heir || tr.stay != c.stay || (c.heir != "" && !tr.until.Equal(now.Add(turnGrace))) {
			t.Errorf("%s: %+v, want heir %q stay %v", c.what, tr, c.heir, c.stay)
		}
	}
}

func TestTurnRuns(t *testing.T) {
	now := time.Unix(100, 0)
	w := waiters{streaming: []string{"b"}}
	for run := range runLength - 1 {
		if tr := nextTurn("a", w, true, true, run, now); tr.heir != "a" || tr.stay {
			t.Errorf("run %d with local waiters: %+v, want heir a (itself)", run, tr)
		}
	}
	if tr := nextTurn("a", w, true, true, runLength-1, now); tr.heir != "b" || !tr.stay {
		t.Errorf("after a run of %d: %+v, want heir b", runLength, tr)
	}
	if tr := nextTurn("a", w, false, true, 0, now); tr.heir != "b" {
		t.Errorf("no local waiters: %+v, want heir b", tr)
	}
}

func TestWaitersFreshPollers(t *testing.T) {
	now := time.Unix(1000, 0)
	d := lockDoc{Waiting: map[string]time.Time{"b": now}, Pollers: map[string]time.Time{"old": now.Add(-pollerFresh)}}
	if w := d.waiters(now); w.polling || len(w.streaming) != 1 {
		t.Errorf("stale poller: %+v, want it ignored", w)
	}
	d.Pollers["p"] = now.Add(-time.Second)
	if w := d.waiters(now); !w.polling {
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
