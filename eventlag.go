package mongolock

import (
	"slices"
	"sync"
	"time"
)

// How late change events come. On a replica set an event reaches the stream
// once a majority of members has its write: milliseconds in one region, a
// hundred across regions; on a sharded cluster, once every shard has
// spoken, which an idle one does every periodicNoopIntervalSecs (10s). The
// watcher measures each event's lag (the latest server time surely past
// when it came, by the estimate, less the event's wallTime; not the events
// a resumed stream replays, watch.go) and the waiting layer goes by the
// median of the last lagWindow: a turn given to another process lasts that
// much longer (up to a poll interval), so that the heir hears of it within
// it; and when events come later than a tenth of the poll interval and than
// half a turn (slowEvents), waiters poll instead, with turns for pollers:
// under contention, polling heads that read the lock near their turns hand
// it on within milliseconds (pollturns.go), which events that late cannot
// match. The stream then closes for reprobeAfter (it would only cost the
// server), and opens again, if anything waits, to measure them: waiters go
// back to waiting on it once its events come within half the bound (a
// twentieth of the poll interval, or 25ms, whichever is longer).

// lagWindow is how many of the latest events the lag is the median of.
const lagWindow = 16

// lags are the latest events' lags, oldest first.
type lags []time.Duration

// add records one event's lag; a negative one (the clock estimate's
// error) counts as none.
func (l lags) add(d time.Duration) lags {
	return append(l[max(0, len(l)-lagWindow+1):], max(d, 0))
}

// typical is the median lag of the window, 0 when no event told its
// wallTime (servers before 6.0): events as they mostly come, not the one a
// stall held back (a GC pause, a loaded server's hiccup).
func (l lags) typical() time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(l))
	return s[len(s)/2]
}

// lagMeter measures the lags of a watcher's events (its drain), but for
// those written before their cursor opened: a resumed stream replays the
// events written while it was down, in as many batches as they take, and
// their lag is the outage's. The watcher resumes it (from a token), or
// the driver does inside Next (a cut link, a failover), which only the
// cursor's new id tells. The window is kept across the stream's runs (a
// quiet lock's events come few to a run) and forgotten when the stream
// pauses, to be measured afresh. Safe for concurrent use: an ending run
// may still drain as the next begins.
type lagMeter struct {
	now    func() time.Time // the latest server time surely past; nil: none (tests)
	mu     sync.Mutex
	lags   lags
	cursor int64     // the id of the cursor the last event came from
	opened time.Time // server time surely past as it opened; zero: a new stream, which replays nothing
}

// open starts a run of the stream on cursor, resumed from a token or not.
func (m *lagMeter) open(cursor int64, resumed bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cursor, m.opened = cursor, time.Time{}
	if resumed && m.now != nil {
		m.opened = m.now()
	}
}

// measure records the lag of an event written at wall (zero: the server
// does not say, before 6.0) that came from cursor.
func (m *lagMeter) measure(wall time.Time, cursor int64) {
	if m.now == nil || wall.IsZero() {
		return
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if cursor != m.cursor {
		m.cursor, m.opened = cursor, now
	}
	if !wall.Before(m.opened) {
		m.lags = m.lags.add(now.Sub(wall))
	}
}

// typical returns the events' typical lag, and whether it may be judged:
// once the window is full. On fewer events a stream's first alone would
// decide, and the first are those most often held back (its opening;
// just after a resume's replay, the server busy with it).
func (m *lagMeter) typical() (time.Duration, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lags.typical(), len(m.lags) == lagWindow
}

// forget empties the window: the stream pauses, and its events will be
// measured afresh when it opens again.
func (m *lagMeter) forget() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lags = nil
}

// slowEvents reports whether events that come lag late are too slow to
// wait on, for waiters that would otherwise poll every pollInterval: later
// than a tenth of it, and than half a turn (turnGrace), which a loaded
// server's events may take; wasSlow is the last answer: from slow, events
// must come within half as much again, so that a lag near the bound does
// not switch at every batch.
func slowEvents(lag, pollInterval time.Duration, wasSlow bool) bool {
	bound := max(pollInterval/10, turnGrace/2)
	if wasSlow {
		bound /= 2
	}
	return lag > bound
}

// turnLag is how much longer than turnGrace a turn given to another
// process lasts: the lag of the events that tell it, up to a poll
// interval (an heir that polls finds its turn within one).
func turnLag(lag, pollInterval time.Duration) time.Duration {
	return min(lag, pollInterval)
}

// eventLag is the watcher's news of how late events come (lags.typical).
// When they become too slow, heads that slept on the stream's safety
// pause are woken: they poll from now on. It reports whether the stream
// should close for reprobeAfter (its events are too slow to wait on).
func (r *waitRegistry) eventLag(d time.Duration) (pause bool) {
	r.mu.Lock()
	was := r.streamOn()
	r.lag = d
	r.slow = slowEvents(d, r.cfg.maxPause, r.slow)
	pause = r.slow && r.streamUp
	if on := r.streamOn(); on != was {
		r.streamingLocked()
		if !on {
			r.wakeAllLocked()
		}
	}
	r.mu.Unlock()
	return pause
}

// reprobeAfter is how long a stream whose events came too late stays
// closed before it is opened again to measure them.
const reprobeAfter = time.Minute
