package mongolock

import (
	"testing"
	"time"
)

// TestPlanRead: when a polling head reads again after a read that found
// the lock taken, for each place in the turns (jitter is the identity
// here).
func TestPlanRead(t *testing.T) {
	const (
		pace     = 10 * time.Millisecond
		pause    = 40 * time.Millisecond
		maxPause = 500 * time.Millisecond
		rest     = time.Second
	)
	seen := func(place int, change func(*readSeen)) readSeen {
		k := readSeen{v: lockView{place: place}, pace: pace, pause: pause, maxPause: maxPause, rest: rest}
		if change != nil {
			change(&k)
		}
		return k
	}
	for _, c := range []struct {
		what string
		k    readSeen
		want readPlan
	}{
		{"next, a new hold: read again at the pace, from which the pause starts again",
			seen(1, func(k *readSeen) { k.fresh = true }),
			readPlan{wait: pace, pause: pace}},
		{"third in turn, a new hold: one pace and two for each turn before, from which the pause starts again",
			seen(3, func(k *readSeen) { k.fresh = true }),
			readPlan{wait: 5 * pace, pause: 5 * pace}},
		{"far from its turn: never later than the poll interval",
			seen(40, func(k *readSeen) { k.fresh = true }),
			readPlan{wait: maxPause, pause: maxPause}},
		{"next, the same hold as before: back off",
			seen(1, nil),
			readPlan{wait: pause, pause: 2 * pause}},
		{"third in turn, the same hold: back off too",
			seen(3, nil),
			readPlan{wait: pause, pause: 2 * pause}},
		{"out of the waiting Lockers: read at the pace (it joins now), from which the pause starts again",
			seen(0, nil),
			readPlan{wait: pace, pause: pace}},
		{"out again: back off",
			seen(0, func(k *readSeen) { k.wasOut = true }),
			readPlan{wait: pause, pause: 2 * pause}},
		{"never longer than the poll interval",
			seen(1, func(k *readSeen) { k.pause = time.Hour }),
			readPlan{wait: maxPause, pause: maxPause}},
		{"never past the lease's end, unless it is a turn's",
			seen(1, func(k *readSeen) { k.rest = 5 * time.Millisecond }),
			readPlan{wait: 5 * time.Millisecond, pause: 2 * pause}},
		{"a turn's end does not cut the wait",
			seen(1, func(k *readSeen) { k.rest = 5 * time.Millisecond; k.v.turn = true }),
			readPlan{wait: pause, pause: 2 * pause}},
	} {
		if got := planRead(c.k, func(d time.Duration) time.Duration { return d }); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.what, got, c.want)
		}
	}
}

// TestReadsIn: a polling head reads one pace after a read when next in
// turn, and two more for each turn before its own.
func TestReadsIn(t *testing.T) {
	const ms = time.Millisecond
	for place, want := range map[int]time.Duration{1: 10 * ms, 2: 30 * ms, 4: 70 * ms, 8: 150 * ms, 1000: 19990 * ms} {
		if got := readsIn(place, 10*ms); got != want {
			t.Errorf("readsIn(%d, 10ms) = %v, want %v", place, got, want)
		}
	}
}
