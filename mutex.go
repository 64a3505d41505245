package mongolock

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Mutex is a distributed mutual-exclusion lock on one name, owned by a
// Session whose keepalive renews it while held.
//
// Like sync.Mutex, one Mutex may be shared by goroutines, which then
// exclude each other; a hold is not tied to the goroutine that took it, and
// Token, Done and Err describe the current hold. Every hold has its own
// random token, so two Mutex values on the same name exclude each other
// even within one session. A Mutex must not be copied after first use.
//
// A hold ends with Unlock, with the session, or when its lease is lost;
// Done then closes. The lease is judged on the server's clock, and the
// holder gives the hold up a margin before the lease would expire if
// renewals fail. A lease is not a fence: pass Token to the resource you
// protect.
//
// WithHoldAtLeast and WithHoldAtMost, given to NewMutex, bound how long
// each hold keeps the lock: at least so long (however early Unlock comes),
// at most so long (the hold then ends as a lost one).
type Mutex struct {
	s      *Session
	name   string
	bounds holdOptions

	mu  sync.Mutex
	cur *hold // the current hold, or the last one after it ended
}

// Name returns the lock's name.
func (m *Mutex) Name() string { return m.name }

// Lock waits until it holds the lock, ctx ends, or the session ends. It
// returns nil when held; ctx.Err() when ctx ended first; ErrSessionClosed
// (joined with the cause) when the session ended; ErrInvalidName or
// ErrInvalidOption (bad hold bounds) at once. On failure nothing is held.
// Waiters of one process are served in turn, and only the first of a name
// talks to the server. A lock kept by WithHoldAtLeast is waited for until
// its end, with no attempt before.
func (m *Mutex) Lock(ctx context.Context) error {
	if err := m.check(ctx); err != nil {
		return err
	}
	var h *hold
	start := time.Now()
	try := func(ctx context.Context) (ok bool, err error) {
		h, ok, err = m.s.acquire(ctx, claim{name: m.name, kind: mutexKind{}, calledAt: start}, m.bounds)
		return ok, err
	}
	l := m.s.l
	err := l.wait(ctx, m.name, attempt{try: try, peek: l.peek(m.name), look: l.look(m.name, "")}, m.s.done, m.s.ended)
	if err != nil {
		return err
	}
	return m.set(h)
}

// TryLock makes one attempt to take the lock. It returns nil when held,
// ErrLocked when another holder has it (or a WithHoldAtLeast hold keeps
// it), and otherwise an error with nothing held. A failed TryLock only says that the lock was held at the
// moment of the attempt.
func (m *Mutex) TryLock(ctx context.Context) error {
	if err := m.check(ctx); err != nil {
		return err
	}
	h, ok, err := m.s.acquire(ctx, claim{name: m.name, kind: mutexKind{}, calledAt: time.Now()}, m.bounds)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("%w: %q", ErrLocked, m.name)
	}
	return m.set(h)
}

// check is the check before a hold is taken: the name, the hold bounds,
// ctx, the Locker and the session.
func (m *Mutex) check(ctx context.Context) error {
	if err := validName(m.name); err != nil {
		return err
	}
	if err := m.bounds.valid(); err != nil {
		return err
	}
	return m.s.check(ctx, m.name)
}

// set makes h the current hold. WithWaitForUnlock: the hold's work runs
// until Unlock; when the Locker closed meanwhile, h is released and set
// returns ErrClosed, and when h ended meanwhile (the session's end), set
// returns its error. (A session's end just after set leaves h ended, its
// release waiting for Unlock, as for any hold ended early.)
func (m *Mutex) set(h *hold) error {
	if m.bounds.waitUnlock {
		if err := m.s.l.startWork(h); err != nil {
			h.release()
			return err
		}
	}
	m.mu.Lock()
	m.cur = h
	m.mu.Unlock()
	return nil
}

func (m *Mutex) hold() *hold {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur
}

// Unlock releases the current hold in one round trip, bounded by an
// internal timeout (the lesser of the TTL and 5s), so it suits defer. The
// hold ends in this process (Done closes, Err stays nil) before the release
// is sent, so that no goroutine of ours believes it holds the lock once
// another process may have it. It returns nil once the server freed the
// lock; ErrNotHeld when nothing is held (never locked, or already
// unlocked); ErrLockLost when the hold was lost before (ErrHoldCapped
// after its WithHoldAtMost cap), or the server no longer had it;
// ErrSessionClosed when the session ended it; and an error saying the
// release was not confirmed when the server did not answer in time (the
// lock then expires with its lease). With WithHoldAtLeast, an Unlock
// before the least hold's end ends the hold the same way but leaves the
// lock taken, by no one, until that end; it returns nil once the server
// has it so.
func (m *Mutex) Unlock() error {
	h := m.hold()
	if h == nil {
		return fmt.Errorf("%w: %q never locked", ErrNotHeld, m.name)
	}
	m.s.l.stopWork(h) // WithWaitForUnlock: a release that waited for it goes now
	return h.release()
}

// Token returns the fencing token of the current (or last) hold: a number
// that grows with every hold of the name, whoever takes it. Pass it to the
// resource the lock protects and have it refuse older tokens. It is 0 when
// the Mutex was never held.
func (m *Mutex) Token() int64 {
	if h := m.hold(); h != nil {
		return h.fence
	}
	return 0
}

// Done returns a channel closed when the current hold ends: Unlock, the
// session's end, loss, or a WithHoldAtMost cap. It is closed already when nothing is held.
func (m *Mutex) Done() <-chan struct{} {
	if h := m.hold(); h != nil {
		return h.done
	}
	return closedChan
}

// Err returns nil while the current hold lasts and after Unlock;
// ErrLockLost after a loss (ErrHoldCapped, which matches it, after a
// WithHoldAtMost cap); ErrSessionClosed when the session ended it;
// ErrNotHeld when the Mutex was never held.
func (m *Mutex) Err() error {
	h := m.hold()
	if h == nil {
		return ErrNotHeld
	}
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	return h.life.err
}

var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()
