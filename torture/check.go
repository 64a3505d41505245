package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// check reads the histories and the fault log, prints the report, and
// returns 1 on any violation: accepted writes whose holds overlap, accepted
// writes out of token order, or a lock stuck past TTL + one wake-up.
func check(c config, faultLog string, histories []string, ran, final time.Duration, out io.Writer) (int, error) {
	faults, err := readLines[fault](faultLog)
	if err != nil {
		return 2, err
	}
	var all []hold
	for _, path := range histories {
		hs, err := readLines[hold](path)
		if err != nil {
			return 2, err
		}
		all = append(all, hs...)
	}
	// A hold has a begin line (EndAt 0) and, unless its worker was killed,
	// an end line.
	// Read holds have no token: a hold is also known by its worker and the
	// time its Lock was called.
	type key struct {
		name     string
		token    int64
		worker   int
		calledAt int64
	}
	ended := map[key]hold{}
	begun := map[key]hold{}
	for _, h := range all {
		if h.EndAt == 0 {
			begun[key{h.Name, h.Token, h.Worker, h.CalledAt}] = h
		} else {
			ended[key{h.Name, h.Token, h.Worker, h.CalledAt}] = h
		}
	}
	var r report
	r.ran, r.final = ran, final
	r.faults = map[string]int{}
	r.kinds = map[string]int{}
	for _, f := range faults {
		r.faults[f.Kind]++
	}
	byName := map[string][]hold{}
	for _, h := range ended {
		r.holds++
		switch {
		case h.Accepted:
			r.accepted++
		case h.SentAt > 0:
			r.rejected++
		}
		if h.Stale {
			r.stale++
			if h.Accepted {
				r.staleAccepted++
			}
		}
		if h.Lost {
			r.lost++
		}
		byName[h.Name] = append(byName[h.Name], h)
	}
	for k, h := range begun {
		if _, ok := ended[k]; !ok {
			r.killedHolds++
			byName[h.Name] = append(byName[h.Name], h)
		}
	}
	for name, hs := range byName {
		r.kinds[kindOf(name)] += len(hs)
		if name == rwName+"/r" {
			continue // readers hold together: checkReaders
		}
		r.checkName(hs, c, faults)
		r.checkBeliefs(hs, faults)
	}
	r.checkReaders(byName[rwName+"/r"], byName[rwName+"/w"], faults)
	for _, h := range ended {
		r.checkPause(h, faults)
	}
	r.print(out, c)
	if r.overlapAccepted > 0 || r.outOfOrder > 0 || r.stuck > 0 || r.beliefUnexplained > 0 || r.readerWithWriter > 0 ||
		final < 0 || final > c.ttl+c.poll+time.Second+failoverAllowance(faults, now(), c) {
		return 1, nil
	}
	return 0, nil
}

type report struct {
	ran, final                               time.Duration
	faults                                   map[string]int
	holds, accepted, rejected, lost          int
	stale, staleAccepted, killedHolds        int
	overlapping, overlapAccepted, outOfOrder int
	stuck, takeovers                         int
	paused, pausedSeen, pausedAccepted       int
	staleAfterNewer                          int
	beliefPaused, beliefUnexplained          int
	details                                  []string
	longestTakeover                          time.Duration
	kinds                                    map[string]int // holds by kind of lock
	readerWithWriter, readerPaused           int
}

// kindOf names the kind of lock a recorded name is.
func kindOf(name string) string {
	switch {
	case strings.HasPrefix(name, semName+"/"):
		return "semaphore permit"
	case name == rwName+"/w":
		return "write"
	case name == rwName+"/r":
		return "read"
	}
	return "mutex"
}

// checkReaders judges the read holds against the write holds: a reader and
// a writer that both believed they held (Lock returned, Done not closed)
// at once are explained only by a SIGSTOP of the one that began first (it
// should have let go); any other overlap is a violation.
func (r *report) checkReaders(readers, writers []hold, faults []fault) {
	end := func(h hold) int64 {
		if h.DoneAt != 0 {
			return h.DoneAt
		}
		if k := killAfter(faults, h); k != 0 {
			return k
		}
		return h.EndAt
	}
	for _, rd := range readers {
		for _, wr := range writers {
			if rd.LockAt >= end(wr) || wr.LockAt >= end(rd) {
				continue
			}
			older := rd
			if wr.LockAt < rd.LockAt {
				older = wr
			}
			if paused(faults, older.Worker, older.CalledAt, end(older)) {
				r.readerPaused++
				continue
			}
			r.readerWithWriter++
			r.details = append(r.details, fmt.Sprintf("reader (worker %d) and writer token %d (worker %d) both believed they held, for %v",
				rd.Worker, wr.Token, wr.Worker, time.Duration(min(end(rd), end(wr))-max(rd.LockAt, wr.LockAt))))
		}
	}
}

// checkName checks the holds of one lock name.
func (r *report) checkName(hs []hold, c config, faults []fault) {
	slices.SortFunc(hs, func(a, b hold) int { return int(a.LockAt - b.LockAt) })
	// Holds overlapping in time (a paused or cut-off holder's hold lasts
	// past its loss): reported, not a violation by itself.
	for i := 1; i < len(hs); i++ {
		if hs[i-1].EndAt > hs[i].LockAt {
			r.overlapping++
		}
	}
	// Accepted writes: a hold whose write went through must have sent it
	// before the next hold began. And in the order the resource took them,
	// tokens must grow.
	var acc []hold
	for _, h := range hs {
		if h.Accepted {
			acc = append(acc, h)
		}
	}
	// Holders that believed they held (Done not fired) must not overlap. A
	// stale write (sent knowing the hold was lost, to test the fence) can
	// still land if the next holder has not presented its token yet: that
	// is counted apart.
	var believed *hold
	for i := range acc {
		h := &acc[i]
		if h.Stale && slices.ContainsFunc(hs, func(g hold) bool { return g.Token > h.Token && g.LockAt < h.SentAt }) {
			r.staleAfterNewer++
		}
		if believed != nil && h.LockAt < believed.SentAt {
			r.overlapAccepted++
			r.details = append(r.details, fmt.Sprintf("%s: token %d (worker %d) sent its write %v after token %d (worker %d) locked",
				h.Name, believed.Token, believed.Worker, time.Duration(believed.SentAt-h.LockAt), h.Token, h.Worker))
		}
		if !h.Stale && (believed == nil || h.SentAt > believed.SentAt) {
			believed = h
		}
	}
	slices.SortFunc(acc, func(a, b hold) int { return int(a.Seq - b.Seq) })
	for i := 1; i < len(acc); i++ {
		if acc[i].Token <= acc[i-1].Token || acc[i].Seq == acc[i-1].Seq {
			r.outOfOrder++
		}
	}
	// A worker killed while holding: the next hold of the name must begin
	// within TTL + one wake-up, unless another fault got in the way.
	// Only a mutex's: another permit may serve the semaphore's next holder,
	// and readers may keep the next writer waiting.
	bound := c.ttl + c.poll + 250*time.Millisecond
	for i, h := range hs {
		if h.EndAt != 0 || i+1 >= len(hs) || kindOf(h.Name) != "mutex" {
			continue
		}
		kill := killAfter(faults, h)
		if kill == 0 || quietBetween(faults, kill, kill+int64(bound)) == false {
			continue
		}
		wait := time.Duration(hs[i+1].LockAt - kill)
		r.takeovers++
		r.longestTakeover = max(r.longestTakeover, wait)
		if wait > bound+failoverAllowance(faults, kill, c) {
			r.stuck++
		}
	}
}

// checkBeliefs judges the holders' beliefs: two holds of one name whose
// intervals from Lock returning to Done closing overlap are explained only
// by a SIGSTOP of the older holder's worker (the lower token: the hold that
// should have let go) between its Lock call and its Done (its timers could
// not fire, or its Lock returned late); any other overlap is a violation:
// a cut-off or slowed holder must have let go in time. A hold whose worker
// was killed believed until the kill.
func (r *report) checkBeliefs(hs []hold, faults []fault) {
	end := func(h hold) int64 {
		if h.DoneAt != 0 {
			return h.DoneAt
		}
		if k := killAfter(faults, h); k != 0 {
			return k
		}
		return h.EndAt // a history of before DoneAt was recorded
	}
	explained := map[int64]bool{} // older holds already counted as paused
	for i, a := range hs {        // sorted by LockAt
		aEnd := end(a)
		for _, b := range hs[i+1:] {
			if b.LockAt >= aEnd {
				break
			}
			older := a
			if b.Token < a.Token {
				older = b
			}
			if paused(faults, older.Worker, older.CalledAt, end(older)) {
				if !explained[older.Token] {
					explained[older.Token] = true
					r.beliefPaused++ // one per older hold
				}
				continue
			}
			r.beliefUnexplained++
			r.details = append(r.details, fmt.Sprintf("%s: token %d (worker %d) and token %d (worker %d) both believed they held, for %v, with no pause of the older one's worker",
				a.Name, a.Token, a.Worker, b.Token, b.Worker, time.Duration(min(aEnd, end(b))-b.LockAt)))
		}
	}
}

// paused reports whether worker was stopped (SIGSTOP) at some time
// between from and to.
func paused(faults []fault, worker int, from, to int64) bool {
	for _, f := range faults {
		if f.Kind == "pause" && f.Worker == worker && f.At < to && f.Until > from {
			return true
		}
	}
	return false
}

// checkPause looks at a hold whose worker was paused (SIGSTOP for longer
// than the TTL) while it held: it should have seen Done fire before its
// write, and the fence should have refused that write.
func (r *report) checkPause(h hold, faults []fault) {
	for _, f := range faults {
		if f.Kind == "pause" && f.Worker == h.Worker && h.LockAt < f.At && h.SentAt > f.At {
			r.paused++
			if h.Stale {
				r.pausedSeen++
			}
			if h.Accepted {
				r.pausedAccepted++
			}
			return
		}
	}
}

// killAfter returns when h's worker was killed after h began, or 0.
func killAfter(faults []fault, h hold) int64 {
	for _, f := range faults {
		if f.Kind == "kill" && f.Worker == h.Worker && f.At > h.LockAt {
			return f.At
		}
	}
	return 0
}

// failoverAllowance is how much later than usual a lease may be taken over
// at time at: a lease written on another primary's clock is over the
// member clock skew bound later, and a worker goes on writing on the old
// primary's clock until it measures the new one (every minute).
func failoverAllowance(faults []fault, at int64, c config) time.Duration {
	for _, f := range faults {
		if f.Kind == "failover" && f.At < at && at-f.At < int64(time.Minute+2*c.ttl) {
			return c.memberSkew
		}
	}
	return 0
}

// quietBetween reports whether no fault other than a kill overlapped the
// time span.
func quietBetween(faults []fault, from, to int64) bool {
	for _, f := range faults {
		if f.Kind != "kill" && f.At < to && f.Until > from {
			return false
		}
	}
	return true
}

func (r *report) print(w io.Writer, c config) {
	wake := "change streams"
	if !c.streams {
		wake = "polling (no change streams)"
	}
	fmt.Fprintf(w, "torture: %v, %d workers x %d goroutines, %d names, TTL %v, poll %v, waiters woken by %s\n",
		r.ran.Round(time.Second), c.workers, c.goroutines, c.names, c.ttl, c.poll, wake)
	fmt.Fprintf(w, "faults: kill %d, pause %d, restart %d, cut %d, delay %d, wall-clock step ±15s %d, failover %d (new primary's clock within ±%v, member skew bound %v); clock skew on %d workers\n",
		r.faults["kill"], r.faults["pause"], r.faults["restart"], r.faults["cut"], r.faults["delay"], r.faults["step"],
		r.faults["failover"], c.memberSkew*9/20, c.memberSkew, min(len(skews), c.workers-1))
	fmt.Fprintf(w, "holds: %d completed, %d cut short by a kill, %d lost before unlock; %d mutex, %d semaphore permit (limit %d, checked per slot), %d write, %d read\n",
		r.holds, r.killedHolds, r.lost, r.kinds["mutex"], r.kinds["semaphore permit"], semLimit, r.kinds["write"], r.kinds["read"])
	fmt.Fprintf(w, "readers and writers believing they held at once: %d spanning a SIGSTOP of the first, %d without\n",
		r.readerPaused, r.readerWithWriter)
	fmt.Fprintf(w, "fenced writes: %d accepted, %d rejected; written after Done fired: %d (%d accepted)\n",
		r.accepted, r.rejected, r.stale, r.staleAccepted)
	fmt.Fprintf(w, "stale writes accepted after a newer hold began (it had not claimed yet): %d\n", r.staleAfterNewer)
	fmt.Fprintf(w, "holds spanning a pause of their worker: %d; Done seen before the write: %d; writes accepted: %d\n",
		r.paused, r.pausedSeen, r.pausedAccepted)
	fmt.Fprintf(w, "holds overlapping in time: %d (a paused or cut-off holder; the fence decides)\n", r.overlapping)
	fmt.Fprintf(w, "holds still believed when a newer one's Lock returned (Done not yet closed): %d spanning a SIGSTOP of their worker, %d overlaps without\n",
		r.beliefPaused, r.beliefUnexplained)
	fmt.Fprintf(w, "takeovers after a kill: %d, longest %v (bound TTL + poll + 250ms = %v, and the member skew bound more within a minute of a failover)\n",
		r.takeovers, r.longestTakeover.Round(time.Millisecond), c.ttl+c.poll+250*time.Millisecond)
	fmt.Fprintf(w, "final: every lock taken within %v\n", r.final.Round(time.Millisecond))
	for _, d := range r.details {
		fmt.Fprintln(w, "  overlap:", d)
	}
	fmt.Fprintf(w, "VIOLATIONS: overlapping accepted writes %d, accepted writes out of token order %d, stuck locks %d, unexplained overlapping beliefs %d, readers with a writer %d\n",
		r.overlapAccepted, r.outOfOrder, r.stuck, r.beliefUnexplained, r.readerWithWriter)
}
