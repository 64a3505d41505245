package mongolock

import (
	"log/slog"
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
	cfg     waitConfig
	clock   *serverClock
	closed  <-chan struct{} // the Locker's: waits end with ErrClosed
	self    string          // the Locker's id among waiting Lockers
	entries waitingEntries  // this Locker's entries among a lock's waiting Lockers; nil: none (tests)
	bg      *background     // the Locker's: leaving the waiting Lockers runs in it
	log     *slog.Logger

	mu       sync.Mutex
	names    map[string]*nameQueue
	leaving  map[string]chan struct{} // this Locker's leave of a name in flight: closed once it landed (turnstate.go)
	sweepAt  int                      // len(names) at which queue sweeps
	streamUp bool                     // the change stream runs
	lag      time.Duration            // how late its events come (eventlag.go)
	slow     bool                     // too late to wait on (slowEvents)
}

// waitConfig is how a Locker's waiters wait, from its options.
type waitConfig struct {
	maxPause    time.Duration // the poll interval
	safetyPause time.Duration // the longest pause while the change stream runs
	fifo        bool          // WithFIFO: turns in the order processes began to wait
	window      window        // how often this Locker refreshes its entries (turns.go)
}

type nameQueue struct {
	waiters   []*waiter
	observers []chan struct{}                // Election.Observe: told of every change seen
	news      map[chan struct{}][]leaderNews // leaders the change stream told of, per observer
	local     int                            // holds of this process on the name
	pause     time.Duration                  // next poll pause, shared by successive heads
	told      streamNews                     // what the change stream last said of the lock
	member    membership                     // this Locker among the lock's waiting Lockers (turnstate.go)
	own       ownTurns                       // the turns this process gave itself (turnstate.go)
	pace      pollPace                       // a polling head's pacing (pollturns.go)
}

type waiter struct {
	kick  chan struct{} // 1-buffered: look at freed and at being head
	freed bool          // the lock may be free: try now
}

func newWaitRegistry(o options, clock *serverClock, closed <-chan struct{}) *waitRegistry {
	if o.logger == nil { // options made by a test
		o.logger = slog.New(slog.DiscardHandler)
	}
	return &waitRegistry{
		cfg:     waitConfig{maxPause: o.pollInterval, safetyPause: o.safetyPoll, fifo: o.fifo, window: o.window},
		clock:   clock,
		closed:  closed,
		bg:      &background{},
		log:     o.logger,
		names:   map[string]*nameQueue{},
		leaving: map[string]chan struct{}{},
		sweepAt: minSweep,
	}
}

// minPause is the shortest poll pause, where a name's pauses start.
func (r *waitRegistry) minPause() time.Duration {
	return max(r.cfg.maxPause/16, time.Millisecond)
}

// nextPause returns the poll pause after pause: twice as long, up to the
// longest now (capLocked).
func (r *waitRegistry) nextPause(pause time.Duration) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return min(2*pause, r.capLocked())
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
	if now, _ := r.clock.Read(); r.unusedLocked(q) && !r.takenLocked(q) && !q.told.firm.After(now) {
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

// kick is what a kicked waiter is told, decided under one lock: whether
// the lock may be free (freed: it tries now), whether it heads the queue,
// and for a head not freed, its next wait (next).
type kick struct {
	freed, head bool
	next        headWait
}

// kicked tells a waiter w that was kicked what it was told (kick); looks
// says whether it can read the lock at its polls (attempt.look).
func (r *waitRegistry) kicked(name string, w *waiter, looks bool) kick {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(name)
	k := kick{head: len(q.waiters) > 0 && q.waiters[0] == w}
	k.freed, w.freed = w.freed, false
	if k.head && !k.freed {
		k.next = r.headWaitLocked(q, looks)
	}
	return k
}

// leave takes w out of name's queue; a new head is told to start polling,
// or to try at once when w leaves with news (news, or a wake-up not yet
// read) that the lock may be free. The last waiter to leave without a hold
// takes this Locker out of the lock's waiting Lockers.
func (r *waitRegistry) leave(name string, w *waiter, news bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(name)
	if len(q.waiters) == 1 && q.waiters[0] == w && q.local == 0 && (q.member.joined || q.member.wasJoined) && r.entries != nil {
		q.member.joined, q.member.wasJoined, q.member.joinedAt = false, false, time.Time{}
		r.leaveTurnsLocked(name)
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
	q.told.firm, q.told.freedNews = time.Time{}, false
	q.member.joiners = q.member.joiners[:0]
	q.member.joined, q.member.wasJoined, q.member.joinedAt = false, false, time.Time{} // the acquire left the waiting Lockers
	q.pace = pollPace{}
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
	if now, unc := r.clock.Read(); q.local == 0 && (q.told.freedNews || !until.After(now.Add(-unc))) {
		r.wakeLocked(q)
	} else if q.local == 0 {
		r.stopTurnLocked(q)
		q.told.busy, q.told.expiry, q.told.turnUntil, q.told.firm = true, until, time.Time{}, until
		if len(q.waiters) > 0 {
			signal(q.waiters[0].kick) // its pause was the long one of a local hold
		}
	}
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
	q.told.busy, q.told.turnUntil, q.told.firm = false, time.Time{}, time.Time{}
	signalAll(q.observers)
	if len(q.waiters) > 0 {
		q.waiters[0].freed = true
		signal(q.waiters[0].kick)
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
