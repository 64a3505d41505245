package mongolock

import (
	"context"
	"slices"
	"time"
)

// Turns for pollers: work in progress, on only with the test-only option
// WithPollersInTurn (turns.go says why). A process without a change
// stream learns that the lock was freed, or that its turn came, only by
// asking: its waiters' head reads the lock's document at each poll
// instead of attempting (one round trip either way), and attempts only
// when the read shows the lock free for it. The read also says where this
// process stands in the turns (the releases name the waiting processes in
// turn, pollers as well as streaming ones, turns.go), so that it can poll
// when its turn is near rather than at a fixed pace:
//
//   - next in turn, it reads every heirPoll, backing off while the same
//     hold goes on (a long hold is not polled for fast);
//   - k turns away, it reads again after about half of k-1 turns' time,
//     as it measured turns passing between its reads (smoothed, an
//     overestimate counting less), never later than its poll pause, and
//     backing off too while the same hold goes on;
//   - not among the waiting processes (a missed turn took it out), it
//     joins again and reads again after heirPoll;
//   - after a failed attempt, it reads again after heirPoll: the failure
//     says nothing of its place;
//   - while a hold of its own process has the name, it does not read: the
//     end of that hold wakes it, as without turns for pollers.
//
// A turn given to a poller lasts heirPoll plus twice the released hold's
// length longer than turnGrace (the next process's pause has backed off by
// no more than that), up to the poll interval. A poller that misses its
// turn anyway (a slow link, a wrong guess) costs the lock that turn and is
// out of the waiting processes until its next read.

// heirPoll is the pace at which the process next in turn reads the lock.
const heirPoll = 20 * time.Millisecond

// lockView is what a poller's read of a lock's document says.
type lockView struct {
	free   bool      // this Locker may take it now (or the read failed: the attempt will tell)
	until  time.Time // server time: the lease's end, or another Locker's turn's end
	firm   bool      // kept by no one until then (WithHoldAtLeast): no release comes before
	turn   bool      // until ends another Locker's turn
	fence  int64     // the last hold's fencing token
	place  int       // turns until this Locker's: 1 when next; 0 when not among the waiting
	holder string    // the Locker whose hold or turn it is
}

// look returns a function reading name's document for this Locker's head
// of waiters.
func (l *Locker) look(name string) func(context.Context) lockView {
	if l.opts.noTurns || !l.opts.pollersInTurn {
		return nil // the head attempts at each poll
	}
	return func(ctx context.Context) lockView {
		doc, err := l.store.read(ctx, name)
		if err != nil || doc == nil {
			return lockView{free: true}
		}
		now, surelyPast := l.clock.Now(), l.clock.SurelyPast()
		v := lockView{until: doc.ExpiresAt, fence: doc.Fence, holder: doc.Locker}
		switch {
		case doc.Holder == "" && doc.Heir != "" && doc.Heir != l.id && doc.ExpiresAt.After(surelyPast):
			v.turn, v.holder = true, doc.Heir
		case l.held(doc):
			v.firm = kept(doc.Holder)
		default:
			v.free = true
			return v
		}
		v.place = placeInTurns(l.id, v.holder, doc.waiters(now), l.opts.fifo)
		return v
	}
}

// placeInTurns returns how many turns come before self's, counting the
// turn of the current holder's (or heir's) Locker holder as the first: 1
// when self is next; 0 when self is not among w (or is holder).
func placeInTurns(self, holder string, w waiters, fifo bool) int {
	all := slices.Concat(w.streaming, w.pollers)
	if !slices.Contains(all, self) {
		return 0
	}
	order := inTurn(holder, all)
	if fifo {
		order = byWaited(holder, w)
	}
	return slices.Index(order, self) + 1
}

// looked records what a poller's read of name showed, and returns whether
// to attempt now, and otherwise how long to wait before the next read.
func (r *waitRegistry) looked(name string, v lockView) (try bool, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(name)
	if !v.turn {
		// No other Locker's turn now: an earlier read's must not keep a
		// wait after a failed try from this one's.
		q.turnUntil = time.Time{}
	}
	if v.free {
		return true, 0
	}
	now, unc := r.clock.Read()
	at := time.Now()
	rest := v.until.Sub(now) + unc + time.Millisecond // until the lease or turn is surely over
	if v.firm {
		q.firm = v.until
		return false, rest
	}
	if v.place == 0 && q.joined {
		q.joined = false // a release took it out: it joins again
	}
	// Turns that passed since the last read tell how long one takes.
	if !q.lookedAt.IsZero() && v.place > 0 && q.lookedPlace > v.place {
		took := at.Sub(q.lookedAt) / time.Duration(q.lookedPlace-v.place)
		if q.turnTook == 0 {
			q.turnTook = took
		}
		// Smoothed, and an overestimate counts less: it makes turns missed.
		q.turnTook = (3*q.turnTook + min(took, q.turnTook*2)) / 4
	}
	fresh := v.fence != q.lookedFence || v.holder != q.lookedHolder
	q.lookedAt, q.lookedPlace, q.lookedFence, q.lookedHolder = at, v.place, v.fence, v.holder
	switch {
	case v.place == 1:
		if fresh {
			q.pause = min(heirPoll, r.maxPause)
		}
		d = jitter(q.pause)
		q.pause = min(2*q.pause, r.maxPause)
	case v.place > 1 && q.turnTook > 0:
		d = min(max(time.Duration(v.place-1)*q.turnTook/2, heirPoll), r.maxPause)
		// A hold that goes on is not read fast, as next in turn (a turn
		// ends soon anyway).
		if fresh || v.turn {
			q.pause = min(heirPoll, r.maxPause)
		} else {
			d = max(d, jitter(q.pause))
			q.pause = min(2*q.pause, r.maxPause)
		}
	case v.place == 0:
		// Out of the waiting Lockers: it joins now, and may be next.
		d = jitter(min(heirPoll, r.maxPause))
	default:
		d = jitter(q.pause)
		q.pause = min(2*q.pause, r.maxPause)
	}
	if v.turn {
		q.turnUntil, q.expiry = v.until, time.Time{}
	} else {
		q.expiry = v.until
		d = min(d, rest) // a lease that runs out frees the lock
	}
	return false, d
}

// pollTurn is how much longer than turnGrace a turn given to a poller
// lasts, when the hold released began at server time acquiredAt.
func (r *waitRegistry) pollTurn(acquiredAt, now time.Time) time.Duration {
	return min(min(heirPoll, r.maxPause)+2*max(now.Sub(acquiredAt), 0), max(r.maxPause, heirPoll))
}
