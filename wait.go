package mongolock

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// waitRegistry queues the goroutines of one Locker that wait for a lock,
// by name. Only the head of a name's queue talks to the server, so 1,000
// goroutines waiting on one name cost what one does. The head tries again
// when it is woken (a hold of this process ended, or the watcher saw a
// release), when the last seen holder's lease runs out, and otherwise after
// a jittered pause that backs off up to the poll interval. While a hold of
// this process has the name, the head does not poll at all: the end of
// that hold wakes it.
type waitRegistry struct {
	maxPause    time.Duration // the poll interval
	safetyPause time.Duration // the longest pause while the change stream runs
	clock       *serverClock
	watch       *watcher        // nil: no change streams
	closed      <-chan struct{} // the Locker's: waits end with ErrClosed
	self        string          // the Locker's id among waiting Lockers
	fifo        bool            // WithFIFO: turns in the order processes began to wait
	window      window          // how often this Locker refreshes its entries (turns.go)
	// pollersInTurn: pollers are named in their turn too (pollturns.go;
	// off only in the benchmark's comparison)
	pollersInTurn bool
	joinTurns     func(ctx context.Context, name string, e entry) error
	leaveTurns    func(name string) // in the background

	mu       sync.Mutex
	names    map[string]*nameQueue
	sweepAt  int           // len(names) at which queue sweeps
	streamUp bool          // the change stream runs
	lag      time.Duration // how late its events come (eventlag.go)
	slow     bool          // too late to wait on (slowEvents)
	// streamOn: releases are being watched, and their events come in time
	// (streamUp, and not slowEvents): polls are only a safety net.
	streamOn bool
}

type nameQueue struct {
	waiters   []*waiter
	observers []chan struct{}                // Election.Observe: told of every change seen
	news      map[chan struct{}][]leaderNews // leaders the change stream told of, per observer
	local     int                            // holds of this process on the name
	pause     time.Duration                  // next poll pause, shared by successive heads
	expiry    time.Time                      // server time the last seen holder's lease ends
	firm      time.Time                      // server time a kept lock frees (no one releases it before)
	freedNews bool                           // news of a release came during this process's hold
	turnUntil time.Time                      // server time another Locker's turn ends (turns.go)
	busy      bool                           // the stream's last news: taken, or another's turn
	joiners   []string                       // Lockers the stream told joined the waiting ones during this process's hold (none while waiters poll)
	joined    bool                           // this Locker is among the lock's waiting Lockers
	// it joined during this wait, whatever joined says since (a stream's
	// blip clears that): a wait that ends without the lock leaves
	wasJoined bool
	// how it joined (told by its change stream, or polling), and when
	// its last answered join of this wait was sent (zero: none yet)
	joinedStreaming bool
	joinedAt        time.Time
	run             int         // holds in a row this process gave itself (turns.go)
	ownTurns        []time.Time // ends of the last turns this process gave itself
	turnGen         uint64      // ends the turn timer's claim when it changes
	turnTimer       *time.Timer // wakes the head when another's turn ends
	// What the head's last read of the lock showed, while polling
	// (pollturns.go), and how long a turn took, as measured between reads.
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

type waiter struct {
	kick  chan struct{} // 1-buffered: look at freed and at being head
	freed bool          // the lock may be free: try now
}

func newWaitRegistry(o options, clock *serverClock, closed <-chan struct{}) *waitRegistry {
	return &waitRegistry{
		maxPause:      o.pollInterval,
		safetyPause:   o.safetyPoll,
		window:        o.window,
		pollersInTurn: !o.pollersApart && !o.noTurns,
		clock:         clock,
		closed:        closed,
		names:         map[string]*nameQueue{},
		sweepAt:       minSweep,
	}
}

func (r *waitRegistry) minPause() time.Duration {
	return max(r.maxPause/16, time.Millisecond)
}

// reads reports whether name's head reads the lock at its polls
// (pollturns.go): this Locker learns of releases only by polling, and no
// hold of this process has the name (whose end wakes the head).
func (r *waitRegistry) reads(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.streamOn && r.queue(name).local == 0
}

// capLocked is the longest poll pause now; r.mu must be held.
func (r *waitRegistry) capLocked() time.Duration {
	if r.streamOn {
		return max(r.safetyPause, r.maxPause)
	}
	return r.maxPause
}

// queue returns name's queue; r.mu must be held.
func (r *waitRegistry) queue(name string) *nameQueue {
	q := r.names[name]
	if q == nil {
		if len(r.names) >= r.sweepAt {
			r.sweepLocked()
		}
		q = &nameQueue{pause: r.minPause()}
		r.names[name] = q
	}
	return q
}

// drop forgets name's queue when nothing refers to it; r.mu must be held.
// A queue whose news says the lock is taken is kept while that holds, so
// that a new waiter does not try in vain, and one that knows the lock kept
// until a time to come, so that a new waiter tries once at most before
// it; sweeps forget it later.
func (r *waitRegistry) drop(name string, q *nameQueue) {
	if now, _ := r.clock.Read(); r.unusedLocked(q) && !r.takenLocked(q) && !q.firm.After(now) {
		r.stopTurnLocked(q)
		delete(r.names, name)
	}
}

func (r *waitRegistry) unusedLocked(q *nameQueue) bool {
	return len(q.waiters) == 0 && q.local == 0 && len(q.observers) == 0
}

// sweepLocked forgets the unused queues, and sets the size of the next
// sweep; r.mu must be held.
func (r *waitRegistry) sweepLocked() {
	for name, q := range r.names {
		r.drop(name, q)
	}
	r.sweepAt = max(2*len(r.names), minSweep)
}

// minSweep is the number of names from which the registry looks for
// queues to forget.
const minSweep = 256

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
func (r *waitRegistry) wait(ctx context.Context, name string, a attempt, stop <-chan struct{}, stopErr func() error) error {
	w := &waiter{kick: make(chan struct{}, 1)}
	r.mu.Lock()
	q := r.queue(name)
	q.waiters = append(q.waiters, w)
	head := len(q.waiters) == 1
	// A new head tries at once, unless the lock is surely not free: held
	// in this process (its release wakes the head), or taken by another
	// as the change stream last told.
	tryNow := head && (a.eager || !r.takenLocked(q))
	r.mu.Unlock()
	news := false // told the lock may be free, and not yet tried since
	defer func() { r.leave(name, w, news) }()
	wanted := !tryNow // a waiter that waits wants the watcher's news
	if wanted {
		r.want()
		defer r.unwant()
	}

	timer := time.NewTimer(0)
	timer.Stop()
	defer timer.Stop()
	// When the timer fires: news may bring that earlier, never later. A
	// stream of acquires by others must not put the poll off for ever, nor
	// news that tells nothing of the lease put off a try at its end.
	var dueAt time.Time
	// No wait is longer than rejoinAfter, however long the poll intervals
	// or the lock's hold: the attempt or read that ends it joins the
	// waiting Lockers again when due, so that this Locker's entry never
	// looks stale (turns.go).
	setTimer := func(d time.Duration) {
		d = min(d, r.window.rejoin)
		dueAt = time.Now().Add(d)
		timer.Reset(d)
	}
	freeSeen := false // the last read after a failed attempt showed the lock free
	arm := func() {
		if a.look != nil && r.reads(name) {
			// The next poll reads the lock, and what it shows sets the
			// pace (pollturns.go): a failed try says nothing of this
			// Locker's place in the turns, so it must not put the read off.
			setTimer(r.readAfterTry(name))
			freeSeen = false
			return
		}
		var d time.Duration
		d, _, freeSeen = r.nextWait(ctx, name, a.peek, freeSeen)
		setTimer(d)
	}
	join := func() {
		if !a.noTurns {
			r.join(ctx, name)
		}
	}
	if head && !tryNow {
		join()
		r.mu.Lock()
		if now, _ := r.clock.Read(); q.local == 0 && q.turnUntil.After(now) {
			r.armTurnLocked(name, q, q.turnUntil) // armed while no one waited
		}
		r.mu.Unlock()
		arm()
	}
	for {
		if tryNow {
			ok, err := a.try(ctx)
			if err != nil {
				return err // an attempt that did not conclude leaves the news to the next
			}
			news = false // tried since
			if ok {
				news = a.shared
				return nil
			}
			join()
			if !wanted {
				wanted = true
				r.want()
				defer r.unwant()
			}
			arm()
		}
		tryNow = false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.closed:
			return ErrClosed
		case <-stop:
			return stopErr()
		case <-timer.C:
			tryNow = true
			if a.look != nil && r.reads(name) && !r.dueTry(name) {
				// A poll: read first, attempt only when it is free for us.
				v := a.look(ctx)
				if err := ctx.Err(); err != nil {
					return err // not an attempt with a dead context
				}
				if try, d := r.looked(name, v); !try {
					tryNow = false
					join()
					setTimer(d)
				}
			}
		case <-w.kick:
			head, freed := r.state(name, w)
			switch {
			case freed:
				news = true
				timer.Stop()
				tryNow = true
			case head && a.look != nil && r.reads(name):
				// A head that reads the lock is paced by its reads: a new
				// one, or one whose process just handed the lock on, reads
				// soon to learn its place.
				join()
				arm()
			case head:
				// News may bring the timer earlier, never later (dueAt);
				// the poll also repairs this process's place among the
				// waiting ones.
				join()
				d, firm, _ := r.nextWait(ctx, name, nil, false) // news: no round trip
				if !firm && !dueAt.IsZero() {
					// (A kept lock: nothing frees it before, no poll needed.)
					d = min(d, max(time.Until(dueAt), 0))
				}
				setTimer(d)
			}
		}
	}
}

// takenLocked reports whether the lock is surely not free for this
// process now; r.mu must be held.
func (r *waitRegistry) takenLocked(q *nameQueue) bool {
	if q.local > 0 {
		return true
	}
	now, _ := r.clock.Read()
	return r.streamOn && (q.firm.After(now) || q.busy && (q.expiry.After(now) || q.turnUntil.After(now)))
}

// state reports whether w heads name's queue, and whether it was told the
// lock may be free.
func (r *waitRegistry) state(name string, w *waiter) (head, freed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(name)
	head = len(q.waiters) > 0 && q.waiters[0] == w
	freed, w.freed = w.freed, false
	return head, freed
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
	local, d, expiry, turnUntil, firmUntil, backoff := q.local, r.pauseLocked(q), q.expiry, q.turnUntil, q.firm, q.pause
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
		d = min(firmUntil.Sub(now)+unc+time.Millisecond, r.window.rejoin)
		return d, true, false
	}
	if !expiry.After(now) && peek != nil && d >= peekAfter {
		// What we knew is out of date: learn the current lease end once.
		// While polls come quickly a timer for it would add little.
		p := peek(ctx)
		r.mu.Lock()
		q := r.queue(name)
		q.expiry = p.until
		if p.firm {
			q.firm = p.until
		}
		r.mu.Unlock()
		if p.firm && p.until.After(now.Add(-unc)) {
			d = min(p.until.Sub(now)+unc+time.Millisecond, r.window.rejoin)
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
	case r.streamOn:
		return jitter(r.capLocked())
	}
	return jitter(q.pause)
}

// leave takes w out of name's queue; a new head is told to start polling,
// or to try at once when w leaves with news (news, or a wake-up not yet
// read) that the lock may be free. The last waiter to leave without a hold
// takes this Locker out of the lock's waiting Lockers.
func (r *waitRegistry) leave(name string, w *waiter, news bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(name)
	if len(q.waiters) == 1 && q.waiters[0] == w && q.local == 0 && (q.joined || q.wasJoined) && r.leaveTurns != nil {
		q.joined, q.wasJoined, q.joinedAt = false, false, time.Time{}
		r.leaveTurns(name) // starts a goroutine: does not block
	}
	if i := slices.Index(q.waiters, w); i >= 0 {
		q.waiters = slices.Delete(q.waiters, i, i+1)
		// A new head polls (the old one took the lock or gave up), or
		// tries at once with the news that w did not use.
		if len(q.waiters) > 0 && (i == 0 || news || w.freed) {
			q.waiters[0].freed = q.waiters[0].freed || news || w.freed
			signal(q.waiters[0].kick)
		}
	}
	r.drop(name, q)
}

// held records that a hold of this process took name.
func (r *waitRegistry) held(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(name)
	q.local++
	q.firm, q.freedNews = time.Time{}, false
	q.joiners = q.joiners[:0]
	q.joined, q.wasJoined, q.joinedAt = false, false, time.Time{} // the acquire left the waiting Lockers
	q.lookedAt, q.lookedPlace, q.tryNext, q.freeRead, q.behind = time.Time{}, 0, false, false, 0
	if q.run > 0 && q.run == q.heldRun+1 {
		r.tookHoldLocked(q, time.Since(q.heldAt)) // the last hold of the run to this one
	}
	q.heldAt, q.heldRun = time.Now(), q.run
	r.stopTurnLocked(q)
	signalAll(q.observers)
}

// kept records that a hold of this process on name ended with the lock
// kept on the server until the server time until: the head waits for that
// time, without polling before it. News of a release that came during the
// hold (a ForceRelease of the kept lock, maybe) wakes it instead.
func (r *waitRegistry) kept(name string, until time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(name)
	q.local--
	signalAll(q.observers)
	if now, unc := r.clock.Read(); q.local == 0 && (q.freedNews || !until.After(now.Add(-unc))) {
		r.wakeLocked(q)
	} else if q.local == 0 {
		r.stopTurnLocked(q)
		q.busy, q.expiry, q.turnUntil, q.firm = true, until, time.Time{}, until
		if len(q.waiters) > 0 {
			signal(q.waiters[0].kick) // its pause was the long one of a local hold
		}
	}
	r.drop(name, q)
}

// observe returns a channel signalled whenever name changes hands in this
// process or the watcher reports its release.
func (r *waitRegistry) observe(name string) chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := make(chan struct{}, 1)
	q := r.queue(name)
	q.observers = append(q.observers, c)
	return c
}

func (r *waitRegistry) unobserve(name string, c chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(name)
	if i := slices.Index(q.observers, c); i >= 0 {
		q.observers = slices.Delete(q.observers, i, i+1)
	}
	delete(q.news, c)
	r.drop(name, q)
}

// released records that a hold of this process on name ended, and wakes
// the head of its queue.
func (r *waitRegistry) released(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(name)
	q.local--
	r.wakeLocked(q)
	r.drop(name, q)
}

// wake tells the head of name's queue that the lock may be free.
func (r *waitRegistry) wake(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if q := r.names[name]; q != nil {
		r.wakeLocked(q)
	}
}

// The poll pause is not reset: a head woken in vain (someone else took the
// lock first) goes on backing off rather than starting a burst of polls.
func (r *waitRegistry) wakeLocked(q *nameQueue) {
	r.stopTurnLocked(q)
	q.busy, q.turnUntil, q.firm = false, time.Time{}, time.Time{}
	signalAll(q.observers)
	if len(q.waiters) > 0 {
		q.waiters[0].freed = true
		signal(q.waiters[0].kick)
	}
}

func (r *waitRegistry) want() {
	if r.watch != nil {
		r.watch.want()
	}
}

func (r *waitRegistry) unwant() {
	if r.watch != nil {
		r.watch.unwant()
	}
}

// notify is the watcher's news that name was released. A hold of this
// process on name means the news is old (it was taken since), and the end
// of that hold will wake the head.
func (r *waitRegistry) notify(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.streamOn {
		// Waiters poll (events come too late, eventlag.go): a wake by
		// news that old would only break their pacing.
		if q := r.names[name]; q != nil {
			signalAll(q.observers)
		}
		return
	}
	if sem, ok := semaphoreOf(name); ok {
		if q := r.names[sem]; q != nil {
			r.wakeLocked(q) // a permit of it may be free
		}
		return
	}
	q := r.names[name]
	switch {
	case q == nil:
	case q.local == 0:
		r.wakeLocked(q)
	default:
		q.freedNews = true // old news, or a ForceRelease of a lock about to be kept
		signalAll(q.observers)
	}
}

// taken is the watcher's news that name was taken, or kept by no one
// (firm) until its lease ends: observers (Election's Observe) look at it;
// waiters wait on for its release, or for that end.
func (r *waitRegistry) taken(name string, until time.Time, firm bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if q := r.names[name]; q != nil && !r.streamOn {
		signalAll(q.observers) // waiters poll: news this late would only hold them back
	} else if q != nil {
		if now, unc := r.clock.Read(); firm && q.local == 0 && !until.After(now.Add(-unc)) {
			r.wakeLocked(q) // kept until a time now past: free
			return
		}
		r.stopTurnLocked(q)
		q.busy, q.expiry, q.turnUntil, q.firm = true, until, time.Time{}, time.Time{}
		if firm {
			q.firm = until
		}
		if q.local > 0 {
			// This process's own acquire: joins told before it are old.
			q.joiners = q.joiners[:0]
		}
		signalAll(q.observers)
		if q.local == 0 && len(q.waiters) > 0 {
			signal(q.waiters[0].kick) // its timer may be set for a turn's end, now moot
		}
	}
}

// leaderNews is one acquire the change stream told of.
type leaderNews struct {
	leadership
	value string
}

// leadership tells one leadership from another: by its fencing token and
// its holder's token, as a failover's rollback can undo an acquire whose
// fence a later leader then takes again.
type leadership struct {
	fence  int64
	holder string
}

// after reports whether l is a leadership to report after last: a later
// fence, or the same fence taken by another holder (the first was rolled
// back). An observer reports each one once, in order.
func (l leadership) after(last leadership) bool {
	return l.fence > last.fence || l.fence == last.fence && l.holder != last.holder
}

// maxNews bounds the leaders kept for observers that do not read them.
const maxNews = 64

// leader is the watcher's news that name was taken with fence and value:
// kept for observers (Election.Observe), so that a leadership that ended
// before they read the document is still seen.
func (r *waitRegistry) leader(name string, lead leadership, value string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if q := r.names[name]; q != nil && len(q.observers) > 0 {
		if q.news == nil {
			q.news = map[chan struct{}][]leaderNews{}
		}
		for _, c := range q.observers {
			n := q.news[c]
			q.news[c] = append(n[max(0, len(n)-maxNews+1):], leaderNews{lead, value})
		}
		signalAll(q.observers)
	}
}

// takeNews returns and forgets the leaders told of name so far to the
// observer c.
func (r *waitRegistry) takeNews(name string, c chan struct{}) []leaderNews {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.names[name]
	if q == nil {
		return nil
	}
	news := q.news[c]
	delete(q.news, c)
	return news
}

// readersChanged is the watcher's news that an RWMutex's readers came or
// went: a writer of this process waiting for them to leave looks again.
func (r *waitRegistry) readersChanged(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if q := r.names[name]; q != nil {
		signalAll(q.observers)
	}
}

// notifyAll wakes the head of every name not held in this process, nor
// kept by no one until a time to come: a kept lock frees at its time
// whatever events were missed (only ForceRelease frees it sooner).
func (r *waitRegistry) notifyAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.wakeAllLocked()
}

// wakeAllLocked wakes the head of every name no hold of this process has
// and no one keeps, as far as it knows (a switch to polling forgets the
// kept ends first: their heads try once, and read the end); r.mu must be
// held.
func (r *waitRegistry) wakeAllLocked() {
	now, _ := r.clock.Read()
	for _, q := range r.names {
		if q.local == 0 && !q.firm.After(now) {
			r.wakeLocked(q)
		}
	}
}

// streaming switches the poll pauses between the poll interval (no news
// from the server) and the longer safety interval.
func (r *waitRegistry) streaming(up bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.streamUp = up
	r.streamingLocked(up && !r.slow)
}

// streamingLocked sets whether waiters wait on the change stream's events
// (streamOn), with r.mu held.
func (r *waitRegistry) streamingLocked(on bool) {
	r.streamOn = on
	for _, q := range r.names {
		q.joined = false // joined the other way, or turns were missed: join again
		q.busy = false   // news may have been missed
		if !on {
			q.firm = time.Time{} // a ForceRelease may go unseen from now on
		}
		if !on && r.slow {
			// Events too late to wait on: the joins they told of grow
			// stale (the acquire's event that clears them is ignored
			// from now on), and a release would name Lockers that poll
			// now as streaming heirs. A stream that only went down keeps
			// them: it resumes and tells what it missed, and until then
			// they keep the rejoined Lockers' entries from being removed
			// as stale (staleOf).
			q.joiners = q.joiners[:0]
		}
	}
	if !on {
		for _, q := range r.names {
			q.pause = min(q.pause, r.maxPause)
		}
	}
}

func signalAll(cs []chan struct{}) {
	for _, c := range cs {
		signal(c)
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// jitter returns a duration in [d/2, d).
func jitter(d time.Duration) time.Duration {
	if d < 2 {
		return d
	}
	return d/2 + rand.N(d/2)
}
