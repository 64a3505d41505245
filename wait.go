package mongolock

// How one waiting goroutine waits (wait): it joins its name's queue, and
// while it heads it, tries when woken, when the holder's lease ends, or at
// its poll; nextWait and pauseLocked decide how long it sleeps between.

import (
	"context"
	"math/rand/v2"
	"time"
)

// peeked is what a read of a lock tells a waiter: free now, or taken until
// a server time (firm: kept by no one until then, so no release comes
// before). The zero value tells nothing (the read failed).
type peeked struct {
	free  bool
	until time.Time
	firm  bool
}

// attempt is one try at a lock: ok when taken. peek reads the lock for
// the holder's lease end.
type attempt struct {
	try  func(ctx context.Context) (ok bool, err error)
	peek func(ctx context.Context) peeked
	// eager: a new head tries at once even when the lock looks taken (the
	// seed API's owner takes its own lock again).
	eager bool
	// noTurns: the name has no lock document of its own to join turns in
	// (a semaphore's).
	noTurns bool
	// shared: a success does not use the lock up (a permit, a read hold):
	// the next waiter tries at once too.
	shared bool
	// look, when set, reads the lock for a head that polls, instead of an
	// attempt that would probably fail (pollturns.go).
	look func(ctx context.Context) lockView
}

// wait queues behind the waiters of name and returns when a.try succeeds
// (nil), fails (its error), ctx ends (ctx.Err()), the Locker closes
// (ErrClosed), or stop is closed (stopErr()). A waiter that leaves with
// news that the lock may be free, unused, passes it to the next.
//
// Each pass tries when told to (tryNow), then sleeps until one of: the
// caller gives up, the timer (a poll, a lease's or a turn's end), or a
// kick (news of the lock, or this waiter became the head).
func (r *waitRegistry) wait(ctx context.Context, name string, a attempt, stop <-chan struct{}, stopErr func() error) error {
	g := r.enter(ctx, name, a)
	defer g.leave()
	for {
		if g.tryNow {
			if done, err := g.try(); done {
				return err
			}
		}
		g.tryNow = false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.closed:
			return ErrClosed
		case <-stop:
			return stopErr()
		case <-g.timer.C:
			if err := g.due(); err != nil {
				return err
			}
		case <-g.w.kick:
			g.kicked()
		}
	}
}

// waiting is one goroutine's wait for a lock (wait): what it knows
// between passes.
type waiting struct {
	r      *waitRegistry
	ctx    context.Context
	name   string
	a      attempt
	w      *waiter
	tryNow bool // the next pass attempts
	news   bool // told the lock may be free, and not yet tried since
	wanted bool // it wants the watcher's news (it waits)
	timer  *time.Timer
	// When the timer fires: news may bring that earlier, never later. A
	// stream of acquires by others must not put the poll off for ever, nor
	// news that tells nothing of the lease put off a try at its end.
	dueAt    time.Time
	freeSeen bool // the last read after a failed attempt showed the lock free
}

// enter queues a waiter behind name's; a new head tries at once, unless
// the lock is surely not free: held in this process (its release wakes
// the head), or taken by another as the change stream last told.
func (r *waitRegistry) enter(ctx context.Context, name string, a attempt) *waiting {
	g := &waiting{r: r, ctx: ctx, name: name, a: a, w: &waiter{kick: make(chan struct{}, 1)}, timer: time.NewTimer(0)}
	g.timer.Stop()
	r.mu.Lock()
	q := r.queue(name)
	q.waiters = append(q.waiters, g.w)
	head := len(q.waiters) == 1
	g.tryNow = head && (a.eager || !r.takenLocked(q))
	r.mu.Unlock()
	if !g.tryNow {
		g.want()
	}
	if head && !g.tryNow {
		g.join()
		r.mu.Lock()
		if now, _ := r.clock.Read(); q.local == 0 && q.told.turnUntil.After(now) {
			r.armTurnLocked(name, q, q.told.turnUntil) // armed while no one waited
		}
		r.mu.Unlock()
		g.arm()
	}
	return g
}

// leave ends the wait: the timer stops, the watcher's news is no longer
// wanted, and the waiter leaves the queue with its news.
func (g *waiting) leave() {
	g.timer.Stop()
	if g.wanted {
		g.r.unwant()
	}
	g.r.leave(g.name, g.w, g.news)
}

// want says the waiter wants the watcher's news, once.
func (g *waiting) want() {
	if !g.wanted {
		g.wanted = true
		g.r.want()
	}
}

// try makes an attempt; done when the wait ends with its outcome (the
// lock taken, or an attempt that did not conclude: its error, leaving the
// news to the next). A failed one joins the waiting Lockers and arms the
// timer.
func (g *waiting) try() (done bool, err error) {
	ok, err := g.a.try(g.ctx)
	if err != nil {
		return true, err
	}
	g.news = false // tried since
	if ok {
		g.news = g.a.shared
		return true, nil
	}
	g.join()
	g.want()
	g.arm()
	return false, nil
}

// due is the timer's firing: an attempt, or for a head that reads the
// lock (pollturns.go), a read first, and an attempt only when it is free
// for this Locker.
func (g *waiting) due() error {
	g.tryNow = true
	if g.a.look == nil || !g.r.reads(g.name) || g.r.dueTry(g.name) {
		return nil
	}
	v := g.a.look(g.ctx)
	if err := g.ctx.Err(); err != nil {
		return err // not an attempt with a dead context
	}
	if try, d := g.r.looked(g.name, v); !try {
		g.tryNow = false
		g.join()
		g.setTimer(d)
	}
	return nil
}

// kicked is news for this waiter: the lock may be free (try now), or it
// became the head, or news of the lock came.
func (g *waiting) kicked() {
	head, freed := g.r.state(g.name, g.w)
	switch {
	case freed:
		g.news = true
		g.timer.Stop()
		g.tryNow = true
	case head && g.a.look != nil && g.r.reads(g.name):
		// A head that reads the lock is paced by its reads: a new one, or
		// one whose process just handed the lock on, reads soon to learn
		// its place.
		g.join()
		g.arm()
	case head:
		// News may bring the timer earlier, never later (dueAt); the poll
		// also repairs this process's place among the waiting ones.
		g.join()
		d, firm, _ := g.r.nextWait(g.ctx, g.name, nil, false) // news: no round trip
		if !firm && !g.dueAt.IsZero() {
			// (A kept lock: nothing frees it before, no poll needed.)
			d = min(d, max(time.Until(g.dueAt), 0))
		}
		g.setTimer(d)
	}
}

// setTimer arms the timer for d, but no longer than rejoinAfter, however
// long the poll intervals or the lock's hold: the attempt or read that
// ends the wait joins the waiting Lockers again when due, so that this
// Locker's entry never looks stale (turns.go).
func (g *waiting) setTimer(d time.Duration) {
	d = min(d, g.r.cfg.window.rejoin)
	g.dueAt = time.Now().Add(d)
	g.timer.Reset(d)
}

// arm sets the timer after a failed attempt: for a head that reads the
// lock, its next read (pollturns.go), which a failed try must not put off
// (it says nothing of this Locker's place in the turns); otherwise the
// next attempt (nextWait).
func (g *waiting) arm() {
	if g.a.look != nil && g.r.reads(g.name) {
		g.setTimer(g.r.readAfterTry(g.name))
		g.freeSeen = false
		return
	}
	var d time.Duration
	d, _, g.freeSeen = g.r.nextWait(g.ctx, g.name, g.a.peek, g.freeSeen)
	g.setTimer(d)
}

// join joins the lock's waiting Lockers, when the name has a document of
// its own to join.
func (g *waiting) join() {
	if !g.a.noTurns {
		g.r.join(g.ctx, g.name)
	}
}

// takenLocked reports whether the lock is surely not free for this
// process now; r.mu must be held.
func (r *waitRegistry) takenLocked(q *nameQueue) bool {
	if q.local > 0 {
		return true
	}
	now, _ := r.clock.Read()
	return r.streamOn() && (q.told.firm.After(now) || q.told.busy && (q.told.expiry.After(now) || q.told.turnUntil.After(now)))
}

// nextWait returns how long the head waits after a failed try: until the
// holder's lease ends or the next poll, whichever comes first (but not
// before another Locker's turn ends). A kept
// lock (firm) is waited for to its end, with no poll before. When what it
// knows of the lease is out of date, it reads the lock (peek); a read that
// shows it free has the head try again at once, unless the read before
// (freeBefore) showed it free too and the try failed all the same (a lock
// this kind of hold cannot take, or a quicker taker): then it backs off
// with the name's poll pause, which doubles at each wait. free reports
// what this read showed.
func (r *waitRegistry) nextWait(ctx context.Context, name string, peek func(context.Context) peeked, freeBefore bool) (d time.Duration, firm, free bool) {
	r.mu.Lock()
	q := r.queue(name)
	local, d, expiry, turnUntil, firmUntil, backoff := q.local, r.pauseLocked(q), q.told.expiry, q.told.turnUntil, q.told.firm, q.pause
	q.pause = min(2*q.pause, r.capLocked())
	r.mu.Unlock()
	if local > 0 {
		return d, false, false
	}
	now, unc := r.clock.Read()
	// A taker's filter allows for its clock's error: a kept lock binds
	// until unc after its end. A long one is not waited for in one go:
	// the waiter's entry among the waiting Lockers must be refreshed.
	if firmUntil.After(now.Add(-unc)) {
		d = min(firmUntil.Sub(now)+unc+time.Millisecond, r.cfg.window.rejoin)
		return d, true, false
	}
	if !expiry.After(now) && peek != nil && d >= peekAfter {
		// What we knew is out of date: learn the current lease end once.
		// While polls come quickly a timer for it would add little.
		p := peek(ctx)
		r.mu.Lock()
		q := r.queue(name)
		q.told.expiry = p.until
		if p.firm {
			q.told.firm = p.until
		}
		r.mu.Unlock()
		if p.firm && p.until.After(now.Add(-unc)) {
			d = min(p.until.Sub(now)+unc+time.Millisecond, r.cfg.window.rejoin)
			return d, true, false
		}
		switch {
		case p.free && !freeBefore:
			// Free, or its lease over, since the attempt: try again as
			// soon as any taker would count it free.
			return unc + time.Millisecond, false, true
		case p.free:
			// Free again, and the try failed again: someone quicker, or
			// a lock this kind of hold cannot take. Back off, from the
			// shortest pause.
			return min(jitter(backoff), d), false, true
		}
		expiry, free = p.until, p.free
	}
	// The taker's filter allows for its clock's error: try once that passed
	// (a lease that ended less than unc ago counts as live still).
	if until := expiry.Sub(now) + unc + time.Millisecond; expiry.After(now.Add(-unc)) && until < d {
		d = until
	}
	// Not before another Locker's turn is over (a poller's pause may be
	// shorter than the turn).
	if rest := turnUntil.Sub(now) + unc + time.Millisecond; turnUntil.After(now) && rest > d {
		d = rest
	}
	return d, false, free
}

// peekAfter is the poll pause from which a waiter reads the holder's lease
// end, to arm a timer for it: polls that come sooner do as well.
const peekAfter = 100 * time.Millisecond

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

// reads reports whether name's head reads the lock at its polls
// (pollturns.go): this Locker learns of releases only by polling, and no
// hold of this process has the name (whose end wakes the head).
func (r *waitRegistry) reads(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.streamOn() && r.queue(name).local == 0
}

// capLocked is the longest poll pause now; r.mu must be held.
func (r *waitRegistry) capLocked() time.Duration {
	if r.streamOn() {
		return max(r.cfg.safetyPause, r.cfg.maxPause)
	}
	return r.cfg.maxPause
}
