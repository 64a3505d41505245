package mongolock

import (
	"cmp"
	"context"
	"fmt"
	"time"
)

// hold is one holding of a lock by a session, with its own random token.
// life and code are guarded by s.mu; the other fields are set when it is
// made (done is closed under s.mu).
type hold struct {
	s          *Session
	name       string // the document held: the lock's name, or a semaphore's slot
	sem        string // a permit's semaphore; "" for other holds
	reader     bool   // a read hold of an RWMutex's document
	drained    bool   // an RWMutex's writer whose acquire found no reader in
	token      string
	fence      int64
	waiting    waiters   // who else waited, as the acquire saw it
	acquiredAt time.Time // server time, as written by the acquire
	clock      any       // the electionId of the primary whose clock acquiredAt is on
	bounds     holdOptions
	done       chan struct{}
	life       holdLife   // how and when it ends; s.mu guards it
	code       holdCode   // code run under it (work.go)
	report     holdReport // for an Observer
}

// holdLife is how and when a hold ends; its Session's mu guards it.
type holdLife struct {
	err        error
	isEnded    bool
	validUntil time.Time // local monotonic: the hold is given up then
	timer      *time.Timer
	capTimer   *time.Timer // WithHoldAtMost: ends the hold at its cap
}

// holdCode is the code known to run under a hold (work.go).
type holdCode struct {
	work       chan struct{} // closed when the code run under the hold returned; nil: none known
	freeBy     time.Time     // local: the release after work must be done by then (zero: no such bound)
	freeOnStop bool          // released while work ran: the release after the work sends it
}

// holdReport is what an Observer is told of a hold.
type holdReport struct {
	since time.Time // local time the hold began
	kind  string    // Event.Kind
}

// end ends the hold with err (nil after Unlock) and tells this process's
// waiters that the name may be free; s.mu must be held.
func (h *hold) end(err error) {
	if h.endLocal(err) {
		h.ended()
	}
}

// ended tells this process's waiters that the hold ended: a permit's
// semaphore may have one free.
func (h *hold) ended() {
	if !h.turned() {
		h.s.l.waits.wake(h.queue())
	} else {
		h.s.l.waits.released(h.name)
	}
}

// turned reports whether the hold is its lock's one holder, with a place
// in the name's turns: not a permit's slot or a read hold, which have no
// waiting Lockers (lockKind.mark).
func (h *hold) turned() bool { return h.sem == "" && !h.reader }

// queue is the name this process's waiters for the hold's lock wait on.
func (h *hold) queue() string { return cmp.Or(h.sem, h.name) }

// endLocal ends the hold in this process only: Done closes, keepalive stops
// renewing it. It reports false if the hold had ended already. The caller
// must tell the waits registry (released or kept) once; s.mu must be held.
func (h *hold) endLocal(err error) bool {
	if h.life.isEnded {
		return false
	}
	h.life.isEnded, h.life.err = true, err
	h.life.timer.Stop()
	if h.life.capTimer != nil {
		h.life.capTimer.Stop()
	}
	delete(h.s.holds, h.token)
	close(h.done)
	return true
}

// extend moves the hold's deadline to until, never back; s.mu must be held.
func (h *hold) extend(until time.Time) {
	if h.life.isEnded || !until.After(h.life.validUntil) {
		return
	}
	h.life.validUntil = until
	h.life.timer.Reset(time.Until(until))
}

// keepUntil returns the server time until which the lock must stay taken
// once the hold ends (WithHoldAtLeast), or zero when it may be freed now.
func (h *hold) keepUntil() time.Time {
	if h.bounds.atLeast <= 0 {
		return time.Time{}
	}
	until := h.acquiredAt.Add(h.bounds.atLeast)
	if !until.After(h.s.l.clock.Now()) {
		return time.Time{}
	}
	return until
}

// release frees the hold on the server, for Unlock and Resign, within an
// internal timeout. The hold ends in this process (Done closes, Err stays
// nil) BEFORE the release is sent: once the server may give the lock to
// another, no goroutine of ours may still believe it holds it.
func (h *hold) release() error {
	s := h.s
	s.mu.Lock()
	if h.life.isEnded {
		if h.code.freeOnStop && !h.working() {
			// The release a Resign during lead left to this call, after lead.
			h.code.freeOnStop = false
			s.mu.Unlock()
			return h.free()
		}
		err := h.life.err
		s.mu.Unlock()
		if err == nil {
			return fmt.Errorf("%w: %q already unlocked", ErrNotHeld, h.name)
		}
		return err
	}
	h.endLocal(nil)
	// Resign while Run's lead runs (from lead itself, maybe): the release
	// is left to Run, which sends it once lead returned.
	h.code.freeOnStop = h.working()
	pending := h.code.freeOnStop
	s.mu.Unlock()
	s.l.observeReleased(h)
	if pending {
		return nil // Run sends it
	}
	return h.free()
}

// free frees on the server the hold, which has ended in this process, as
// release says. The release gives the next turn to another waiting
// process, if any (turns.go). This process's waiters are woken once the
// release has been answered, or when that turn ends. Within a
// WithHoldAtLeast bound the lock is kept instead (keep).
func (h *hold) free() error {
	s := h.s
	if until := h.keepUntil(); !until.IsZero() {
		return h.keep(until, h.clock)
	}
	if !h.turned() {
		defer s.l.waits.wake(h.queue())
		return h.unlocked(h.write(func(ctx context.Context) (bool, error) {
			if h.reader {
				return s.l.store.releaseRead(ctx, h.name, reader{Token: h.token, Session: s.id})
			}
			return s.l.store.release(ctx, h.name, h.token, turn{})
		}))
	}
	waits := s.l.waits
	ctx, cancel := h.unlockContext() // the read's and the release's
	defer cancel()
	t := waits.turnFor(h.name, h.waitersNow(ctx), h.acquiredAt, s.l.clock.Now())
	handedOn := false
	defer func() {
		// A turn this process gave itself: its head tries at once (the
		// change event of that release, when it comes, is old news).
		if handedOn && t.heir != s.l.id {
			waits.handedOn(h.name, t)
		} else {
			waits.released(h.name)
		}
	}()

	matched, lostReply, err := writeIn(ctx, func(ctx context.Context) (bool, error) {
		return s.l.store.release(ctx, h.name, h.token, t)
	})
	// A match (even on a retry) means the turn was written.
	handedOn = matched && err == nil && t.heir != ""
	return h.unlocked(matched, lostReply, err)
}

// write runs op (a release or a keep of the hold) within an internal
// timeout, repeating it while its outcome is unknown (a lost reply). It
// returns whether an attempt matched the hold, whether a reply was lost,
// and the last attempt's error.
func (h *hold) write(op func(context.Context) (bool, error)) (matched, lostReply bool, err error) {
	ctx, cancel := h.unlockContext()
	defer cancel()
	return writeIn(ctx, op)
}

// unlockContext bounds an Unlock's round trips: the lesser of the TTL and
// cleanupTimeout, and no later than freeBy when set (work.go).
func (h *hold) unlockContext() (context.Context, context.CancelFunc) {
	d := min(h.s.opts.ttl, cleanupTimeout)
	h.s.mu.Lock()
	by := h.code.freeBy
	h.s.mu.Unlock()
	if !by.IsZero() {
		d = min(d, time.Until(by))
	}
	return context.WithTimeout(context.Background(), d)
}

// writeIn runs op, a write that matches one document or none, within
// ctx, repeated while its outcome is unknown (ambiguous); lostReply says
// whether it was, when a later attempt's matching nothing may mean that
// an earlier one did.
func writeIn(ctx context.Context, op func(context.Context) (bool, error)) (matched, lostReply bool, err error) {
	matched, err = op(ctx)
	pause := 20 * time.Millisecond
	for err != nil && ambiguous(err) && sleep(ctx, pause) {
		lostReply = true
		matched, err = op(ctx)
		// Backing off: a member that answers at once that it is not
		// primary must not get a write every 20ms.
		pause = min(2*pause, time.Second)
	}
	return matched, lostReply, err
}

// unlocked is Unlock's result after write. After a lost reply, finding
// nothing to match may mean that the first attempt did.
func (h *hold) unlocked(matched, lostReply bool, err error) error {
	switch {
	case err != nil:
		return fmt.Errorf("mongolock: unlock of %q not confirmed; the lock expires with its lease: %w", h.name, err)
	case !matched && !lostReply:
		return fmt.Errorf("%w: %q was no longer held when unlocked", ErrLockLost, h.name)
	}
	return nil
}

// waitersNow returns who waits for the lock, for its release or keep: the
// acquire's view, or a read of the lock when that view is too old to judge
// by: under WithFIFO's rule (the order changes as others join), or after
// a hold longer than rejoinAfter (live waiters refresh their entries
// without telling anyone, and a waiter the acquire saw may have died). A
// failed read leaves the acquire's view.
func (h *hold) waitersNow(ctx context.Context) waiters {
	l := h.s.l
	w := h.waiting
	if l.opts.fifo || w.fifo || time.Since(h.report.since) > l.opts.window.rejoin {
		// Bounded on its own: the release must keep most of the time.
		ctx, cancel := context.WithTimeout(ctx, readBeforeRelease)
		defer cancel()
		if doc, err := l.store.read(ctx, h.name); err == nil && doc != nil {
			w = doc.Turns.waiters(l.clock.Now(), l.opts.window.stale)
			w.read = true
		}
	}
	return w
}

// readBeforeRelease bounds the read of who waits before a release: a
// failed read costs only the choice of heir, a late release the lock.
const readBeforeRelease = time.Second

// keep hands the lock, on the server, from the hold (ended in this
// process) to no one until the server time until: one round trip within
// an internal timeout. Nothing renews it, and no one may take it before
// then. This process's waiters wait for that time too.
func (h *hold) keep(until time.Time, election any) error {
	s := h.s
	ctx, cancel := h.unlockContext() // the read's and the keep's
	defer cancel()
	var stale []string
	if h.turned() {
		stale = s.l.waits.staleOf(h.name, h.waitersNow(ctx))
	}
	matched, lostReply, err := writeIn(ctx, func(ctx context.Context) (bool, error) {
		return s.l.store.keep(ctx, h.name, h.token, until, election, stale)
	})
	if err == nil && matched {
		s.l.waits.kept(h.name, until)
	} else {
		// Not ours, or not known to be kept (a retry after a lost reply
		// finds nothing either way): the head tries and finds out.
		s.l.waits.released(h.name)
	}
	return h.unlocked(matched, lostReply, err)
}

// capped ends the hold at its WithHoldAtMost cap, as a loss: its work gets
// the margin a lost hold leaves (a tenth of the TTL, plus the clock's
// error; or until the least hold ends if later) before the lock frees on
// the server. The cap timer runs it among the Locker's background work
// (on the timer's goroutine once the Locker is closed).
func (h *hold) capped() {
	s := h.s
	l := s.l
	s.mu.Lock()
	if !h.endLocal(fmt.Errorf("%w: %q after %v", ErrHoldCapped, h.name, h.bounds.atMost)) {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	l.observeLost(h)
	l.opts.logger.Warn("mongolock: hold reached its cap; it ends as a lost one",
		"session", s.id, "name", h.name, "atMost", h.bounds.atMost)
	// The margin in full whatever the clock's error: the estimate may be
	// behind the server's time by unc.
	now, unc, election := l.clock.ReadElection()
	until := now.Add(unc + safetyMargin(s.opts.ttl))
	if least := h.keepUntil(); least.After(until) {
		until, election = least, h.clock
	}
	if err := h.keep(until, election); err != nil {
		l.opts.logger.Warn("mongolock: could not end a capped hold on the server; it expires with its lease",
			"name", h.name, "err", err)
	}
}
