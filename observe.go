package mongolock

import (
	"strings"
	"time"
)

// Event is what an Observer is told of one hold.
type Event struct {
	// Kind is "mutex", "election", "permit", "read" or "write" (an
	// RWMutex's holds).
	Kind  string
	Name  string // the lock's, semaphore's or RWMutex's name
	Token int64  // the hold's fencing token (0 for a read hold)
	// Waited is, for Acquired, the time from the call (Lock, Campaign,
	// Acquire...) to the hold.
	Waited time.Duration
	// Held is, for Released and Lost, how long the hold lasted.
	Held time.Duration
	// Err is, for Lost, why: it matches ErrLockLost.
	Err error
}

// Observer is told what a Locker's holds do, for metrics: a hold taken,
// released or lost, each keepalive renewal, the change stream going on or
// off. Any of its funcs may be nil. They are called from the library's
// goroutines, never with one of its locks held, but often on paths that
// matter to the lease: they must return quickly, not block, and not call
// into the Locker. The otellock module turns them into OpenTelemetry
// metrics.
type Observer struct {
	Acquired func(Event)
	Released func(Event) // Unlock, Release, RUnlock, Resign
	Lost     func(Event) // the lease was lost, an admin released it, or a WithHoldAtMost cap
	// Renewed reports one keepalive tick of a session: the number of
	// holds it renewed, its round trip, and its error (nil on success).
	Renewed func(holds int, roundTrip time.Duration, err error)
	// ChangeStream reports that the change stream that wakes waiters came
	// on (true) or went off; false once, too, when the server refuses
	// change streams for good (a standalone server, Atlas's shared tiers,
	// a user without the privilege): waiters poll from then on. A stream
	// closed because its events came too late goes off, and comes on
	// again a minute later to measure them, while its waiters still poll
	// (Locker.Streaming tells which).
	ChangeStream func(on bool)
}

// WithObserver has the Locker tell o what its holds do. The default tells
// no one.
func WithObserver(o Observer) Option { return func(opts *options) { opts.observer = o } }

// displayName is the name a user gave: a slot's or an RWMutex document's
// suffix cut off.
func displayName(id string) string {
	name, _, _ := strings.Cut(id, slotSep)
	return name
}

// event describes h for an Observer.
func (h *hold) event() Event {
	return Event{Kind: h.report.kind, Name: displayName(h.name), Token: h.fence}
}

func (l *Locker) observeAcquired(h *hold, calledAt time.Time) {
	if f := l.opts.observer.Acquired; f != nil {
		ev := h.event()
		if !calledAt.IsZero() {
			ev.Waited = time.Since(calledAt)
		}
		f(ev)
	}
}

func (l *Locker) observeReleased(h *hold) {
	if f := l.opts.observer.Released; f != nil {
		ev := h.event()
		ev.Held = time.Since(h.report.since)
		f(ev)
	}
}

// observeLost tells of the holds among hs that ended lost; call it with
// no lock held.
func (l *Locker) observeLost(hs ...*hold) {
	f := l.opts.observer.Lost
	if f == nil {
		return
	}
	for _, h := range hs {
		h.s.mu.Lock()
		err := h.life.err
		h.s.mu.Unlock()
		ev := h.event()
		ev.Held, ev.Err = time.Since(h.report.since), err
		f(ev)
	}
}
