package mongolock

import (
	"cmp"
	"errors"
	"fmt"
	"time"
)

// Work under a hold. Where the library knows that code runs under a hold
// (Election.Run's lead, a Mutex made WithWaitForUnlock), the lock is never
// freed on the server while that code may still run. Whatever ends the
// hold early (Session.Close, the end of the session's context,
// Locker.Close, a Resign while lead runs), the hold ends in this process at
// once (Done closes, so lead's context is cancelled), nothing renews it any
// more, and its release waits for the code to return (lead returned, Unlock
// called). If the code still runs when the hold would be given up anyway
// (the lease's end less the safety margin, at most a TTL away), the hold is
// given up as lost instead, said on the log (after a Resign, Run sends the
// release whenever lead returns, which matches nothing once the lease ran
// out), and left to run out on the server: it is never freed early. A lost
// lease frees nothing either way.

// errWorking is startWork's error for a hold that code runs or ran under
// already (a second Run on the same leadership): a hold hosts work once.
var errWorking = errors.New("mongolock: code runs under this hold already")

// startWork records that code runs under h until stopWork. It returns,
// recording nothing, h's error when h has ended already (the session's end
// may have come between the acquire and now: nothing may run then),
// errWorking when code runs or ran under h already, and ErrClosed when the Locker
// is closed (no code may start under a hold then; h is still held).
func (l *Locker) startWork(h *hold) error {
	s := h.s
	work := make(chan struct{})
	s.mu.Lock()
	switch {
	case h.life.isEnded:
		err := cmp.Or(h.life.err, error(ErrNotHeld))
		s.mu.Unlock()
		return err
	case h.code.work != nil:
		s.mu.Unlock()
		return errWorking
	}
	h.code.work = work
	s.mu.Unlock()
	// Never workMu, then s.mu.
	l.workMu.Lock()
	defer l.workMu.Unlock()
	if l.isClosed() != nil {
		close(work) // nothing ran: a session's end frees h at once
		return ErrClosed
	}
	l.working[h] = struct{}{}
	return nil
}

// stopWork records that the code run under h returned; a hold whose end
// waited for it is freed now. Calling it again, or for a hold with no
// work, does nothing.
func (l *Locker) stopWork(h *hold) {
	l.workMu.Lock()
	defer l.workMu.Unlock()
	if _, ok := l.working[h]; ok {
		delete(l.working, h)
		close(h.code.work)
	}
}

// endWorking ends h in this process with cause if it still lasts, and
// returns the wait that frees it once its work returned (afterWork); nil
// when h had ended already (its end's owner frees it, if anyone does).
func (s *Session) endWorking(h *hold, cause error) func() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !h.endLocal(cause) {
		return nil
	}
	return h.afterWork
}

// working reports whether code still runs under h; s.mu must be held.
func (h *hold) working() bool {
	if h.code.work == nil {
		return false
	}
	select {
	case <-h.code.work:
		return false
	default:
		return true
	}
}

// afterWork frees h on the server (as Unlock would: released, or kept
// within WithHoldAtLeast) once the code run under it returned; h has ended
// in this process already. If the code still runs at h's deadline, h is
// given up as lost and left to run out on the server. It blocks until one
// or the other, at most until that deadline.
//
// The release that follows is bounded by the lease's end on the server
// (deadline plus the safety margin): whenever it ended, a Close that
// waited for it waited at most a TTL.
func (h *hold) afterWork() error {
	s := h.s
	s.mu.Lock()
	deadline, work := h.life.validUntil, h.code.work
	h.code.freeBy = deadline.Add(safetyMargin(s.opts.ttl))
	s.mu.Unlock()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-work:
	case <-t.C:
		s.mu.Lock()
		still := h.working()
		s.mu.Unlock()
		if still {
			s.l.opts.logger.Warn("mongolock: the code run under a hold did not return before the hold's lease "+
				"would have run out; the lock is left to expire on the server, not freed",
				"session", s.id, "name", h.name, "kind", h.report.kind)
			h.ended()
			return fmt.Errorf("%w: %q: the code run under it still ran at its lease's end", ErrLockLost, h.name)
		}
	}
	// Freed late is still safe: the release matches only our token, and
	// no one takes the lock before its lease ends on the server.
	return h.free()
}
