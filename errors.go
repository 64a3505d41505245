package mongolock

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxNameLen is the longest lock name accepted, in bytes.
const MaxNameLen = 1000

var (
	// ErrLocked is returned by TryLock and GetLock when another holder has
	// the lock. A GetLock that waited in vain also matches
	// context.DeadlineExceeded.
	ErrLocked = errors.New("mongolock: locked by another holder")
	// ErrNotHeld is returned when releasing or renewing a lock that the
	// caller does not hold: never locked, already unlocked, or held by
	// another owner.
	ErrNotHeld = errors.New("mongolock: lock not held")
	// ErrLockLost is returned, and reported by Mutex.Err, when a hold ended
	// without Unlock: its lease could not be renewed in time, or an admin
	// released it.
	ErrLockLost = errors.New("mongolock: lock lost")
	// ErrHoldCapped is what Mutex.Err reports, and Unlock returns, after
	// a hold reached its WithHoldAtMost cap. It matches ErrLockLost: the
	// hold ended without Unlock, and its work must stop.
	ErrHoldCapped = fmt.Errorf("%w: the hold reached its WithHoldAtMost cap", ErrLockLost)
	// ErrSessionClosed is returned by calls on a Session, or on the Mutex
	// and Election values it made, after the session ended.
	ErrSessionClosed = errors.New("mongolock: session closed")
	// ErrClosed is returned by calls on a Locker after Close.
	ErrClosed = errors.New("mongolock: locker closed")
	// ErrNoLeader is returned by Election.Leader when no one leads.
	ErrNoLeader = errors.New("mongolock: no leader")
	// ErrInvalidName is returned for an empty name, a name longer than
	// MaxNameLen bytes, one that is not valid UTF-8, or one that contains
	// U+001F (the unit separator, which separates a semaphore's name from
	// its slots' numbers).
	ErrInvalidName = errors.New("mongolock: invalid lock name")
	// ErrInvalidOwner is returned for an empty or invalid owner.
	ErrInvalidOwner = errors.New("mongolock: invalid owner")
	// ErrInvalidTTL is returned for a TTL that is not positive, a renew
	// interval that leaves fewer than two renewals before a hold is given
	// up, or a TTL too short for the safety margin and the error of the
	// server-clock estimate to leave such a lease.
	ErrInvalidTTL = errors.New("mongolock: invalid TTL")
	// ErrInvalidOption is returned by New for an option that could only
	// lose leases or hammer the server, such as a poll interval below 1ms,
	// and by Lock and TryLock for hold bounds that cannot be kept (a
	// negative WithHoldAtLeast or WithHoldAtMost, or a cap below the
	// least hold), and by FencedUpdateOne for a token or an update it
	// cannot fence.
	ErrInvalidOption = errors.New("mongolock: invalid option")
	// ErrLimitMismatch is returned by Semaphore.Acquire and TryAcquire
	// when the semaphore's slots were made by a party that gave another
	// limit: parties must agree on it.
	ErrLimitMismatch = errors.New("mongolock: semaphore limit mismatch")
	// ErrStaleToken is returned by FencedUpdateOne when the document to
	// write carries a newer fencing token than the writer's: a newer
	// holder wrote it, and this write was refused.
	ErrStaleToken = errors.New("mongolock: refused: a newer holder wrote")
	// ErrNilCollection is returned by New (and FencedUpdateOne) for a nil
	// collection.
	ErrNilCollection = errors.New("mongolock: nil collection")
)

func validName(name string) error {
	if err := validString(name, ErrInvalidName); err != nil {
		return err
	}
	if strings.Contains(name, slotSep) {
		return fmt.Errorf("%w: contains U+001F, which separates a semaphore's name from its slots", ErrInvalidName)
	}
	return nil
}

func validOwner(owner string) error { return validString(owner, ErrInvalidOwner) }

// validString checks a name or an owner: non-empty, at most MaxNameLen
// bytes, valid UTF-8; otherwise it returns kind with the reason.
func validString(s string, kind error) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty", kind)
	case len(s) > MaxNameLen:
		return fmt.Errorf("%w: %d bytes, at most %d", kind, len(s), MaxNameLen)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: not valid UTF-8", kind)
	}
	return nil
}

func validTTL(ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("%w: %v is not positive", ErrInvalidTTL, ttl)
	}
	return nil
}
