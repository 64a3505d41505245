package mongolock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Session owns a lease: every lock taken through it (by its Mutex and
// Election values) is renewed by one keepalive goroutine, in one round trip
// per tick whatever the number of locks, until the session ends. It ends
// when Close is called, when the context given to NewSession ends, or when
// its lease is lost: renewals failed for so long that its locks may have
// expired on the server. Then every hold ends and Done is closed. After
// Close or the context's end, what is still held is released at once
// (a hold that code still runs under, once that code returned: work.go);
// after a lost lease nothing is released: the leases run out on the
// server, so that the margin before their end is left to the holders' work
// to stop. A Session is safe for concurrent use.
type Session struct {
	l    *Locker
	id   string
	opts sessionOptions

	ctx    context.Context // the keepalive's; cancelled when the session ends
	cancel context.CancelFunc

	mu         sync.Mutex
	holds      map[string]*hold // live holds by holder token
	err        error            // why the session ended; nil while it runs
	unreleased []*hold          // ended by the session's end, to free on the server
	keeping    []*hold          // ended by the session's end, to keep (WithHoldAtLeast)
	working    []*hold          // ended by the session's end, to free once their work returned (work.go)
	done       chan struct{}    // closed when the session ends

	stopped  chan struct{} // closed when the keepalive goroutine has returned
	closeErr error         // the final release's error, set before stopped closes
}

// NewSession starts a session and its keepalive goroutine, which runs
// until ctx ends or Close is called. It reads the server's clock first, so
// that leases are written in server time. On failure (invalid options,
// ErrClosed, ctx.Err(), the server unreachable) nothing is left running.
func (l *Locker) NewSession(ctx context.Context, opts ...SessionOption) (*Session, error) {
	o, err := newSessionOptions(opts)
	if err != nil {
		return nil, err
	}
	if err := l.ready(ctx); err != nil {
		return nil, err
	}
	// The lease a holder believes in is the TTL less the margin and the
	// clock's error: it must leave room for two renewals.
	unc := l.clock.Uncertainty()
	if lease := leaseOf(o.ttl, unc); 2*o.renewInterval > lease {
		return nil, fmt.Errorf("%w: TTL %v leaves a lease of %v once the safety margin (%v) and the error of "+
			"the server-clock estimate (%v, half the round trip measured to the server) are taken off, "+
			"too short for two renewals every %v",
			ErrInvalidTTL, o.ttl, lease, safetyMargin(o.ttl), unc, o.renewInterval)
	}
	s := &Session{
		l:       l,
		id:      newToken(),
		opts:    o,
		holds:   map[string]*hold{},
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	go s.keepalive()
	return s, nil
}

// Owner returns the owner name recorded with the session's locks.
func (s *Session) Owner() string { return s.opts.owner }

// TTL returns the session's lease length.
func (s *Session) TTL() time.Duration { return s.opts.ttl }

// Done returns a channel closed when the session ends: Close, the end of
// its context, or a lost lease.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns nil while the session runs; after Done, ErrSessionClosed
// (joined with the context's error if that ended it) or ErrLockLost.
func (s *Session) Err() error { return s.ended() }

// Close ends the session: its holds end (their Done close first), it
// releases what it held in one round trip bounded by the lesser of the TTL
// and 5s (a hold within WithHoldAtLeast is kept until its end instead, in
// one more round trip each), and it stops the keepalive goroutine and waits for it.
// A hold that code still runs under (Election.Run's lead, a Mutex made
// WithWaitForUnlock until its Unlock) is released only once that code
// returned, and Close waits for it, at most a TTL (until that hold's lease
// ends on the server): code still running at the hold's deadline leaves its
// lock to expire on the server, never freed early. Close returns the
// releases' error, if any: the locks then expire with their leases. After
// a lost lease it releases nothing. Calling Close again returns the same
// result.
func (s *Session) Close() error {
	s.finish(ErrSessionClosed)
	<-s.stopped
	return s.closeErr
}

// NewMutex returns a Mutex on name owned by this session, whose holds
// are bounded by opts (WithHoldAtLeast, WithHoldAtMost). The name and the
// options are checked by Lock and TryLock.
func (s *Session) NewMutex(name string, opts ...MutexOption) *Mutex {
	return &Mutex{s: s, name: name, bounds: newHoldOptions(opts)}
}

// finish ends the session for cause, unless it already ended: every hold
// ends at once (their Done close now, not after the release below), Done
// closes, and after a graceful end the keepalive goroutine is told to
// release what was held. After a lost lease nothing is released: the
// leases run out on the server, so that the margin before their end is
// left to the holders' work (and a job's grace period) to stop.
func (s *Session) finish(cause error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = cause
	lost := errors.Is(cause, ErrLockLost)
	holdErr := ErrSessionClosed
	if lost {
		holdErr = ErrLockLost
	}
	var lostHolds, endedHolds []*hold
	for _, h := range s.holds {
		switch {
		case lost:
			lostHolds = append(lostHolds, h)
			h.end(holdErr)
		case h.working():
			// Code runs under it: freed once that returned (work.go).
			endedHolds = append(endedHolds, h)
			s.working = append(s.working, h)
			h.endLocal(holdErr)
		case !h.keepUntil().IsZero():
			// Kept, not freed: this process's waiters wait for its end.
			endedHolds = append(endedHolds, h)
			s.keeping = append(s.keeping, h)
			h.endLocal(holdErr)
		default:
			endedHolds = append(endedHolds, h)
			s.unreleased = append(s.unreleased, h)
			h.end(holdErr)
		}
	}
	close(s.done)
	s.mu.Unlock()
	s.l.observeLost(lostHolds...)
	for _, h := range endedHolds {
		s.l.observeReleased(h)
	}
	s.cancel()
}

// check is the check before a Mutex or Election takes name: a valid name,
// a live ctx, an open Locker, a session that has not ended.
func (s *Session) check(ctx context.Context, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.l.isClosed(); err != nil {
		return err
	}
	return s.ended()
}

// ended returns the error for a call on a session that ended, or nil.
func (s *Session) ended() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endedErrLocked()
}

func (s *Session) endedErrLocked() error {
	switch {
	case s.err == nil:
		return nil
	case errors.Is(s.err, ErrSessionClosed):
		return s.err
	default:
		return errors.Join(ErrSessionClosed, s.err)
	}
}

// acquire makes one attempt for c (with its lost-reply retries),
// completed with the session's owner, id and TTL and a new holder token,
// for a new hold of this session, bounded as b says.
// A permit's hold is on the slot it took, and is not counted among this
// process's holds of the semaphore's name: other permits may be free.
func (s *Session) acquire(ctx context.Context, c claim, b holdOptions) (*hold, bool, error) {
	if err := s.ended(); err != nil {
		return nil, false, err
	}
	name := c.name
	c.owner, c.holder, c.session, c.ttl = s.opts.owner, newToken(), s.id, s.opts.ttl
	t, ok, err := s.l.take(ctx, c, s.done, s.ended)
	if err != nil || !ok {
		return nil, ok, err
	}
	validUntil := t.sent.Add(s.lease(t.unc))
	s.mu.Lock()
	err = s.endedErrLocked()
	if err == nil && !time.Now().Before(validUntil) {
		// The reply came after the hold would have been given up (this
		// process was stopped, or the link held the reply back): another
		// may hold the lock by now. Nothing is held; what the server may
		// still count as ours is freed.
		err = fmt.Errorf("%w: %q: the acquire was answered after its lease would have run out", ErrLockLost, name)
	}
	if err != nil {
		s.mu.Unlock()
		s.l.forget(c)
		return nil, false, err
	}
	h := &hold{s: s, name: t.id, token: c.holder, fence: t.fence, waiting: t.waiting,
		acquiredAt: t.now, clock: t.election, report: holdReport{since: time.Now(), kind: c.kind.String()}, bounds: b, done: make(chan struct{})}
	defer s.l.observeAcquired(h, c.calledAt) // after the unlock below
	defer s.mu.Unlock()
	c.kind.mark(h, name)
	h.drained = t.drained
	h.life.validUntil = validUntil
	h.life.timer = time.AfterFunc(time.Until(h.life.validUntil), func() { s.expired(h) })
	if b.atMost > 0 {
		h.life.capTimer = time.AfterFunc(time.Until(t.first.Add(b.atMost)), func() { s.l.background(h.capped) })
	}
	s.holds[h.token] = h
	if h.turned() {
		s.l.waits.held(name)
	}
	return h, true, nil
}

// lease is how long after sending an acquire or a renewal that the server
// took the session believes in its hold: the TTL less the safety margin and
// unc, the error of its estimate of the server's clock when the request was
// sent (the times it wrote were off by that much).
func (s *Session) lease(unc time.Duration) time.Duration { return leaseOf(s.opts.ttl, unc) }

// leaseOf is the lease a hold of a session with this TTL believes in when
// the clock's error was unc.
func leaseOf(ttl, unc time.Duration) time.Duration { return ttl - safetyMargin(ttl) - unc }

// safetyMargin is how long before its lease ends a hold whose renewals
// fail is given up: time for the holder's work to stop.
func safetyMargin(ttl time.Duration) time.Duration { return ttl / 10 }

// expired runs when a hold's lease was not renewed in time: the session's
// lease is lost.
func (s *Session) expired(h *hold) {
	s.mu.Lock()
	early := h.life.isEnded || time.Now().Before(h.life.validUntil) // renewed meanwhile
	s.mu.Unlock()
	if early {
		return
	}
	s.l.opts.logger.Warn("mongolock: lease lost: renewals did not reach the server in time",
		"session", s.id, "owner", s.opts.owner, "name", h.name)
	s.finish(fmt.Errorf("%w: renewals of session %s did not reach the server in time", ErrLockLost, s.id))
}
