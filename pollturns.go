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
// streaming ones, turns.go), so that it reads often only when its turn is
// near. The pacing measures nothing; it counts places and knows one pace,
// heirPoll:
//
//   - after a read that shows another hold or turn than the last one (the
//     turns moved on), place turns away from its own, it reads again after
//     readsIn(place): one pace when next, two more for each turn before;
//   - after a read that shows the same hold going on, it backs off: its
//     pause doubles from there, up to the poll interval (a long hold is
//     not polled for fast);
//   - not among the waiting processes (a missed turn took it out), it
//     joins again and reads again at the pace (backing off if it is
//     still out);
//   - when its process has just handed the lock on, it reads as its place
//     behind every other waiting process says; after any other failed
//     attempt, at the pace. It does not attempt when the heir's turn ends,
//     as a head with a change stream does (the heir has the lock by then);
//   - while a hold of its own process has the name, it does not read: the
//     end of that hold wakes it.
//
// A turn given to a poller lasts heirPoll plus twice the released hold's
// length longer than turnGrace, up to the poll interval (pollTurn). A
// poller that misses its turn costs the lock that turn and is out of the
// waiting processes until its next read. It misses it when its read comes
// later than that: a slow link; turns before its own that passed much
// quicker than readsIn guessed; or a pause that backed off during an
// earlier, longer hold, when the hold released before its turn was short.
//
// An earlier design measured how long holds and turns took and attempted
// when the holder's run should end; it was 124 lines longer, no faster,
// and a read that came late could inflate its measure and starve its
// process for seconds (docs/performance.md, "Slow change events").

// heirPoll is the pace at which the process next in turn reads the lock
// while the turns move on.
const heirPoll = 10 * time.Millisecond

// pollPace is what a polling head's last read of the lock showed.
type pollPace struct {
	read         bool // it read the lock since its process last held it
	lookedPlace  int
	lookedFence  int64
	lookedHolder string
	freeRead     bool // the last read showed the lock free for this Locker
	behind       int  // this Locker's place after the turn it just gave (0: unknown)
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
		v := lockView{until: l.store.leaseEnd(doc), fence: doc.Fence, holder: doc.Turns.Locker}
		switch {
		case doc.Holder == "" && doc.Turns.Heir != "" && doc.Turns.Heir != l.id && doc.ExpiresAt.After(surelyPast):
			v.turn, v.holder = true, doc.Turns.Heir
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
// to attempt now, and otherwise how long to wait before the next read.
func (r *waitRegistry) looked(name string, v lockView) (try bool, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(name)
	q.pace.freeRead, q.pace.behind = v.free, 0 // a read tells the place
	if !v.turn {
		// No other Locker's turn now: an earlier read's must not keep a
		// wait after a failed try from this one's.
		q.told.turnUntil = time.Time{}
	}
	if v.free {
		return true, 0
	}
	now, unc := r.clock.Read()
	rest := overIn(v.until, now, unc) // until the lease or turn is surely over
	if v.firm {
		q.told.firm = v.until
		return false, min(rest, r.cfg.window.rejoin) // and joins again, if due
	}
	if v.place == 0 && q.member.joined && v.holder != r.self {
		q.member.joined = false // a release took it out: it joins again
	}
	seen := readSeen{v: v, fresh: !q.pace.read || v.fence != q.pace.lookedFence || v.holder != q.pace.lookedHolder,
		wasOut: q.pace.read && q.pace.lookedPlace == 0, pace: r.heirPace(), pause: q.pause, maxPause: r.cfg.maxPause, rest: rest}
	q.pace.read, q.pace.lookedPlace, q.pace.lookedFence, q.pace.lookedHolder = true, v.place, v.fence, v.holder
	plan := planRead(seen, jitter)
	q.pause = plan.pause
	if v.turn {
		q.told.turnUntil, q.told.expiry = v.until, time.Time{}
	} else {
		q.told.expiry = v.until
	}
	return false, plan.wait
}

// readSeen is what a polling head knows after a read that found the lock
// taken: the read, and the one before.
type readSeen struct {
	v        lockView
	fresh    bool          // another hold or turn than at the last read
	wasOut   bool          // the last read found this Locker out of the waiting ones too
	pace     time.Duration // how often the next in turn reads (heirPace)
	pause    time.Duration // the name's poll pause
	maxPause time.Duration // the poll interval
	rest     time.Duration // until the lease or turn read is surely over
}

// readPlan is what a polling head does after such a read: wait, then read
// again, with the poll pause it keeps for next time.
type readPlan struct {
	wait  time.Duration
	pause time.Duration
}

// planRead decides when a polling head reads again after a read that
// found the lock taken, from what it knows (k); jitter spreads pauses
// (jitter, or the identity in tests). The turns moved on since its last
// read (another hold or turn): place turns away, it reads again after
// readsIn(place), and its pause starts again from there. The same hold
// goes on, or it is out of the waiting Lockers again: it backs off. Out of
// them for the first time: it joins now, and may be next, so it reads at
// the pace.
func planRead(k readSeen, jitter func(time.Duration) time.Duration) readPlan {
	v := k.v
	p := readPlan{pause: k.pause}
	var d time.Duration
	switch {
	case v.place == 0 && !k.wasOut:
		// The pause starts again too: the read after the join, next in
		// turn maybe, shows the same hold, and must not back off past
		// the turn.
		p.pause = k.pace
		d = jitter(k.pace)
	case v.place > 0 && k.fresh:
		p.pause = min(readsIn(v.place, k.pace), k.maxPause)
		d = jitter(p.pause)
	default:
		d = jitter(p.pause)
		p.pause = min(2*p.pause, k.maxPause)
	}
	p.wait = min(d, k.maxPause)
	if !v.turn {
		p.wait = min(p.wait, k.rest) // a lease that runs out frees the lock
	}
	return p
}

// readAfterTryLocked is how long a head that reads the lock
// (readsLocked) waits, after a failed attempt, before that read: a failed
// attempt says nothing of its place, so the read comes at the pace of the
// next in turn; but a lock known kept (no one releases it before its
// time) is waited for to then. r.mu must be held.
func (r *waitRegistry) readAfterTryLocked(q *nameQueue) time.Duration {
	if now, unc := r.clock.Read(); q.told.firm.After(now.Add(-unc)) {
		return min(overIn(q.told.firm, now, unc), r.cfg.window.rejoin)
	}
	if q.pace.freeRead {
		// A read showed it free, and the attempt failed: someone was
		// quicker, or the lock is not one to take (a semaphore's name).
		// Again and again, that is no cause to read fast.
		q.pace.freeRead = false
		d := jitter(q.pause)
		q.pause = min(2*q.pause, r.cfg.maxPause)
		return d
	}
	// This process just handed the lock on: its place is known, behind
	// every other waiting Locker.
	place := max(q.pace.behind, 1)
	q.pace.behind = 0
	return jitter(min(readsIn(place, r.heirPace()), r.cfg.maxPause))
}

// readsFirst reports whether name's head, at its poll, reads the lock
// before it attempts (readsLocked).
func (r *waitRegistry) readsFirst(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.readsLocked(r.queue(name))
}

// pollTurn is how much longer than turnGrace a turn given to a poller
// lasts, when the hold released began at server time acquiredAt: the
// poller's pause backs off while a hold goes on, to about that hold's
// length. A turn of a whole poll interval would cover any pause, but a
// dead poller named heir would then hold the lock back by the releaser's
// poll interval (an hour, for some), and different Lockers' intervals may
// differ.
func (r *waitRegistry) pollTurn(acquiredAt, now time.Time) time.Duration {
	return min(r.heirPace()+2*max(now.Sub(acquiredAt), 0), max(r.cfg.maxPause, heirPoll))
}

// readsIn is how long a polling head place turns away waits before it
// reads again: one pace when next, and two more for each turn before, a
// guess at a turn's length (a run of holds, and the reads that find it
// over). A guess too short costs reads; one too long idles the lock a
// little, or, when turns are much shorter than the guess (streaming
// Lockers hand on within milliseconds), makes a poller far back miss its
// turn (pollTurn). Reads that came at least every turnGrace would never
// miss one, but 1,000 polling Lockers would then read 10,000 times a
// second.
func readsIn(place int, pace time.Duration) time.Duration {
	return pace + time.Duration(2*(place-1))*pace
}

// heirPace is how often the head reads when it is next in turn: heirPoll,
// or the poll interval when that is shorter.
func (r *waitRegistry) heirPace() time.Duration { return min(heirPoll, r.cfg.maxPause) }
