package mongolock

import (
	"cmp"
	"context"
	"slices"
	"time"
)

// Turns among processes. When several processes wait for one lock, a
// release names the next of them, in turn, as the lock's heir: for a short
// while (turnGrace) only the heir's waiters may take it, and the others,
// told by the change stream, do not even try. So a release wakes one
// process instead of a herd of failed attempts, and every waiting process
// gets the lock in its turn, whichever one's goroutines are more numerous
// or closer to the server.
//
// A process (a Locker) joins the lock's waiting Lockers, stored in its
// document, after an attempt of its failed; the taker leaves them, and a
// releaser whose process still has waiters joins again. Turns go round the
// waiting Lockers in the order of their ids, starting after the
// releaser's. An heir that does not come (its waiters gave up, its process
// died, its stream lagged) delays the lock by turnGrace at most, and is
// out of the waiting Lockers from then on.
//
// A releaser whose own process has waiters may name itself heir, up to
// runLength holds in a row: a handoff within the process needs no change
// event, so it is quicker, and the others still do not try in vain.
//
// A Locker whose change stream runs learns at once that its turn came.
// One without (the server has none, or it is off) joins as a poller
// instead, and is named in its turn too (pollturns.go): it learns of it by
// reading the lock when its turn is near, and its turn is longer by the
// time that may take (pollTurn). An entry of either kind counts only
// while its Locker refreshes it (staleAfter, below). Only the
// benchmark's comparison turns pollers' turns off (pollersInTurn false:
// releases then name no heir while a poller waits, so that it keeps its
// chance to find the lock free, and a process's own waiters come first).
//
// WithFIFO (nextFIFOTurn) names instead the Locker that began to wait
// first, whether it streams or polls; a poller's turn is longer by
// pollTurn as well, and a poller that misses it keeps its place (it learns
// of turns only by reading), so an heir that polls slower than the
// releaser expects may hold the lock back by that turn at each release
// until it comes, or, dead, until its entry is stale. A streaming heir
// that misses its turn goes to the back. WithFIFO is one rule for the
// whole name: a Locker with it marks the lock's document when it takes or
// joins it (fifoMark), and while the mark is younger than staleAfter every
// Locker that uses the name follows the rule, with or without the option:
// each join records when its Locker began to wait, and a release names
// the Locker that has waited longest.

// turnGrace is how long only the heir may take a released lock: time for
// the change stream to tell it and for its attempt to arrive.
const turnGrace = 100 * time.Millisecond

// runLength is how many holds in a row a process may have while others
// wait, when its own goroutines wait too.
const runLength = 4

// The window of liveness. A waiting Locker refreshes its entry among the
// lock's waiting Lockers every rejoinAfter: at the first attempt or read
// after that much time since it joined (its waits are never longer,
// wait.go), so its entry is never older than about twice that. An entry
// older than staleAfter is taken for its Locker's death (killed, crashed,
// cut off): it is never named heir nor counts as a poller that holds
// releases back, and the next release of the lock (or kept hold, or
// ReleaseLock) by a Locker whose view saw it so removes it in the same
// write: the acquire's view for a hold of rejoinAfter at most, a read
// before the release for a longer one (hold.waitersNow), since refreshes
// tell no one.
const (
	rejoinAfter = 10 * time.Second
	staleAfter  = 3 * rejoinAfter
)

// window is the rejoinAfter and staleAfter a Locker goes by (shorter only
// in tests, which need not wait).
type window struct{ rejoin, stale time.Duration }

var defaultWindow = window{rejoin: rejoinAfter, stale: staleAfter}

// waiters is who waits for a lock, as an acquire saw it, or a read before
// a release.
type waiters struct {
	streaming []string // Lockers told of releases by a change stream
	pollers   []string // Lockers that poll
	// When each waiting Locker began to wait, and when it last joined
	// (server time).
	since    map[string]time.Time
	joinedAt map[string]time.Time
	// fifo: the name's rule is WithFIFO's, as a Locker with it used the
	// name within staleAfter (fifoMark).
	fifo bool
	// Lockers whose entries were not refreshed for staleAfter: the next
	// release removes them.
	stale []string
	read  bool // read just before the release, not by its acquire
}

// waiters returns who waits for the lock, at server time now: the Lockers
// whose entries are live (refreshed within staleAfter), and the others as
// stale.
func (d *lockDoc) waiters(now time.Time, staleAfter time.Duration) waiters {
	w := waiters{since: d.Since, joinedAt: map[string]time.Time{}, fifo: fifoRule(d.FIFO, now, staleAfter)}
	if w.since == nil {
		w.since = map[string]time.Time{} // read: says who joined, even if none did with WithFIFO
	}
	// A Locker's entry is as fresh as its last join, as either kind.
	for _, m := range []map[string]time.Time{d.Waiting, d.Pollers} {
		for l, at := range m {
			if at.After(w.joinedAt[l]) {
				w.joinedAt[l] = at
			}
		}
	}
	for l, at := range w.joinedAt {
		switch _, streams := d.Waiting[l]; {
		case now.Sub(at) >= staleAfter:
			w.stale = append(w.stale, l)
			delete(w.joinedAt, l)
		case streams:
			w.streaming = append(w.streaming, l)
		default:
			w.pollers = append(w.pollers, l)
		}
	}
	for l := range d.Since {
		if _, ok := w.joinedAt[l]; !ok && !slices.Contains(w.stale, l) {
			w.stale = append(w.stale, l) // left only its place: nothing refreshes it
		}
	}
	// Map order is random: the order of ids, for the reader's sake.
	slices.Sort(w.streaming)
	slices.Sort(w.pollers)
	slices.Sort(w.stale)
	return w
}

// fifoRule reports whether a name whose document carries the mark mark
// (the server time a Locker with WithFIFO last took or joined it) follows
// WithFIFO's rule at server time now: while the mark is younger than
// staleAfter, every Locker that uses the name follows it.
func fifoRule(mark, now time.Time, staleAfter time.Duration) bool {
	return !mark.IsZero() && now.Sub(mark) < staleAfter
}

// began returns when l began to wait, as w records it (WithFIFO); one
// that joined without WithFIFO, its last join.
func (w waiters) began(l string) time.Time {
	if at, ok := w.since[l]; ok {
		return at
	}
	return w.joinedAt[l]
}

// byWaited returns the Lockers of w other than but, the one that has
// waited longest first (by the time it began to wait, then by id): the
// order of WithFIFO's turns.
func byWaited(but string, w waiters) []string {
	all := slices.DeleteFunc(slices.Concat(w.streaming, w.pollers), func(l string) bool { return l == but })
	slices.SortFunc(all, func(a, b string) int {
		if c := w.began(a).Compare(w.began(b)); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	return all
}

// fifoHeir returns the Locker other than locker that has waited longest
// among w (byWaited), and whether it polls; "" when none waits.
func fifoHeir(locker string, w waiters) (heir string, polls bool) {
	order := byWaited(locker, w)
	if len(order) == 0 {
		return "", false
	}
	return order[0], slices.Contains(w.pollers, order[0])
}

// turn is what a release says about who takes the lock next.
type turn struct {
	heir   string    // the Locker whose waiters alone may take it; "" for anyone
	until  time.Time // server time the heir's turn ends
	locker string    // the releasing Locker
	stay   bool      // it still has waiters: it joins the waiting Lockers
	polls  bool      // it joins them as a poller (WithFIFO)
	fifo   bool      // WithFIFO: it joins them at the back
	// heirPolls: the heir is a poller (WithFIFO), which learns of its turn
	// only by polling: it stays among the waiting Lockers, in its place,
	// in case it misses the turn.
	heirPolls bool
	stale     []string // Lockers taken for dead: their entries go (staleAfter)
}

// nextTurn returns the turn a release by locker gives, when w waits for the
// lock (as the releaser's acquire saw it), localWaiters says whether the
// releaser's own process has waiters, streaming whether its change stream
// runs, run how many holds in a row it had before this one, and pollTurn
// how much longer a poller's turn lasts (pollturns.go).
//
// pollersInTurn says whether pollers are named in their turn as well
// (pollturns.go); without it, a release while a poller waits names no heir.
func nextTurn(locker string, w waiters, localWaiters, streaming bool, run int, pollersInTurn bool, pollTurn time.Duration, now time.Time) turn {
	t := turn{locker: locker}
	if !pollersInTurn {
		if len(w.pollers) > 0 {
			return t
		}
		// Only a streaming releaser learns of its next turn in time.
		localWaiters = localWaiters && streaming
	}
	next := nextHeir(locker, slices.Concat(w.streaming, w.pollers))
	switch {
	case next == "":
	case localWaiters && run < runLength-1:
		t.heir, t.until = locker, now.Add(turnGrace)
	default:
		t.heir, t.until = next, now.Add(turnGrace)
		if slices.Contains(w.pollers, next) {
			t.until = t.until.Add(pollTurn)
		}
		t.stay, t.polls = localWaiters, localWaiters && !streaming
	}
	return t
}

// nextFIFOTurn is nextTurn under WithFIFO: the Locker that has waited
// longest is heir, whether it streams or polls, and the releaser never
// names itself; a poller's turn is longer by pollTurn, so that it polls
// within it. A releaser whose process still has waiters
// joins the waiting Lockers at the back.
func nextFIFOTurn(locker string, w waiters, localWaiters, streaming bool, pollTurn time.Duration, now time.Time) turn {
	t := turn{locker: locker, fifo: true}
	heir, polls := fifoHeir(locker, w)
	if heir == "" {
		return t
	}
	t.heir, t.until = heir, now.Add(turnGrace)
	if polls {
		// It keeps its place if it misses the turn.
		t.until = t.until.Add(pollTurn)
		t.heirPolls = true
	}
	t.stay, t.polls = localWaiters, !streaming
	return t
}

// turnFor returns the turn a release of name by this process gives, when
// w waited for it, and counts the process's run of holds. The name's rule
// is WithFIFO's when this Locker has it or w says another's marked it.
func (r *waitRegistry) turnFor(name string, w waiters, acquiredAt, now time.Time) turn {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(name)
	fifo := r.fifo || w.fifo
	w.stale = notJoiners(w.stale, q.joiners)
	if !w.read {
		// The acquire's view, of a hold of rejoinAfter at most: entries
		// that have grown stale since are not named (nor removed: a
		// refresh since would not show).
		old := func(l string) bool { return now.Sub(w.joinedAt[l]) >= r.window.stale }
		w.streaming = slices.DeleteFunc(slices.Clone(w.streaming), old)
		w.pollers = slices.DeleteFunc(slices.Clone(w.pollers), old)
		for _, l := range q.joiners {
			// Not under WithFIFO's rule: a joiner's place is unknown.
			if !slices.Contains(w.streaming, l) && !fifo {
				w.streaming = append(w.streaming, l)
			}
		}
	}
	pollTurn := r.maxPause // the heir polls within its own poll interval, as this process does
	if r.pollersInTurn {
		pollTurn = r.pollTurn(acquiredAt, now)
	}
	t := nextTurn(r.self, w, len(q.waiters) > 0, r.streamOn, q.run, r.pollersInTurn, pollTurn, now)
	if fifo {
		t = nextFIFOTurn(r.self, w, len(q.waiters) > 0, r.streamOn, pollTurn, now)
	}
	if t.heir != "" && t.heir != r.self && !slices.Contains(w.pollers, t.heir) {
		// Told by an event: its turn lasts as much longer as events come
		// late (eventlag.go). A poller's turn is longer by pollTurn already.
		t.until = t.until.Add(turnLag(r.lag, r.maxPause))
	}
	t.stale = w.stale
	q.behind = 0
	if t.heir != r.self && t.heir != "" && !fifo {
		// Behind every other waiting Locker now: the heir holds, the rest
		// come before this one.
		q.behind = len(slices.DeleteFunc(slices.Concat(w.streaming, w.pollers), func(l string) bool { return l == r.self || l == t.heir })) + 1
	}
	if t.heir == r.self {
		q.run++
		// Its change event may come before the release's reply, or after
		// the next one's: remember the last few, as stored (milliseconds).
		q.ownTurns = append(q.ownTurns[max(0, len(q.ownTurns)-2*runLength+1):], t.until.Truncate(time.Millisecond))
	} else {
		q.run = 0
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
	return notJoiners(w.stale, r.queue(name).joiners)
}

// notJoiners returns the Lockers of stale that are not among joiners.
func notJoiners(stale, joiners []string) []string {
	return slices.DeleteFunc(slices.Clone(stale), func(l string) bool { return slices.Contains(joiners, l) })
}

// runOf returns how many holds in a row this process gave itself on name
// before the one it takes now: the acquire records it for pollers
// (pollturns.go).
func (r *waitRegistry) runOf(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if q := r.names[name]; q != nil {
		return q.run
	}
	return 0
}

// nextHeir returns the waiting Locker after locker in the order of ids,
// wrapping round (inTurn); "" when no other waits.
func nextHeir(locker string, waiting []string) string {
	if order := inTurn(locker, waiting); len(order) > 0 {
		return order[0]
	}
	return ""
}

// inTurn returns the Lockers of waiting other than after, in the order
// turns go round after its: by id, from the first after its, wrapping
// round.
func inTurn(after string, waiting []string) []string {
	others := slices.DeleteFunc(slices.Clone(waiting), func(l string) bool { return l == after })
	slices.Sort(others)
	i, _ := slices.BinarySearch(others, after)
	return slices.Concat(others[i:], others[:i])
}

// join adds this Locker to name's waiting Lockers after a failed attempt,
// unless it joined lately in the same way (streaming or polling). While
// this process holds the name, its own release joins for it. A failure to
// join only costs turns.
func (r *waitRegistry) join(ctx context.Context, name string) {
	if r.watch != nil && r.watch.noStreamsAnywhere() && !r.fifo && !r.pollersInTurn {
		return // no Locker of this server can stream: nobody is named heir
	}
	select {
	case <-r.closed:
		return // the wait ends with ErrClosed: no round trip first
	default:
	}
	r.mu.Lock()
	q := r.queue(name)
	// A join refreshes an entry that holders saw, and tells them nothing,
	// unless this Locker is not among the waiting ones (or is, the other
	// way), or its entry is so old that a release may have judged it stale
	// and removed it (this process was stopped, or cut off).
	age := time.Since(q.joinedAt)
	e := entry{streaming: r.streamOn, began: q.joinedAt.IsZero(),
		news: !q.joined || q.joinedStreaming != r.streamOn || age >= r.window.stale-r.window.rejoin}
	need := r.joinTurns != nil && q.local == 0 && (e.news || age > r.window.rejoin)
	r.mu.Unlock()
	if !need {
		return
	}
	sent := time.Now() // the entry's time is about this, or later
	err := r.joinTurns(ctx, name, e)
	r.mu.Lock()
	defer r.mu.Unlock()
	q = r.names[name]
	switch {
	case q == nil || q.local > 0:
	case err == nil:
		q.joined, q.joinedStreaming, q.joinedAt, q.wasJoined = true, e.streaming, sent, true
	case ambiguous(err):
		// It may have joined: a wait that ends without the lock leaves.
		// The next attempt joins again, as news, and as the wait's first
		// join if this was.
		q.wasJoined = true
	}
}

// took records that an acquire that is not a hold (the seed API's) took
// name: it left the waiting Lockers.
func (r *waitRegistry) took(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if q := r.names[name]; q != nil {
		q.joined = false
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
	case t.stay && len(q.waiters) == 0 && q.local == 0 && r.leaveTurns != nil:
		r.leaveTurns(name) // its waiters left while it released
	case t.stay:
		q.joined, q.joinedStreaming, q.joinedAt, q.wasJoined = true, !t.polls, time.Now(), true
	}
	signalAll(q.observers)
	if q.local == 0 {
		r.armTurnLocked(name, q, t.until)
		q.busy, q.turnUntil, q.expiry = true, t.until, time.Time{}
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
	case !r.streamOn:
		signalAll(q.observers) // waiters poll (eventlag.go): they read their turns
	case heir == r.self && slices.ContainsFunc(q.ownTurns, until.Equal):
		// The event of one of this process's own releases (they may come
		// late, after the next): its head was woken then.
		if q.local == 0 {
			q.busy = false
		}
	case heir == r.self:
		q.joined = false // the release took this Locker out
		if q.local == 0 {
			r.wakeLocked(q)
		}
	default:
		signalAll(q.observers)
		if q.local == 0 {
			r.armTurnLocked(name, q, until)
			// The release ended the lease: only the turn keeps others out.
			q.busy, q.turnUntil, q.expiry = true, until, time.Time{}
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
	if q := r.names[name]; q != nil && r.streamOn && q.local > 0 && !slices.Contains(q.joiners, locker) {
		q.joiners = append(q.joiners, locker)
	}
}

// armTurnLocked has the head of name's queue woken when another Locker's
// turn ends at until (server time), allowing for the clock's error as the
// acquire's filter does; r.mu must be held.
func (r *waitRegistry) armTurnLocked(name string, q *nameQueue, until time.Time) {
	r.stopTurnLocked(q)
	if len(q.waiters) == 0 || r.pollersInTurn && !r.streamOn {
		// A head that reads the lock is paced by its reads (pollturns.go):
		// an attempt when the turn ends would fail if the heir came.
		return
	}
	gen := q.turnGen
	now, unc := r.clock.Read()
	q.turnTimer = time.AfterFunc(until.Sub(now)+unc+time.Millisecond, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.names[name] == q && q.turnGen == gen && q.local == 0 {
			r.wakeLocked(q)
		}
	})
}

// stopTurnLocked ends the wait for another's turn; r.mu must be held.
func (r *waitRegistry) stopTurnLocked(q *nameQueue) {
	q.turnGen++
	if q.turnTimer != nil {
		q.turnTimer.Stop()
		q.turnTimer = nil
	}
}
