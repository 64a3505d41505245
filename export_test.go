package mongolock

import "time"

// WithLocalClock replaces the local clock, for tests of clock skew.
func WithLocalClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// RenewNow runs one keepalive tick of s and reports whether the server
// answered.
func RenewNow(s *Session) bool { return s.renew() }
