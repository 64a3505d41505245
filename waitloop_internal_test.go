package mongolock

import (
	"testing"
	"time"
)

// TestPlanWait: how long a head waits after a failed try, from what the
// registry knows and, when it asks, what a read showed (jitter is the
// identity here).
func TestPlanWait(t *testing.T) {
	now := time.Unix(1000, 0)
	const (
		unc    = 2 * time.Millisecond
		rejoin = 10 * time.Second
		pause  = time.Second // the jittered pause before the next poll
	)
	ms := time.Millisecond
	state := func(change func(*waitState)) waitState {
		k := waitState{pause: pause, backoff: 40 * ms}
		if change != nil {
			change(&k)
		}
		return k
	}
	read := func(p peeked) *peeked { return &p }
	for _, c := range []struct {
		what       string
		k          waitState
		seen       *peeked
		canPeek    bool
		freeBefore bool
		want       waitPlan
	}{
		{"a hold of this process: its end wakes the head, the pause is a safety net",
			state(func(k *waitState) { k.local = 1 }), nil, true, false, waitPlan{wait: pause}},
		{"a kept lock: waited for to its end and the clock's error, no poll before",
			state(func(k *waitState) { k.firm = now.Add(3 * time.Second) }), nil, true, false,
			waitPlan{wait: 3*time.Second + unc + ms, firm: true}},
		{"a kept lock held longer than rejoinAfter: not waited for in one go",
			state(func(k *waitState) { k.firm = now.Add(time.Hour) }), nil, true, false,
			waitPlan{wait: rejoin, firm: true}},
		{"a live lease ending before the poll: try once it surely ended",
			state(func(k *waitState) { k.expiry = now.Add(100 * ms) }), nil, true, false,
			waitPlan{wait: 100*ms + unc + ms}},
		{"a lease ending after the poll: the poll",
			state(func(k *waitState) { k.expiry = now.Add(time.Minute) }), nil, true, false,
			waitPlan{wait: pause}},
		{"another's turn longer than the poll: not before it ends",
			state(func(k *waitState) { k.expiry, k.turnUntil = now.Add(time.Minute), now.Add(3*time.Second) }), nil, true, false,
			waitPlan{wait: 3*time.Second + unc + ms}},
		{"what it knew of the lease is out of date: read the lock first",
			state(nil), nil, true, false, waitPlan{peek: true}},
		{"out of date, but no read allowed (news): the poll",
			state(nil), nil, false, false, waitPlan{wait: pause}},
		{"out of date with quick polls: no read, the poll",
			state(func(k *waitState) { k.pause = 50 * ms }), nil, true, false, waitPlan{wait: 50 * ms}},
		{"the read shows it free: try as soon as any taker would count it free",
			state(nil), read(peeked{free: true}), true, false, waitPlan{wait: unc + ms, free: true}},
		{"free again after a failed try: back off from the name's pause",
			state(nil), read(peeked{free: true}), true, true, waitPlan{wait: 40 * ms, free: true}},
		{"the read shows a kept lock: waited for to its end",
			state(nil), read(peeked{until: now.Add(2 * time.Second), firm: true}), true, false,
			waitPlan{wait: 2*time.Second + unc + ms, firm: true}},
		{"a failed read tells nothing: the poll",
			state(nil), read(peeked{}), true, false, waitPlan{wait: pause}},
		{"the read shows a kept lock already over: the poll",
			state(nil), read(peeked{until: now.Add(-10 * ms), firm: true}), true, false, waitPlan{wait: pause}},
		{"free again, the back-off longer than the poll: the poll",
			state(func(k *waitState) { k.backoff = 2 * time.Second }), read(peeked{free: true}), true, true,
			waitPlan{wait: pause, free: true}},
		{"a hold of this process wins over a kept end",
			state(func(k *waitState) { k.local, k.firm = 1, now.Add(time.Hour) }), nil, true, false, waitPlan{wait: pause}},
		{"a lease ended less than the clock's error ago counts as live (news, no read)",
			state(func(k *waitState) { k.expiry = now.Add(-ms) }), nil, false, false, waitPlan{wait: 2 * ms}},
		{"the read shows a live lease: try once it surely ended",
			state(nil), read(peeked{until: now.Add(200 * ms)}), true, false,
			waitPlan{wait: 200*ms + unc + ms}},
	} {
		got := planWait(c.k, c.seen, c.canPeek, c.freeBefore, now, unc, rejoin, func(d time.Duration) time.Duration { return d })
		if got != c.want {
			t.Errorf("%s: %+v, want %+v", c.what, got, c.want)
		}
	}
}
