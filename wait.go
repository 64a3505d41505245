package mongolock

// The registry's side of a wait (waitloop.go has the waiter's): queueing a
// waiter, what a head's next wait is judged on, and the poll pauses.

import (
	"math/rand/v2"
	"time"
)

// takenLocked reports whether the lock is surely not free for this
// process now; r.mu must be held.
func (r *waitRegistry) takenLocked(q *nameQueue) bool {
	if q.local > 0 {
		return true
	}
	now, _ := r.clock.Read()
	return r.streamOn() && (q.told.firm.After(now) || q.told.busy && (q.told.expiry.After(now) || q.told.turnUntil.After(now)))
}

// pauseLocked returns the jittered pause before the next poll. While a hold
// of this process has the name, its end wakes the head: the pause is then
// only a long safety net. While the change stream runs, it tells of every
// release (and of the end of another's turn): polls are a safety net too,
// at the safety interval from the first. r.mu must be held.
func (r *waitRegistry) pauseLocked(q *nameQueue) time.Duration {
	switch {
	case q.local > 0:
		return 4 * r.capLocked()
	case r.streamOn():
		return jitter(r.capLocked())
	}
	return jitter(q.pause)
}

// jitter returns a duration in [d/2, d).
func jitter(d time.Duration) time.Duration {
	if d < 2 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// readsLocked reports whether q's head reads the lock at its polls
// (pollturns.go): this Locker learns of releases only by polling, and no
// hold of this process has the name (whose end wakes the head); r.mu must
// be held.
func (r *waitRegistry) readsLocked(q *nameQueue) bool {
	return !r.streamOn() && q.local == 0
}

// capLocked is the longest poll pause now; r.mu must be held.
func (r *waitRegistry) capLocked() time.Duration {
	if r.streamOn() {
		return max(r.cfg.safetyPause, r.cfg.maxPause)
	}
	return r.cfg.maxPause
}

// enqueue adds w to name's queue, and reports whether it heads it, and
// whether it tries at once: a new head does, unless the lock is surely
// not free (held in this process, whose release wakes the head, or taken
// by another as the change stream last told), or eager says it tries
// anyway.
func (r *waitRegistry) enqueue(name string, w *waiter, eager bool) (head, tryNow bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(name)
	q.waiters = append(q.waiters, w)
	head = len(q.waiters) == 1
	return head, head && (eager || !r.takenLocked(q))
}

// newHead returns the next wait of a new head that does not try at once
// (enqueue), as afterTry, and has it woken when another Locker's turn,
// told while no one waited, ends.
func (r *waitRegistry) newHead(name string, looks bool) headWait {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(name)
	if now, _ := r.clock.Read(); q.local == 0 && q.told.turnUntil.After(now) {
		r.armTurnLocked(name, q, q.told.turnUntil)
	}
	return r.headWaitLocked(q, looks)
}

// headWait is a head's next wait, as the registry decides it under one
// lock: a read of the lock after wait, when the head reads the lock at its
// polls (readsLocked; readAfterTryLocked says when); or else the
// waitState its timer is planned from (planWait).
type headWait struct {
	reads bool
	wait  time.Duration
	state waitState
}

// afterTry returns the head's next wait after a failed attempt; looks says
// whether it can read the lock at its polls (attempt.look).
func (r *waitRegistry) afterTry(name string, looks bool) headWait {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.headWaitLocked(r.queue(name), looks)
}

// headWaitLocked is the head's next wait; r.mu must be held.
func (r *waitRegistry) headWaitLocked(q *nameQueue, looks bool) headWait {
	if looks && r.readsLocked(q) {
		return headWait{reads: true, wait: r.readAfterTryLocked(q)}
	}
	return headWait{state: r.waitStateLocked(q)}
}

// waitState is what a head's next wait is judged on (waiting.nextWait).
type waitState struct {
	local     int           // holds of this process on the name
	pause     time.Duration // the jittered pause before the next poll (pauseLocked)
	backoff   time.Duration // the name's poll pause, before it doubles
	expiry    time.Time     // the last seen holder's lease end
	turnUntil time.Time     // another Locker's turn's end
	firm      time.Time     // a kept lock's end
}

// waitStateLocked returns q's waitState, and doubles its poll pause (up
// to the cap) for the wait after; r.mu must be held.
func (r *waitRegistry) waitStateLocked(q *nameQueue) waitState {
	k := waitState{local: q.local, pause: r.pauseLocked(q), backoff: q.pause,
		expiry: q.told.expiry, turnUntil: q.told.turnUntil, firm: q.told.firm}
	q.pause = min(2*q.pause, r.capLocked())
	return k
}

// sawLease records what a head's read of name showed of its lease.
func (r *waitRegistry) sawLease(name string, p peeked) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(name)
	q.told.expiry = p.until
	if p.firm {
		q.told.firm = p.until
	}
}
