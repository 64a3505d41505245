package mongolock

import (
	"cmp"
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
// runLength holds in a row (pollerRunLength while pollers take part): a
// handoff within the process needs no change event nor read, so it is
// quicker, and the others still do not try in vain.
//
// A Locker whose change stream runs learns at once that its turn came.
// One without (the server has none, or it is off) joins as a poller
// instead, and is named in its turn too (pollturns.go): it learns of it by
// reading the lock when its turn is near, and its turn is longer by the
// time that may take (pollTurn). An entry of either kind counts only
// while its Locker refreshes it (staleAfter, below). This Locker's side
// of the turns (its entries, the turns it gives) is in turnstate.go.
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

// While a poller takes part in the turns (it waits, or it releases), a run
// may have up to pollerRunLength holds instead, as long as it lasted less
// than pollerRun since its first hold was released (and runLength holds in
// any case). A handoff to a poller idles the lock until the poller's read
// comes (every heirPoll while it is next in turn: half that on average)
// and its attempt, about a quick hold's length twice over; runs twice as
// long pay that half as often (polling 8x4 ran at about two thirds of the
// throughput of processes serving their own waiters first with runs of
// runLength, and at over 90% with these; runs of 16 were faster still, but
// 4 processes sharing 80 acquisitions got 32 for one and 16 for the
// others: "Turns for pollers" in docs/fairness.md). Every process's run is
// as long, streaming or polling, so that a process before a poller is not
// favoured; a process with fewer waiters than the run has holds gets
// fewer holds in its turn, as with runLength. The others wait longer for
// their turn: pollerRun bounds that wait when holds are long, where the
// idle costs little.
const (
	pollerRunLength = 2 * runLength
	pollerRun       = 100 * time.Millisecond
)

// run is the holds in a row a process had, before the one it releases.
type run struct {
	holds  int
	lasted time.Duration // since the first of them was released
}

// keeps reports whether a process that had r may keep the lock for its
// own waiters once more, while another waits; pollers says whether a
// poller takes part in the turns.
func (r run) keeps(pollers bool) bool {
	if r.holds < runLength-1 {
		return true
	}
	return pollers && r.holds < pollerRunLength-1 && r.lasted < pollerRun
}

// The window of liveness. A waiting Locker refreshes its entry among the
// lock's waiting Lockers every rejoinAfter: at the first attempt or read
// after that much time since it joined (its waits are never longer,
// waitloop.go), so its entry is never older than about twice that. An entry
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
func (d *turnsDoc) waiters(now time.Time, staleAfter time.Duration) waiters {
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
// runs, r the holds in a row it had before this one, and pollTurn
// how much longer a poller's turn lasts (pollturns.go).
func nextTurn(locker string, w waiters, localWaiters, streaming bool, r run, pollTurn time.Duration, now time.Time) turn {
	t := turn{locker: locker}
	next := nextHeir(locker, slices.Concat(w.streaming, w.pollers))
	switch {
	case next == "":
	case localWaiters && r.keeps(!streaming || len(w.pollers) > 0):
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

// notJoiners returns the Lockers of stale that are not among joiners.
func notJoiners(stale, joiners []string) []string {
	return slices.DeleteFunc(slices.Clone(stale), func(l string) bool { return slices.Contains(joiners, l) })
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
