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

// WithPollersInTurn names pollers in their turn too (pollturns.go): work
// in progress, measured by the benchmark and TestFairShares.
func WithPollersInTurn() Option { return func(o *options) { o.pollersInTurn = true } }
