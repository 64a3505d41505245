package mongolock

import (
	"context"
	"slices"
	"time"
)

// Turns for pollers. A process without a change stream learns that the
// lock was freed, or that its turn came, only by asking: its waiters' head
// reads the lock's document at each poll instead of attempting (one round
// trip either way), and attempts only when the read shows the lock free
// for it. The read also says where this process stands in the turns (the
// releases name the waiting processes in turn, pollers as well as
// streaming ones, turns.go), and how far the holder's run of holds has
// gone (each acquire records how many holds its process had in a row
// before it), so that it can poll when its turn is near rather than at a
// fixed pace. The unit is a hold's length, from one acquire of a run to
// the next, as measured between two reads of one run or over this
// process's own runs (smoothed, an overestimate counting less); the pace
// is that length, at most heirPoll:
//
//   - next in turn, having measured a hold, it sleeps until the holder's
//     run should end (runLength holds, half a hold early) and attempts
//     then, without a read; otherwise, or when that attempt fails, it
//     reads at the pace, backing off while the same hold goes on (a long
//     hold is not polled for fast);
//   - k turns away, it reads again after about three quarters of k-1
//     turns' time (turnsAway), as it measured turns passing between its
//     reads (or, before it has, runLength holds a turn), never later than
//     its poll pause, and backs off too while the same hold goes on;
//   - not among the waiting processes (a missed turn took it out), it
//     joins again and reads again at the pace (backing off if it is
//     still out);
//   - when its process has just handed the lock on, it reads as its place
//     behind every other waiting process says (at the pace if it knows no
//     turn's length yet); a new head reads at the pace. It does not
//     attempt when the heir's turn ends, as a head with a change stream
//     does (the heir has the lock by then);
//   - while a hold of its own process has the name, it does not read: the
//     end of that hold wakes it.
//
// A turn given to a poller lasts heirPoll plus twice the released hold's
// length longer than turnGrace (the next process's pause has backed off by
// no more than that), up to the poll interval. A poller that misses its
// turn anyway (a slow link, a wrong guess) costs the lock that turn and is
// out of the waiting processes until its next read.

// heirPoll is the slowest pace at which the process next in turn reads the
// lock (before its first backing off).
const heirPoll = 20 * time.Millisecond

// pollPace is what a polling head's last read of the lock showed, and how
// long a turn took, as measured between reads.
type pollPace struct {
	lookedAt     time.Time
	lookedPlace  int
	lookedFence  int64
	lookedHolder string
	lookedLast   holdMark
	turnTook     time.Duration
	holdTook     time.Duration // one hold of a run, from acquire to acquire
	tryNext      bool          // the next poll attempts: the holder's run should be over
	heldAt       time.Time     // this process's last hold began
	heldRun      int           // and had run holds in a row before it
	behind       int           // this Locker's place after the turn it just gave (0: unknown)
	freeRead     bool          // the last read showed the lock free for this Locker
}

// lockView is what a poller's read of a lock's document says.
type lockView struct {
	free   bool      // this Locker may take it now (or the read failed: the attempt will tell)
	until  time.Time // server time: the lease's end, or another Locker's turn's end
	firm   bool      // kept by no one until then (WithHoldAtLeast): no release comes before
	turn   bool      // until ends another Locker's turn
	fence  int64     // the last hold's fencing token
	place  int       // turns until this Locker's: 1 when next; 0 when not among the waiting
	holder string    // the Locker whose hold or turn it is
	// The holder's hold or turn: how many of its Locker's holds came
	// before it in a row (run), and when it began (server time; for a
	// turn, now: the hold it is for begins about then).
	run   int
	began time.Time
	last  holdMark // the last acquire, as stored
}

// holdMark is an acquire as a lock's document records it: by which
// Locker, after how many of its holds in a row, with what fencing token,
// at what server time.
type holdMark struct {
	locker string
	run    int
	fence  int64
	at     time.Time
}

// holdsSince returns how many holds of one run came after from to m; 0
// when m is not in the same run as from, or not after it.
func (m holdMark) holdsSince(from holdMark) int {
	n := m.run - from.run
	if from.at.IsZero() || m.locker != from.locker || n <= 0 || m.fence-from.fence != int64(n) {
		return 0
	}
	return n
}

// look returns a function reading name's document for this Locker's head
// of waiters; owner is the seed API's (which takes its own lock again), ""
// for a session's hold.
func (l *Locker) look(name, owner string) func(context.Context) lockView {
	return func(ctx context.Context) lockView {
		// A long wait judges leases on a fresh estimate, as its attempts
		// would (take); a failed refresh keeps the last one.
		if err := l.clock.Ensure(ctx); err != nil && l.clock.Measured() {
			l.opts.logger.Debug("mongolock: refreshing the server's clock failed; keeping the last estimate", "err", err)
		}
		doc, err := l.store.read(ctx, name)
		if err != nil || doc == nil {
			return lockView{free: true}
		}
		now, surelyPast := l.clock.Now(), l.clock.SurelyPast()
		v := lockView{until: l.store.leaseEnd(doc), fence: doc.Fence, holder: doc.Turns.Locker,
			run: doc.Turns.Run, began: doc.AcquiredAt, last: holdMark{doc.Turns.Locker, doc.Turns.Run, doc.Fence, doc.AcquiredAt}}
		switch {
		case doc.Holder == "" && doc.Turns.Heir != "" && doc.Turns.Heir != l.id && doc.ExpiresAt.After(surelyPast):
			v.turn, v.holder, v.began = true, doc.Turns.Heir, now
			if v.run++; doc.Turns.Heir != doc.Turns.Locker {
				v.run = 0
			}
		case owner != "" && doc.Owner == owner && doc.Session == "":
			v.free = true // the seed API's owner takes its own lock again
			return v
		case l.held(doc):
			v.firm = kept(doc.Holder)
		default:
			v.free = true
			return v
		}
		w := doc.Turns.waiters(now, l.opts.window.stale)
		v.place = placeInTurns(l.id, v.holder, w, l.opts.fifo || w.fifo)
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
// to attempt now, and otherwise how long to wait before the next read (or
// attempt, when the holder's run is expected to end then: tryNext).
func (r *waitRegistry) looked(name string, v lockView) (try bool, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(name)
	q.pace.tryNext, q.pace.freeRead, q.pace.behind = false, v.free, 0 // a read tells the place
	if !v.turn {
		// No other Locker's turn now: an earlier read's must not keep a
		// wait after a failed try from this one's.
		q.told.turnUntil = time.Time{}
	}
	if v.free {
		return true, 0
	}
	now, unc := r.clock.Read()
	at := time.Now()
	rest := overIn(v.until, now, unc) // until the lease or turn is surely over
	if v.firm {
		q.told.firm = v.until
		return false, min(rest, r.cfg.window.rejoin) // and joins again, if due
	}
	if v.place == 0 && q.member.joined && v.holder != r.self {
		q.member.joined = false // a release took it out: it joins again
	}
	// Turns that passed since the last read tell how long one takes.
	if !q.pace.lookedAt.IsZero() && v.place > 0 && q.pace.lookedPlace > v.place {
		// An overestimate counts less: it makes turns missed.
		q.pace.turnTook = smoothed(q.pace.turnTook, at.Sub(q.pace.lookedAt)/time.Duration(q.pace.lookedPlace-v.place))
	}
	// Holds of one run since the last read tell how long a hold takes.
	if n := v.last.holdsSince(q.pace.lookedLast); n > 0 {
		r.tookHoldLocked(q, v.last.at.Sub(q.pace.lookedLast.at)/time.Duration(n))
	}
	fresh := v.fence != q.pace.lookedFence || v.holder != q.pace.lookedHolder
	wasOut := !q.pace.lookedAt.IsZero() && q.pace.lookedPlace == 0
	q.pace.lookedAt, q.pace.lookedPlace, q.pace.lookedFence, q.pace.lookedHolder, q.pace.lookedLast = at, v.place, v.fence, v.holder, v.last
	plan := planRead(readSeen{v: v, fresh: fresh, wasOut: wasOut, pace: r.paceLocked(q), turn: turnLocked(q),
		hold: q.pace.holdTook, pause: q.pause, maxPause: r.cfg.maxPause, rest: rest, now: now}, jitter)
	q.pause, q.pace.tryNext = plan.pause, plan.tryNext
	if plan.try {
		return true, 0
	}
	if v.turn {
		q.told.turnUntil, q.told.expiry = v.until, time.Time{}
	} else {
		q.told.expiry = v.until
	}
	return false, plan.wait
}

// readSeen is what a polling head knows after a read that found the lock
// taken: the read, and what it measured before.
type readSeen struct {
	v        lockView
	fresh    bool          // another hold than at the last read
	wasOut   bool          // the last read found this Locker out of the waiting ones too
	pace     time.Duration // how often to read when next in turn (paceLocked)
	turn     time.Duration // how long a turn takes (turnLocked; 0: unknown)
	hold     time.Duration // how long one hold of a run takes (0: unknown)
	pause    time.Duration // the name's poll pause
	maxPause time.Duration // the poll interval
	rest     time.Duration // until the lease or turn read is surely over
	now      time.Time     // server time
}

// readPlan is what a polling head does after such a read: attempt now, or
// wait (and then attempt when tryNext, else read again), with the poll
// pause it keeps for next time.
type readPlan struct {
	try     bool
	wait    time.Duration
	tryNext bool
	pause   time.Duration
}

// planRead decides what a polling head does after a read that found the
// lock taken, from what it knows (k); jitter spreads pauses (jitter, or
// the identity in tests).
func planRead(k readSeen, jitter func(time.Duration) time.Duration) readPlan {
	v := k.v
	p := readPlan{pause: k.pause}
	var d time.Duration
	switch {
	case v.place == 1 && k.fresh && k.hold > 0:
		// The holder's run ends after runLength-run holds: attempt then,
		// half a hold early rather than late.
		p.pause = k.pace
		end := v.began.Add(time.Duration(runLength-min(max(v.run, 0), runLength))*k.hold - k.hold/2)
		if d = end.Sub(k.now); d <= 0 {
			p.try = true
			return p
		}
		// The run may be shorter (the holder's waiters fewer, its holds
		// quicker than measured): a wait longer than a poller's shortest
		// turn reads first.
		p.tryNext = d <= turnGrace/2
		d = min(d, turnGrace/2)
	case v.place == 1:
		if k.fresh {
			p.pause = k.pace
		}
		d = jitter(p.pause)
		p.pause = min(2*p.pause, k.maxPause)
	case v.place > 1 && k.turn > 0:
		d = min(max(turnsAway(v.place, k.turn), k.pace), k.maxPause)
		// A hold that goes on is not read fast, as next in turn (a turn
		// ends soon anyway).
		if k.fresh || v.turn {
			p.pause = k.pace
		} else {
			d = max(d, jitter(p.pause))
			p.pause = min(2*p.pause, k.maxPause)
		}
	case v.place == 0 && k.wasOut:
		// Out again: its join did not show (or took long to), no cause to
		// read fast.
		d = jitter(p.pause)
		p.pause = min(2*p.pause, k.maxPause)
	case v.place == 0:
		// Out of the waiting Lockers: it joins now, and may be next.
		d = jitter(k.pace)
	default: // turns away, with nothing measured yet
		d = jitter(p.pause)
		if k.fresh || v.turn {
			d = jitter(min(p.pause, time.Duration(v.place)*k.pace))
		}
		p.pause = min(2*p.pause, k.maxPause)
	}
	p.wait = min(d, k.maxPause)
	if !v.turn {
		p.wait = min(p.wait, k.rest) // a lease that runs out frees the lock
	}
	return p
}

// paceLocked is how often the head reads when it is next in turn: every
// heirPoll, or every hold's length when holds are shorter (as measured);
// r.mu must be held.
func (r *waitRegistry) paceLocked(q *nameQueue) time.Duration {
	p := heirPoll
	if q.pace.holdTook > 0 {
		p = min(p, max(q.pace.holdTook, time.Millisecond))
	}
	return min(p, r.cfg.maxPause)
}

// turnLocked returns how long a turn takes, as measured between reads, or
// else as a run of holds would (0 when neither is known); r.mu must be
// held.
func turnLocked(q *nameQueue) time.Duration {
	if q.pace.turnTook > 0 {
		return q.pace.turnTook
	}
	return runLength * q.pace.holdTook
}

// turnsAway returns how long a poller place turns away from its own waits
// before it reads again: three quarters of the turns before its own but
// one, so that it reads again about when it is next, and early rather than
// late (a turn given to a poller waits for it, pollTurn, but idles).
func turnsAway(place int, turn time.Duration) time.Duration {
	return time.Duration(place-1) * turn * 3 / 4
}

// tookHoldLocked records that one hold of a run (from its acquire to the
// next's) took d; r.mu must be held.
func (r *waitRegistry) tookHoldLocked(q *nameQueue, d time.Duration) {
	if d > 0 {
		q.pace.holdTook = smoothed(q.pace.holdTook, d)
	}
}

// smoothed returns the estimate est (0: none yet) after the measure d,
// an overestimate counting less.
func smoothed(est, d time.Duration) time.Duration {
	if est == 0 {
		est = d
	}
	return (3*est + min(d, 2*est)) / 4
}

// readAfterTryLocked is how long a head that reads the lock
// (readsLocked) waits, after a failed attempt, before that read: a failed
// attempt says nothing of its place, so the read comes at the pace of the
// next in turn; but a lock known kept (no one releases it before its
// time) is waited for to then, and a head whose process just handed the
// lock on waits as its place, behind every other waiting Locker, says.
// r.mu must be held.
func (r *waitRegistry) readAfterTryLocked(q *nameQueue) time.Duration {
	if now, unc := r.clock.Read(); q.told.firm.After(now.Add(-unc)) {
		return min(overIn(q.told.firm, now, unc), r.cfg.window.rejoin)
	}
	q.pace.tryNext = false
	pace := r.paceLocked(q)
	if q.pace.freeRead {
		// A read showed it free, and the attempt failed: someone was
		// quicker, or the lock is not one to take (a semaphore's name).
		// Again and again, that is no cause to read fast.
		q.pace.freeRead = false
		d := jitter(q.pause)
		q.pause = min(2*q.pause, r.cfg.maxPause)
		return d
	}
	behind := q.pace.behind
	q.pace.behind = 0 // said once: the first read after handing on
	if behind > 1 && turnLocked(q) > 0 {
		// This process just handed the lock on: its place is known.
		return min(max(turnsAway(behind, turnLocked(q)), pace), r.cfg.maxPause)
	}
	return jitter(pace)
}

// readsFirst reports whether name's head, at its poll, reads the lock
// before it attempts: it reads the lock at its polls (readsLocked), and
// its next poll is not the attempt a read planned for when the holder's
// run should end (tryNext, said once).
func (r *waitRegistry) readsFirst(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(name)
	if !r.readsLocked(q) {
		return false
	}
	due := q.pace.tryNext
	q.pace.tryNext = false
	return !due
}

// pollTurn is how much longer than turnGrace a turn given to a poller
// lasts, when the hold released began at server time acquiredAt.
func (r *waitRegistry) pollTurn(acquiredAt, now time.Time) time.Duration {
	return min(min(heirPoll, r.cfg.maxPause)+2*max(now.Sub(acquiredAt), 0), max(r.cfg.maxPause, heirPoll))
}
