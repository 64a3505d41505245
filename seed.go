package mongolock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// The seed package's advisory string locks, by owner name, as MySQL's
// GET_LOCK, RELEASE_LOCK, IS_USED_LOCK and IS_FREE_LOCK.

// GetLock takes the lock name for owner, as MySQL's GET_LOCK does: it
// waits up to wait for the lock to be free (0: one attempt; negative: until
// ctx ends), and holds it for ttl (0: DefaultTTL) unless renewed with
// RenewLock. An owner that already holds the lock takes it again and
// extends it (never shortens it), in a second round trip; a call that
// fails never frees the lock the owner already had. When the lock stays held it returns an error matching both
// ErrLocked and, if it waited, context.DeadlineExceeded; when ctx ends, its
// error.
func (l *Locker) GetLock(ctx context.Context, name, owner string, wait, ttl time.Duration) error {
	if err := validName(name); err != nil {
		return err
	}
	if err := validOwner(owner); err != nil {
		return err
	}
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if err := validTTL(ttl); err != nil {
		return err
	}
	if err := l.ready(ctx); err != nil {
		return err
	}
	c := claim{name: name, kind: mutexKind{}, owner: owner, holder: newToken(), ttl: ttl}
	try := func(ctx context.Context) (bool, error) {
		t, ok, err := l.take(ctx, c, nil, nil)
		if ok {
			l.waits.took(name)
			l.seenStale(name, t.waiting.stale)
		}
		if ok || err != nil {
			return ok, err
		}
		// Held: if by owner, take it again by extending it. The holder
		// token is left alone, so that a call whose outcome is unknown
		// never frees the lock its owner already had.
		ok, err = l.store.updateOwned(ctx, name, owner, l.store.extend(ttl))
		if err != nil {
			if err := deadlineNear(ctx, err); err != nil {
				return false, err
			}
			return false, fmt.Errorf("mongolock: taking %q again: %w", name, err)
		}
		return ok, nil
	}
	if wait == 0 {
		switch ok, err := try(ctx); {
		case err != nil:
			return err
		case !ok:
			return fmt.Errorf("%w: %q", ErrLocked, name)
		}
		return nil
	}
	waitCtx, cancel := ctx, context.CancelFunc(func() {})
	if wait > 0 {
		waitCtx, cancel = context.WithTimeoutCause(ctx, wait, errWaited)
	}
	defer cancel()
	// Eager: the owner may take its own lock again, however taken it looks.
	a := attempt{try: try, peek: l.peek(name), eager: true, look: l.look(name, owner)}
	err := l.wait(waitCtx, name, a, nil, nil)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(waitCtx), errWaited) {
		return fmt.Errorf("%w: %q still held after waiting %v: %w", ErrLocked, name, wait, context.DeadlineExceeded)
	}
	return err
}

var errWaited = errors.New("mongolock: wait elapsed")

// staleSeen is the waiting Lockers that a GetLock's acquire saw stale
// (turns.go), and when (local time).
type staleSeen struct {
	lockers []string
	at      time.Time
}

// seenStale records the waiting Lockers that a GetLock's acquire of name
// saw stale, for the ReleaseLock that follows to remove in its write: a
// ReleaseLock has no view of who waits of its own.
func (l *Locker) seenStale(name string, stale []string) {
	l.staleMu.Lock()
	defer l.staleMu.Unlock()
	if len(stale) == 0 {
		delete(l.stale, name)
		return
	}
	l.stale[name] = staleSeen{stale, time.Now()}
}

// takeStale returns and forgets what seenStale recorded for name: none
// when the GetLock was longer than rejoinAfter ago (a Locker stale then
// may have joined again since, unseen; a later release removes the dead).
func (l *Locker) takeStale(name string) []string {
	l.staleMu.Lock()
	defer l.staleMu.Unlock()
	seen := l.stale[name]
	delete(l.stale, name)
	if time.Since(seen.at) > l.opts.window.rejoin {
		return nil
	}
	return seen.lockers
}

// ReleaseLock frees the lock name if owner holds it, as MySQL's
// RELEASE_LOCK does. It returns ErrNotHeld, and changes nothing, when the
// lock is free, expired, or held by another owner. A release whose outcome
// is unknown (a lost reply, a primary that stepped down) is repeated, for
// up to 5s within ctx.
func (l *Locker) ReleaseLock(ctx context.Context, name, owner string) error {
	if err := l.checkOwned(ctx, name, owner); err != nil {
		return err
	}
	update := l.store.freeUpdate()
	if unset := staleEntries(l.takeStale(name), "", ""); len(unset) > 0 {
		update = append(update, bson.E{Key: "$unset", Value: unset})
	}
	release := func(ctx context.Context) (bool, error) { return l.store.updateOwned(ctx, name, owner, update) }
	ok, err := release(ctx)
	lostReply := false
	if ambiguous(err) && ctx.Err() == nil {
		// Repeated while its outcome is unknown (a lost reply, a
		// stepdown), for as long as an Unlock would at most.
		rctx, cancel := context.WithTimeout(ctx, cleanupTimeout)
		defer cancel()
		ok, _, err = writeIn(rctx, release)
		lostReply = true
	}
	if err != nil {
		return fmt.Errorf("mongolock: releasing %q: %w", name, err)
	}
	if !ok && !lostReply {
		return fmt.Errorf("%w: %q by %q", ErrNotHeld, name, owner)
	}
	l.waits.wake(name)
	return nil
}

// RenewLock extends owner's live lock on name to ttl from now (0:
// DefaultTTL); it never shortens a lease that already ends later. It
// never brings back a lock that was released or has
// expired: then it returns ErrNotHeld and changes nothing.
func (l *Locker) RenewLock(ctx context.Context, name, owner string, ttl time.Duration) error {
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if err := validTTL(ttl); err != nil {
		return err
	}
	if err := l.checkOwned(ctx, name, owner); err != nil {
		return err
	}
	ok, err := l.store.updateOwned(ctx, name, owner, l.store.extend(ttl))
	if err != nil {
		return fmt.Errorf("mongolock: renewing %q: %w", name, err)
	}
	if !ok {
		return fmt.Errorf("%w: %q by %q", ErrNotHeld, name, owner)
	}
	return nil
}

func (l *Locker) checkOwned(ctx context.Context, name, owner string) error {
	if err := validOwner(owner); err != nil {
		return err
	}
	return l.readyFor(ctx, name)
}

// IsUsedLock returns the owner of the live lock name, or "" when it is
// free or its lease has run out, as MySQL's IS_USED_LOCK does.
func (l *Locker) IsUsedLock(ctx context.Context, name string) (owner string, err error) {
	doc, err := l.readLive(ctx, name)
	if err != nil || doc == nil {
		return "", err
	}
	return doc.Owner, nil
}

// IsFreeLock reports whether the lock name is free (never taken, released,
// or expired), as MySQL's IS_FREE_LOCK does. A lock released with a turn
// for a waiting process (see "Turns" in docs/fairness.md) is free, though for up
// to 100ms only that process's waiters may take it: GetLock and TryLock of
// others return ErrLocked meanwhile.
func (l *Locker) IsFreeLock(ctx context.Context, name string) (bool, error) {
	owner, err := l.IsUsedLock(ctx, name)
	return owner == "" && err == nil, err
}
