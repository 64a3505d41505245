package mongolock

import "time"

// RenewNow runs one keepalive tick of s and reports whether the server
// answered.
func RenewNow(s *Session) bool { return s.renew() }

// WithClockRefresh sets how old the estimate of the server's clock may
// grow before it is measured again (default a minute).
func WithClockRefresh(d time.Duration) Option { return func(o *options) { o.clockRefresh = d } }
