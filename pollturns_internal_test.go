package mongolock

import (
	"testing"
	"time"
)

// TestPlanRead: what a polling head does after a read that found the lock
// taken, for each place in the turns and what it measured (jitter is the
// identity here).
func TestPlanRead(t *testing.T) {
	now := time.Unix(1000, 0)
	const (
		pace     = 20 * time.Millisecond
		pause    = 40 * time.Millisecond
		maxPause = 500 * time.Millisecond
		hold     = 10 * time.Millisecond
		turn     = 30 * time.Millisecond
		rest     = time.Second
	)
	seen := func(place int, change func(*readSeen)) readSeen {
		k := readSeen{v: lockView{place: place, began: now}, pace: pace, pause: pause, maxPause: maxPause, rest: rest, now: now}
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
		{"next, a new hold whose run ends in 3.5 holds of 40ms: read again at half a turn, at the pace",
			seen(1, func(k *readSeen) { k.fresh, k.hold = true, 40*time.Millisecond; k.v.run = 0 }),
			readPlan{wait: turnGrace / 2, pause: pace}},
		{"next, a run that should be over: attempt at once after the read",
			seen(1, func(k *readSeen) { k.fresh, k.hold = true, hold; k.v.run = runLength }),
			readPlan{try: true, pause: pace}},
		{"next, the run ending within half a turn: attempt then (tryNext)",
			seen(1, func(k *readSeen) { k.fresh, k.hold = true, 40*time.Millisecond; k.v.run = 3 }),
			readPlan{wait: 20 * time.Millisecond, tryNext: true, pause: pace}},
		{"next, the same hold as before: back off",
			seen(1, nil),
			readPlan{wait: pause, pause: 2 * pause}},
		{"next, a new hold, holds not measured: read at the pace, then back off",
			seen(1, func(k *readSeen) { k.fresh = true }),
			readPlan{wait: pace, pause: 2 * pace}},
		{"third in turn, turns measured: read about when its turn nears",
			seen(3, func(k *readSeen) { k.fresh, k.turn = true, turn }),
			readPlan{wait: turnsAway(3, turn), pause: pace}},
		{"third in turn, a hold that goes on: not read fast",
			seen(3, func(k *readSeen) { k.turn = turn; k.pause = 200 * time.Millisecond }),
			readPlan{wait: 200 * time.Millisecond, pause: 400 * time.Millisecond}},
		{"out of the waiting Lockers: read at the pace (it joins now)",
			seen(0, nil),
			readPlan{wait: pace, pause: pause}},
		{"out again: back off",
			seen(0, func(k *readSeen) { k.wasOut = true }),
			readPlan{wait: pause, pause: 2 * pause}},
		{"turns away, nothing measured, a new hold: at most place x pace",
			seen(5, func(k *readSeen) { k.fresh = true }),
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
