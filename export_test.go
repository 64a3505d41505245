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

// SetStaleAfter sets how long an unrefreshed entry among a lock's waiting
// Lockers counts (staleAfter, two minutes), so that a test need not wait
// that long, and returns a function that restores it.
func SetStaleAfter(d time.Duration) (restore func()) {
	old := staleAfter
	staleAfter = d
	return func() { staleAfter = old }
}
