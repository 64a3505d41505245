package mongolock

import (
	"context"
	"time"
)

// How a primitive waits for a lock (Locker.wait): its goroutine queues in
// the registry (queue.go), and while it heads the queue it tries when the
// registry tells it to, when the holder's lease ends, or at its poll,
// reading the lock first when it polls (pollturns.go). This loop belongs
// to the primitives: it calls down into the registry for decisions and
// into the primitive's own attempt; the registry never calls it back.

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

// wait queues behind this Locker's waiters of name and returns when a.try
// succeeds (nil), fails (its error), ctx ends (ctx.Err()), the Locker
// closes (ErrClosed), or stop is closed (stopErr()). A waiter that leaves
// with news that the lock may be free, unused, passes it to the next.
//
// Each pass tries when told to (tryNow), then sleeps until one of: the
// caller gives up, the timer (a poll, a lease's or a turn's end), or a
// kick (news of the lock, or this waiter became the head).
func (l *Locker) wait(ctx context.Context, name string, a attempt, stop <-chan struct{}, stopErr func() error) error {
	return runWait(ctx, l.waits, l.watch, name, a, stop, stopErr)
}

// runWait is wait on the registry r, with the Locker's watcher (nil:
// none); tests run it on registries of their own.
func runWait(ctx context.Context, r *waitRegistry, watch *watcher, name string, a attempt, stop <-chan struct{}, stopErr func() error) error {
	g := newWaiting(ctx, r, watch, name, a)
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
	watch  *watcher // the Locker's; nil: no change streams
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

// newWaiting queues a waiter behind name's; a new head tries at once,
// unless the lock is surely not free (enqueue).
func newWaiting(ctx context.Context, r *waitRegistry, watch *watcher, name string, a attempt) *waiting {
	g := &waiting{r: r, watch: watch, ctx: ctx, name: name, a: a, w: &waiter{kick: make(chan struct{}, 1)}, timer: time.NewTimer(0)}
	g.timer.Stop()
	head, tryNow := r.enqueue(name, g.w, a.eager)
	g.tryNow = tryNow
	if !g.tryNow {
		g.want()
	}
	if head && !g.tryNow {
		g.join()
		g.armWith(r.newHead(name, a.look != nil))
	}
	return g
}

// leave ends the wait: the timer stops, the watcher's news is no longer
// wanted, and the waiter leaves the queue with its news.
func (g *waiting) leave() {
	g.timer.Stop()
	if g.wanted && g.watch != nil {
		g.watch.unwant()
	}
	g.r.leave(g.name, g.w, g.news)
}

// want says the waiter wants the watcher's news, once.
func (g *waiting) want() {
	if !g.wanted {
		g.wanted = true
		if g.watch != nil {
			g.watch.want()
		}
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
	if g.a.look == nil || !g.r.readsFirst(g.name) {
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
// became the head, or news of the lock came. The registry decides it all
// in one call (kick); a head then joins the waiting Lockers (a round trip
// at most, after this Locker's leave of the name in flight, if any) and
// sets its timer as decided. News that comes meanwhile kicks
// it again.
func (g *waiting) kicked() {
	k := g.r.kicked(g.name, g.w, g.a.look != nil)
	switch {
	case k.freed:
		g.news = true
		g.timer.Stop()
		g.tryNow = true
		return
	case !k.head:
		return
	}
	decided := time.Now()
	g.join()
	if k.next.reads {
		// A head that reads the lock is paced by its reads: a new one, or
		// one whose process just handed the lock on, reads soon to learn
		// its place. The wait counts from the decision: for a kept lock
		// it ends at the lock's end, however long the join took.
		k.next.wait = max(k.next.wait-time.Since(decided), 0)
		g.armWith(k.next)
		return
	}
	// News may bring the timer earlier, never later (dueAt); the poll also
	// repairs this process's place among the waiting ones.
	d, firm, _ := g.nextWait(k.next.state, nil, false) // news: no round trip
	if !firm && !g.dueAt.IsZero() {
		// (A kept lock: nothing frees it before, no poll needed.)
		d = min(d, max(time.Until(g.dueAt), 0))
	}
	g.setTimer(d)
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

// arm sets the timer after a failed attempt, as the registry decides
// (afterTry).
func (g *waiting) arm() { g.armWith(g.r.afterTry(g.name, g.a.look != nil)) }

// armWith sets the timer for the head's next wait w: for a head that reads
// the lock, its next read (pollturns.go), which a failed try must not put
// off (it says nothing of this Locker's place in the turns); otherwise the
// next attempt (nextWait).
func (g *waiting) armWith(w headWait) {
	if w.reads {
		g.setTimer(w.wait)
		g.freeSeen = false
		return
	}
	var d time.Duration
	d, _, g.freeSeen = g.nextWait(w.state, g.a.peek, g.freeSeen)
	g.setTimer(d)
}

// join joins the lock's waiting Lockers, when the name has a document of
// its own to join.
func (g *waiting) join() {
	if !g.a.noTurns {
		g.r.join(g.ctx, g.name)
	}
}

// nextWait returns how long the head waits after a failed try (or after
// news, with no peek), as planWait decides from k: it reads the lock
// (peek) when planWait asks to, tells the registry what the read showed,
// and then decides again with it.
func (g *waiting) nextWait(k waitState, peek func(context.Context) peeked, freeBefore bool) (d time.Duration, firm, free bool) {
	now, unc := g.r.clock.Read()
	rejoin := g.r.cfg.window.rejoin
	plan := planWait(k, nil, peek != nil, freeBefore, now, unc, rejoin, jitter)
	if plan.peek {
		p := peek(g.ctx)
		g.r.sawLease(g.name, p)
		plan = planWait(k, &p, true, freeBefore, now, unc, rejoin, jitter)
	}
	return plan.wait, plan.firm, plan.free
}

// waitPlan is how long a head waits after a failed try: firm when a kept
// lock is waited for to its end, with no poll before; free when a read
// showed the lock free; peek when it should read the lock first.
type waitPlan struct {
	wait             time.Duration
	firm, free, peek bool
}

// planWait decides how long the head waits after a failed try, from what
// the registry knows of name (k), at server time now with the clock's
// error unc: until the holder's lease ends or the next poll, whichever
// comes first (but not before another Locker's turn ends). A kept lock
// (firm) is waited for to its end, with no poll before, but never longer
// than rejoin in one go: the waiter's entry among the waiting Lockers must
// be refreshed. When what it knows of the lease is out of date and it may
// read the lock (canPeek), it asks to (peek), and is called again with
// what the read showed (seen): a read that shows the lock free has the
// head try again at once, unless the read before (freeBefore) showed it
// free too and the try failed all the same (a lock this kind of hold
// cannot take, or a quicker taker): then it backs off with the name's
// poll pause. jitter spreads that pause (the identity in tests).
func planWait(k waitState, seen *peeked, canPeek, freeBefore bool, now time.Time, unc, rejoin time.Duration,
	jitter func(time.Duration) time.Duration) waitPlan {
	d := k.pause
	if k.local > 0 {
		return waitPlan{wait: d}
	}
	// A taker's filter allows for its clock's error: a kept lock binds
	// until unc after its end.
	if k.firm.After(now.Add(-unc)) {
		return waitPlan{wait: min(overIn(k.firm, now, unc), rejoin), firm: true}
	}
	expiry, free := k.expiry, false
	// What we knew is out of date: learn the current lease end once. While
	// polls come quickly a timer for it would add little.
	if !expiry.After(now) && d >= peekAfter && (seen != nil || canPeek) {
		if seen == nil {
			return waitPlan{peek: true}
		}
		p := *seen
		switch {
		case p.firm && p.until.After(now.Add(-unc)):
			return waitPlan{wait: min(overIn(p.until, now, unc), rejoin), firm: true}
		case p.free && !freeBefore:
			// Free, or its lease over, since the attempt: try again as
			// soon as any taker would count it free.
			return waitPlan{wait: overIn(now, now, unc), free: true}
		case p.free:
			// Free again, and the try failed again: someone quicker, or a
			// lock this kind of hold cannot take. Back off, from the
			// shortest pause.
			return waitPlan{wait: min(jitter(k.backoff), d), free: true}
		}
		expiry, free = p.until, p.free
	}
	// The taker's filter allows for its clock's error: try once that passed
	// (a lease that ended less than unc ago counts as live still).
	if until := overIn(expiry, now, unc); expiry.After(now.Add(-unc)) && until < d {
		d = until
	}
	// Not before another Locker's turn is over (a poller's pause may be
	// shorter than the turn).
	if rest := overIn(k.turnUntil, now, unc); k.turnUntil.After(now) && rest > d {
		d = rest
	}
	return waitPlan{wait: d, free: free}
}

// peekAfter is the poll pause from which a waiter reads the holder's lease
// end, to arm a timer for it: polls that come sooner do as well.
const peekAfter = 100 * time.Millisecond

// wantNews says a caller of this Locker wants the watcher's news (a
// waiter, an observer): the change stream runs while anyone does.
func (l *Locker) wantNews() {
	if l.watch != nil {
		l.watch.want()
	}
}

// unwantNews ends a wantNews.
func (l *Locker) unwantNews() {
	if l.watch != nil {
		l.watch.unwant()
	}
}
