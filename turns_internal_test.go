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
