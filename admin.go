package mongolock

import (
	"context"
	"fmt"
	"time"
)

// LockInfo describes one lock as stored, for people and tools.
type LockInfo struct {
	Name  string `json:"name"`
	Held  bool   `json:"held"`            // a holder's lease is live now (server time, allowing for the clock's error)
	Owner string `json:"owner,omitempty"` // the current or last holder's owner
	Token int64  `json:"token"`           // fencing token of the current or last hold
	// Transitions counts an election's leaderships, one per change of
	// leader; 0 for other locks.
	Transitions int64     `json:"transitions,omitempty"`
	Value       string    `json:"value,omitempty"` // the leader's value, for elections
	AcquiredAt  time.Time `json:"acquiredAt"`      // server time
	ExpiresAt   time.Time `json:"expiresAt"`       // server time; when freed, the time of release, or the end of the next waiting process's turn
}

func (l *Locker) info(d *lockDoc) LockInfo {
	return LockInfo{
		Name: d.Name, Held: l.held(d), Owner: d.Owner, Token: d.Fence,
		Value: d.Election.Value, AcquiredAt: d.AcquiredAt, ExpiresAt: d.ExpiresAt, Transitions: d.Election.Transitions,
	}
}

// Status returns what is known of the lock name. A name never locked is
// reported free with a zero token.
func (l *Locker) Status(ctx context.Context, name string) (LockInfo, error) {
	if err := l.readyFor(ctx, name); err != nil {
		return LockInfo{}, err
	}
	doc, err := l.store.report(ctx, name)
	if err != nil {
		return LockInfo{}, fmt.Errorf("mongolock: reading %q: %w", name, err)
	}
	if doc == nil {
		return LockInfo{Name: name}, nil
	}
	return l.info(doc), nil
}

// List returns every lock whose name starts with prefix ("" for all),
// held or free, sorted by name.
func (l *Locker) List(ctx context.Context, prefix string) ([]LockInfo, error) {
	if err := l.ready(ctx); err != nil {
		return nil, err
	}
	docs, err := l.store.list(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("mongolock: listing locks: %w", err)
	}
	out := make([]LockInfo, len(docs))
	for i := range docs {
		out[i] = l.info(&docs[i])
	}
	return out, nil
}

// ForceRelease frees the lock name whoever holds it: an admin's call, for
// a holder that is gone or stuck. The lock is free at once; the holder
// learns it lost the lock at its next renewal (up to its renew interval,
// TTL/3 by default, later: its Done closes, its Err is ErrLockLost), so
// for that long two parties may believe they hold it. The fencing token
// still grows on the next acquire, so the resource can refuse the old
// holder's writes. It returns ErrNotHeld, and changes nothing, when the
// lock was free or its lease had already run out.
func (l *Locker) ForceRelease(ctx context.Context, name string) error {
	if err := l.readyFor(ctx, name); err != nil {
		return err
	}
	freed, err := l.store.forceRelease(ctx, name)
	if err != nil {
		return fmt.Errorf("mongolock: force-releasing %q: %w", name, err)
	}
	if !freed {
		return fmt.Errorf("%w: %q was not held (free, or its lease had run out)", ErrNotHeld, name)
	}
	l.waits.wake(name)
	return nil
}
