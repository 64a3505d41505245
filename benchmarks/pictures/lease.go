package main

import (
	"fmt"
	"time"
)

// The library's timings of a hold, as docs/guarantees.md states them: a
// session renews every TTL/3 (WithRenewInterval's default); a holder whose
// renewals fail gives its hold up a tenth of the TTL (plus its clock's
// error) before the lease it last renewed ends on the server; a taker
// counts the lease as over only once its end has surely passed.
const (
	renewEvery = 3  // renewals per TTL
	marginPart = 10 // the margin is TTL/marginPart
)

// leaseLife draws one hold with the given TTL: acquired at 0, renewed
// twice, then cut off from the server; its renewals fail, it gives the
// hold up (Done closes) before the lease ends, and another process takes
// the lock after the end.
func leaseLife(ttl time.Duration) string {
	const left, right, axis = 40.0, 900.0, 110.0
	renew := ttl / renewEvery
	lastAck := 2 * renew // the last renewal the server answered
	leaseEnd := lastAck + ttl
	giveUp := leaseEnd - ttl/marginPart
	span := leaseEnd + ttl*3/5
	x := func(d time.Duration) float64 { return left + (right-left)*float64(d)/float64(span) }
	s := newSVG(940, 260)
	s.text(left, 28, "start", "#222", fmt.Sprintf("The life of a lease (TTL %v, the default): renewed every TTL/3, given up TTL/10 before it ends", ttl))

	// The holder's belief, and the lease on the server.
	s.rect(x(0), axis-50, x(giveUp)-x(0), 18, "#cfe0f5")
	s.text(x(0)+6, axis-37, "start", "#1d3f6e", "the holder believes it holds (Done open)")
	s.rect(x(0), axis-26, x(leaseEnd)-x(0), 18, "#d8ecd3")
	s.text(x(0)+6, axis-13, "start", "#2a5a2a", "the lease on the server (expiresAt, server time)")
	s.rect(x(leaseEnd), axis-26, x(span)-x(leaseEnd), 18, "#f6dcc4")
	s.text(x(leaseEnd)+6, axis-13, "start", "#7a4214", "another holder")

	s.line(left, axis, right, axis, "#333", false)
	mark := func(d time.Duration, label, sub, color string, below int, anchor string) {
		s.line(x(d), axis-4, x(d), axis+8+float64(below), color, below > 0)
		tx := x(d)
		switch anchor {
		case "end":
			tx -= 4
		case "start":
			tx += 4
		}
		s.text(tx, axis+24+float64(below), anchor, color, label)
		if sub != "" {
			s.text(tx, axis+40+float64(below), anchor, "#666", sub)
		}
	}
	at := func(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }
	mark(0, "acquire", "0s", "#222", 0, "start")
	mark(renew, "renewal", at(renew), "#2a7a2a", 0, "middle")
	mark(lastAck, "renewal", at(lastAck), "#2a7a2a", 0, "middle")
	mark(lastAck+renew, "renewal fails", "(link cut)", "#b02a2a", 0, "middle")
	mark(lastAck+2*renew, "fails", at(lastAck+2*renew), "#b02a2a", 0, "middle")
	mark(giveUp, "Done closes, Err = ErrLockLost", at(giveUp)+": last answered renewal + TTL - TTL/10", "#1d3f6e", 50, "end")
	mark(leaseEnd, "the lease ends", at(leaseEnd)+": last answered renewal + TTL", "#2a5a2a", 50, "start")
	s.text(left, 240, "start", "#444", fmt.Sprintf("The margin (%v) is left to the holder to stop its work; a taker also waits out its clock's error. Drawn by benchmarks/pictures.", ttl/marginPart))
	return s.String()
}
