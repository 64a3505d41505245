package mongolock

import "time"

// RenewNow runs one keepalive tick of s and reports whether the server
// answered.
func RenewNow(s *Session) bool { return s.renew() }

// WithClockRefresh sets how old the estimate of the server's clock may
// grow before it is measured again (default a minute).
func WithClockRefresh(d time.Duration) Option { return func(o *options) { o.clockRefresh = d } }

// WithWindow sets how often the Locker's waiters refresh their entries
// among a lock's waiting Lockers (rejoinAfter, 10s) and after how long it
// takes an unrefreshed entry for dead (staleAfter, 30s), so that a test
// need not wait that long.
func WithWindow(rejoin, stale time.Duration) Option {
	return func(o *options) { o.window = window{rejoin: rejoin, stale: stale} }
}

// LockerID returns the id l's entries among a lock's waiting Lockers
// carry.
func LockerID(l *Locker) string { return l.id }
