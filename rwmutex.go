package mongolock

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// RWMutex is a distributed reader/writer lock on one name: any number of
// readers, or one writer. Like sync.RWMutex, a writer that waits keeps new
// readers out: it takes the lock's writer field at once, and holds the
// lock once the readers already in have left (or their leases ran out), so
// a stream of readers cannot starve it. Every hold, read or write, is a
// hold of the session: renewed by its keepalive, given up before its lease
// ends if renewals fail, ended with the session.
//
// Round trips: RLock and RUnlock one each, with no writer in the way; Lock
// one with no reader in, and one more per look while readers drain;
// Unlock one. A session's keepalive tick stays one update command whether
// it holds read locks or not (one more statement in it). The write holds'
// fencing token (Token) grows with every write hold, never with reads.
//
// One RWMutex value may hold one write hold, or several read holds at once
// (RLock twice, RUnlock twice); RUnlock, RDone and RErr concern the latest
// read hold. An RWMutex is safe for concurrent use.
type RWMutex struct {
	s    *Session
	name string
	id   string // the document: name + U+001F + "rw", apart from a Mutex's

	mu    sync.Mutex
	w     *hold   // the current write hold, or the last one after it ended
	reads []*hold // the read holds, latest last
	lastR *hold   // the latest read hold, after it ended
}

// NewRWMutex returns a RWMutex on name owned by this session. The name is
// checked by every call that takes a hold.
func (s *Session) NewRWMutex(name string) *RWMutex {
	return &RWMutex{s: s, name: name, id: name + slotSep + "rw"}
}

// Name returns the lock's name.
func (rw *RWMutex) Name() string { return rw.name }

// Lock waits until it holds the lock for writing, ctx ends, or the session
// ends. It returns nil when held; ctx.Err() when ctx ended first (nothing
// is held then, and readers kept out meanwhile may come in);
// ErrSessionClosed when the session ended; ErrLockLost when the writer
// field it took was lost while readers drained; ErrInvalidName at once.
func (rw *RWMutex) Lock(ctx context.Context) error {
	if err := rw.s.check(ctx, rw.name); err != nil {
		return err
	}
	var h *hold
	start := time.Now()
	try := func(ctx context.Context) (ok bool, err error) {
		h, ok, err = rw.s.acquire(ctx, claim{name: rw.id, kind: writeKind{}, calledAt: start}, holdOptions{})
		return ok, err
	}
	l := rw.s.l
	a := attempt{try: try, peek: l.peek(rw.id), noTurns: true}
	if err := l.wait(ctx, rw.id, a, rw.s.done, rw.s.ended); err != nil {
		return err
	}
	if err := rw.drain(ctx, h); err != nil {
		h.release()
		return err
	}
	// The last look may have been answered after the hold was given up.
	s := rw.s
	s.mu.Lock()
	lost := h.life.isEnded || !time.Now().Before(h.life.validUntil)
	s.mu.Unlock()
	if lost {
		h.release()
		return fmt.Errorf("%w: %q: the writer's hold ended while readers drained", ErrLockLost, rw.name)
	}
	rw.mu.Lock()
	rw.w = h
	rw.mu.Unlock()
	return nil
}

// TryLock makes one attempt to take the lock for writing, in one round
// trip. It returns nil when held; ErrLocked when another writer holds it,
// or readers do (a TryLock does not wait for them to leave); otherwise an
// error with nothing held.
func (rw *RWMutex) TryLock(ctx context.Context) error {
	if err := rw.s.check(ctx, rw.name); err != nil {
		return err
	}
	h, ok, err := rw.s.acquire(ctx, claim{name: rw.id, kind: writeKind{alone: true}, calledAt: time.Now()}, holdOptions{})
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("%w: %q has a writer or readers", ErrLocked, rw.name)
	}
	rw.mu.Lock()
	rw.w = h
	rw.mu.Unlock()
	return nil
}

// drain waits, holding the writer field, until no reader is left: each
// look is one round trip that also clears the readers whose leases ran
// out. It is woken by readers' releases (the change stream, or this
// process's) and by the readers' lease end.
func (rw *RWMutex) drain(ctx context.Context, h *hold) error {
	if h.drained {
		return nil
	}
	l := rw.s.l
	news := l.waits.observe(rw.id)
	defer l.waits.unobserve(rw.id, news)
	l.wantNews() // readers' releases come by the change stream
	defer l.unwantNews()
	timer := time.NewTimer(0)
	defer timer.Stop()
	pause := l.waits.minPause()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-h.done:
			return fmt.Errorf("%w: %q: the writer's hold ended while readers drained", ErrLockLost, rw.name)
		case <-news:
		case <-timer.C:
		}
		until, drained, err := l.store.drainReaders(ctx, rw.id, h.token)
		switch {
		case err != nil:
			if err := deadlineNear(ctx, err); err != nil {
				return err
			}
			return fmt.Errorf("mongolock: waiting for the readers of %q: %w", rw.name, err)
		case drained:
			return nil
		}
		// Until the readers' leases end, or the next poll.
		now, unc := l.clock.Read()
		d := jitter(pause)
		if rest := overIn(until, now, unc); rest > 0 && rest < d {
			d = rest
		}
		pause = l.waits.nextPause(pause)
		timer.Reset(d)
	}
}

// Unlock releases the write hold in one round trip, bounded by an internal
// timeout, with the results of Mutex.Unlock.
func (rw *RWMutex) Unlock() error {
	rw.mu.Lock()
	h := rw.w
	rw.mu.Unlock()
	if h == nil {
		return fmt.Errorf("%w: %q never locked for writing", ErrNotHeld, rw.name)
	}
	return h.release()
}

// Token returns the fencing token of the current (or last) write hold: it
// grows with every write hold of the name. 0 when never write-held.
func (rw *RWMutex) Token() int64 {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.w == nil {
		return 0
	}
	return rw.w.fence
}

// Done returns a channel closed when the current write hold ends; closed
// already when not write-held.
func (rw *RWMutex) Done() <-chan struct{} {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.w == nil {
		return closedChan
	}
	return rw.w.done
}

// Err returns nil while the write hold lasts and after Unlock; ErrLockLost
// after a loss; ErrSessionClosed when the session ended it; ErrNotHeld
// when never write-held.
func (rw *RWMutex) Err() error {
	rw.mu.Lock()
	h := rw.w
	rw.mu.Unlock()
	return holdErr(h)
}

// RLock waits until it holds the lock for reading, ctx ends, or the
// session ends, with the results of Lock. Readers hold together; a writer
// holding or waiting keeps new readers out.
func (rw *RWMutex) RLock(ctx context.Context) error {
	if err := rw.s.check(ctx, rw.name); err != nil {
		return err
	}
	var h *hold
	c := claim{name: rw.id, kind: readKind{}, calledAt: time.Now()}
	try := func(ctx context.Context) (ok bool, err error) {
		h, ok, err = rw.s.acquire(ctx, c, holdOptions{})
		return ok, err
	}
	l := rw.s.l
	a := attempt{try: try, peek: l.peek(rw.id), noTurns: true, shared: true}
	if err := l.wait(ctx, rw.id, a, rw.s.done, rw.s.ended); err != nil {
		return err
	}
	rw.addRead(h)
	return nil
}

// TryRLock makes one attempt to take the lock for reading. It returns nil
// when held, ErrLocked when a writer holds it or waits for it, and
// otherwise an error with nothing held.
func (rw *RWMutex) TryRLock(ctx context.Context) error {
	if err := rw.s.check(ctx, rw.name); err != nil {
		return err
	}
	h, ok, err := rw.s.acquire(ctx, claim{name: rw.id, kind: readKind{}, calledAt: time.Now()}, holdOptions{})
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("%w: %q has a writer", ErrLocked, rw.name)
	}
	rw.addRead(h)
	return nil
}

func (rw *RWMutex) addRead(h *hold) {
	rw.mu.Lock()
	rw.reads = append(rw.reads, h)
	rw.lastR = h
	rw.mu.Unlock()
}

// RUnlock releases the latest read hold in one round trip, bounded by an
// internal timeout. It returns nil once the server dropped it; ErrNotHeld
// when no read hold is left; ErrLockLost when it was lost before, or the
// server no longer had it; ErrSessionClosed when the session ended it.
func (rw *RWMutex) RUnlock() error {
	rw.mu.Lock()
	n := len(rw.reads)
	if n == 0 {
		rw.mu.Unlock()
		return fmt.Errorf("%w: %q not locked for reading", ErrNotHeld, rw.name)
	}
	h := rw.reads[n-1]
	rw.reads = rw.reads[:n-1]
	rw.mu.Unlock()
	return h.release()
}

// RDone returns a channel closed when the latest read hold ends; closed
// already when never read-held.
func (rw *RWMutex) RDone() <-chan struct{} {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.lastR == nil {
		return closedChan
	}
	return rw.lastR.done
}

// RErr is Err for the latest read hold.
func (rw *RWMutex) RErr() error {
	rw.mu.Lock()
	h := rw.lastR
	rw.mu.Unlock()
	return holdErr(h)
}

// holdErr is a hold's Err: ErrNotHeld for none.
func holdErr(h *hold) error {
	if h == nil {
		return ErrNotHeld
	}
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	return h.life.err
}
