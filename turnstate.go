package mongolock

// This Locker's side of the turns (turns.go): its entry among a lock's
// waiting Lockers (join, leave), the turn its releases give (turnFor), the
// turns it gave itself, and the timer that wakes its head when another's
// turn ends.

import (
	"context"
	"slices"
	"time"
)

// membership is this Locker's place among a lock's waiting Lockers, as
// far as it knows.
type membership struct {
	// Lockers the stream told joined the waiting ones during this
	// process's hold (none while waiters poll)
	joiners []string
	joined  bool // this Locker is among the lock's waiting Lockers
	// it joined during this wait, whatever joined says since (a stream's
	// blip clears that): a wait that ends without the lock leaves
	wasJoined bool
	// how it joined (told by its change stream, or polling), and when
	// its last answered join of this wait was sent (zero: none yet)
	joinedStreaming bool
	joinedAt        time.Time
}

// ownTurns are the turns this process gave itself on a lock.
type ownTurns struct {
	run       int         // holds in a row this process gave itself
	runSince  time.Time   // when the first hold of the run was released (this host's clock)
	ownTurns  []time.Time // ends of the last turns this process gave itself
	turnGen   uint64      // ends the turn timer's claim when it changes
	turnTimer *time.Timer // wakes the head when another's turn ends
}

// turnFor returns the turn a release of name by this process gives, when
// w waited for it, and counts the process's run of holds. The name's rule
// is WithFIFO's when this Locker has it or w says another's marked it.
func (r *waitRegistry) turnFor(name string, w waiters, acquiredAt, now time.Time) turn {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(name)
	fifo := r.cfg.fifo || w.fifo
	w.stale = notJoiners(w.stale, q.member.joiners)
	if !w.read {
		// The acquire's view, of a hold of rejoinAfter at most: entries
		// that have grown stale since are not named (nor removed: a
		// refresh since would not show).
		old := func(l string) bool { return now.Sub(w.joinedAt[l]) >= r.cfg.window.stale }
		w.streaming = slices.DeleteFunc(slices.Clone(w.streaming), old)
		w.pollers = slices.DeleteFunc(slices.Clone(w.pollers), old)
		for _, l := range q.member.joiners {
			// Not under WithFIFO's rule: a joiner's place is unknown.
			if !slices.Contains(w.streaming, l) && !fifo {
				w.streaming = append(w.streaming, l)
			}
		}
	}
	pollTurn := r.pollTurn(acquiredAt, now)
	if q.own.run == 0 {
		q.own.runSince = time.Now() // monotonic: a new estimate of the server's clock does not stretch the run
	}
	t := nextTurn(r.self, w, len(q.waiters) > 0, r.streamOn(), run{q.own.run, time.Since(q.own.runSince)}, pollTurn, now)
	if fifo {
		t = nextFIFOTurn(r.self, w, len(q.waiters) > 0, r.streamOn(), pollTurn, now)
	}
	if t.heir != "" && t.heir != r.self && !slices.Contains(w.pollers, t.heir) {
		// Told by an event: its turn lasts as much longer as events come
		// late (eventlag.go). A poller's turn is longer by pollTurn already.
		t.until = t.until.Add(turnLag(r.lag, r.cfg.maxPause))
	}
	t.stale = w.stale
	if r.leaving[name] != nil {
		// Its entry, written by this release, could land before the leave
		// in flight and be undone by it (leaveTurnsLocked): the head joins
		// after the leave instead.
		t.stay, t.polls = false, false
	}
	q.pace.behind = 0
	if t.heir != r.self && t.heir != "" && !fifo {
		// Behind every other waiting Locker now: the heir holds, the rest
		// come before this one.
		q.pace.behind = len(slices.DeleteFunc(slices.Concat(w.streaming, w.pollers), func(l string) bool { return l == r.self || l == t.heir })) + 1
	}
	if t.heir == r.self {
		q.own.run++
		// Its change event may come before the release's reply, or after
		// the next one's: remember the last few, as stored (milliseconds).
		q.own.ownTurns = append(q.own.ownTurns[max(0, len(q.own.ownTurns)-2*pollerRunLength+1):], t.until.Truncate(time.Millisecond))
	} else {
		q.own.run = 0
	}
	return t
}

// staleOf returns the Lockers that w, a view of name's document, saw
// stale, but for those seen joining since (by the change stream, during
// this process's hold): the entries a release or keep removes. While
// waiters poll because events come too late, no join is seen: a Locker
// that rejoined may then be removed, and joins again within rejoinAfter.
func (r *waitRegistry) staleOf(name string, w waiters) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return notJoiners(w.stale, r.queue(name).member.joiners)
}

// join adds this Locker to name's waiting Lockers after a failed attempt,
// unless it joined lately in the same way (streaming or polling). While
// this process holds the name, its own release joins for it. A failure to
// join only costs turns. It blocks for the round trip, and first until
// this Locker's leave of the name in flight has landed (afterLeave).
func (r *waitRegistry) join(ctx context.Context, name string) {
	select {
	case <-r.closed:
		return // the wait ends with ErrClosed: no round trip first
	default:
	}
	if !r.afterLeave(ctx, name) {
		return
	}
	// Decided once the leave has landed: a hold may have begun meanwhile.
	r.mu.Lock()
	q := r.queue(name)
	// A join refreshes an entry that holders saw, and tells them nothing,
	// unless this Locker is not among the waiting ones (or is, the other
	// way), or its entry is so old that a release may have judged it stale
	// and removed it (this process was stopped, or cut off).
	age := time.Since(q.member.joinedAt)
	e := entry{streaming: r.streamOn(), began: q.member.joinedAt.IsZero(),
		news: !q.member.joined || q.member.joinedStreaming != r.streamOn() || age >= r.cfg.window.stale-r.cfg.window.rejoin}
	need := r.entries != nil && q.local == 0 && (e.news || age > r.cfg.window.rejoin)
	r.mu.Unlock()
	if !need {
		return
	}
	sent := time.Now() // the entry's time is about this, or later
	e.fifo = r.cfg.fifo
	err := r.entries.join(ctx, name, r.self, e)
	r.mu.Lock()
	defer r.mu.Unlock()
	q = r.names[name]
	switch {
	case q == nil || q.local > 0:
	case err == nil:
		q.member.joined, q.member.joinedStreaming, q.member.joinedAt, q.member.wasJoined = true, e.streaming, sent, true
	case ambiguous(err):
		// It may have joined: a wait that ends without the lock leaves.
		// The next attempt joins again, as news, and as the wait's first
		// join if this was.
		q.member.wasJoined = true
	}
}

// waitingEntries is the store's side of the turns (entries.go): this
// Locker's entry among a lock's waiting Lockers.
type waitingEntries interface {
	// join adds locker's entry to name's waiting Lockers, or refreshes it.
	join(ctx context.Context, name, locker string, e entry) error
	// leave takes locker's entry out of them.
	leave(ctx context.Context, name, locker string) error
}

// leaveTurnsLocked takes this Locker out of the Lockers waiting for name,
// in the background (it does not block): its last waiter gave up. Once
// the Locker is closed it does nothing: a turn given to it passes after
// turnGrace. r.mu must be held.
//
// A new wait may begin before the leave lands, and its join would then
// come first and be undone by it: the Locker would think itself among the
// waiting Lockers, never named in a turn, its waiters starved until the
// entry's refresh (rejoinAfter). So a join waits for the leave
// (afterLeave), and a release while it is in flight does not stay among
// the waiting Lockers (turnFor): its head joins after the leave. Nothing
// puts the entry back while a leave is in flight, so a second leave then
// has nothing to do.
func (r *waitRegistry) leaveTurnsLocked(name string) {
	select {
	case <-r.closed:
		return
	default:
	}
	if r.entries == nil {
		return
	}
	if r.leaving[name] != nil {
		return // it takes the entry out, and nothing put it back since
	}
	landed := make(chan struct{})
	r.leaving[name] = landed
	started := r.bg.start(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := r.entries.leave(ctx, name, r.self); err != nil {
			r.log.Debug("mongolock: leaving the waiting Lockers failed; a turn given to this one passes unused", "name", name, "err", err)
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.leaving, name)
		close(landed)
	})
	if !started { // closing: nothing will join
		delete(r.leaving, name)
	}
}

// afterLeave returns once this Locker's leave of name in flight, if any,
// has landed (leaveTurnsLocked), and reports true; false when ctx ended or
// the Locker closed first.
func (r *waitRegistry) afterLeave(ctx context.Context, name string) bool {
	r.mu.Lock()
	landed := r.leaving[name]
	r.mu.Unlock()
	if landed == nil {
		return true
	}
	select {
	case <-landed:
		return true
	case <-ctx.Done():
	case <-r.closed:
	}
	return false
}

// took records that an acquire that is not a hold (the seed API's) took
// name: it left the waiting Lockers.
func (r *waitRegistry) took(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if q := r.names[name]; q != nil {
		q.member.joined = false
	}
}

// handedOn records that a hold of this process on name ended with a
// release that gave the next turn to t.heir: the head waits for that turn
// to end (or for news of the lock) rather than trying at once, and polls
// at the usual pace again.
func (r *waitRegistry) handedOn(name string, t turn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(name)
	q.local--
	switch {
	case t.stay && len(q.waiters) == 0 && q.local == 0 && r.entries != nil:
		r.leaveTurnsLocked(name) // its waiters left while it released
	case t.stay:
		q.member.joined, q.member.joinedStreaming, q.member.joinedAt, q.member.wasJoined = true, !t.polls, time.Now(), true
	}
	signalAll(q.observers)
	if q.local == 0 {
		r.armTurnLocked(name, q, t.until)
		q.told.busy, q.told.turnUntil, q.told.expiry = true, t.until, time.Time{}
		if len(q.waiters) > 0 {
			signal(q.waiters[0].kick) // its pause was the long one of a local hold
		}
	}
	r.drop(name, q)
}

// turn is the watcher's news that name was released with heir named: this
// process's head tries at once if the heir is this Locker, and otherwise
// when the heir's turn ends (unless news of the lock comes first).
func (r *waitRegistry) turn(name, heir string, until time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.names[name]
	switch {
	case q == nil:
	case !r.streamOn():
		signalAll(q.observers) // waiters poll (eventlag.go): they read their turns
	case heir == r.self && slices.ContainsFunc(q.own.ownTurns, until.Equal):
		// The event of one of this process's own releases (they may come
		// late, after the next): its head was woken then.
		if q.local == 0 {
			q.told.busy = false
		}
	case heir == r.self:
		q.member.joined = false // the release took this Locker out
		if q.local == 0 {
			r.wakeLocked(q)
		}
	default:
		signalAll(q.observers)
		if q.local == 0 {
			r.armTurnLocked(name, q, until)
			// The release ended the lease: only the turn keeps others out.
			q.told.busy, q.told.turnUntil, q.told.expiry = true, until, time.Time{}
		}
	}
}

// joined is the watcher's news that locker joined name's waiting Lockers:
// a hold of this process names it heir in its turn even though its
// acquire did not see it. Ignored while waiters poll (events too late, or
// the stream down), as news that late would name pollers streaming heirs.
func (r *waitRegistry) joined(name, locker string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if q := r.names[name]; q != nil && r.streamOn() && q.local > 0 && !slices.Contains(q.member.joiners, locker) {
		q.member.joiners = append(q.member.joiners, locker)
	}
}

// armTurnLocked has the head of name's queue woken when another Locker's
// turn ends at until (server time), allowing for the clock's error as the
// acquire's filter does; r.mu must be held.
func (r *waitRegistry) armTurnLocked(name string, q *nameQueue, until time.Time) {
	r.stopTurnLocked(q)
	if len(q.waiters) == 0 || !r.streamOn() {
		// A head that reads the lock is paced by its reads (pollturns.go):
		// an attempt when the turn ends would fail if the heir came.
		return
	}
	gen := q.own.turnGen
	now, unc := r.clock.Read()
	q.own.turnTimer = time.AfterFunc(overIn(until, now, unc), func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.names[name] == q && q.own.turnGen == gen && q.local == 0 {
			r.wakeLocked(q)
		}
	})
}

// stopTurnLocked ends the wait for another's turn; r.mu must be held.
func (r *waitRegistry) stopTurnLocked(q *nameQueue) {
	q.own.turnGen++
	if q.own.turnTimer != nil {
		q.own.turnTimer.Stop()
		q.own.turnTimer = nil
	}
}
