package mongolock

import "time"

// RenewNow runs one keepalive tick of s and reports whether the server
// answered.
func RenewNow(s *Session) bool { return s.renew() }

// WithoutTurns makes a Locker that never joins a lock's waiting Lockers,
// so that no release names an heir: waiters behave as before turns, for
// the benchmark's comparison.
func WithoutTurns() Option { return func(o *options) { o.noTurns = true } }

// WithClockRefresh sets how old the estimate of the server's clock may
// grow before it is measured again (default a minute).
func WithClockRefresh(d time.Duration) Option { return func(o *options) { o.clockRefresh = d } }

// WithoutPollersInTurn makes a Locker whose releases name no heir while a
// poller waits, and whose polling waiters attempt instead of reading the
// lock: turns only among processes with a change stream, as before turns
// for pollers (pollturns.go), for the benchmark's comparison.
func WithoutPollersInTurn() Option { return func(o *options) { o.pollersApart = true } }

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
