package mongolock

// What the waiting layer is told of the locks, and by whom: the watcher's
// change events (notify, taken, leader, readersChanged, joined in
// turnstate.go), its state (streaming, and eventLag in eventlag.go), and
// Election.Observe's registrations. News of another process's release
// wakes the head of the name's queue; news of an acquire tells waiters how
// long to wait.

import (
	"slices"
	"time"
)

// streamNews is what the change stream (or a read, or this process's own
// kept hold) last said of a lock.
type streamNews struct {
	expiry    time.Time // server time the last seen holder's lease ends
	firm      time.Time // server time a kept lock frees (no one releases it before)
	freedNews bool      // news of a release came during this process's hold
	turnUntil time.Time // server time another Locker's turn ends (turns.go)
	busy      bool      // the stream's last news: taken, or another's turn
}

// observe returns a channel signalled whenever name changes hands in this
// process or the watcher reports its release.
func (r *waitRegistry) observe(name string) chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := make(chan struct{}, 1)
	q := r.queue(name)
	q.observers = append(q.observers, c)
	return c
}

func (r *waitRegistry) unobserve(name string, c chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(name)
	if i := slices.Index(q.observers, c); i >= 0 {
		q.observers = slices.Delete(q.observers, i, i+1)
	}
	delete(q.news, c)
	r.drop(name, q)
}

// notify is the watcher's news that name was released. A hold of this
// process on name means the news is old (it was taken since), and the end
// of that hold will wake the head.
func (r *waitRegistry) notify(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.streamOn() {
		// Waiters poll (events come too late, eventlag.go): a wake by
		// news that old would only break their pacing.
		if q := r.names[name]; q != nil {
			signalAll(q.observers)
		}
		return
	}
	if sem, ok := semaphoreOf(name); ok {
		if q := r.names[sem]; q != nil {
			r.wakeLocked(q) // a permit of it may be free
		}
		return
	}
	q := r.names[name]
	switch {
	case q == nil:
	case q.local == 0:
		r.wakeLocked(q)
	default:
		q.told.freedNews = true // old news, or a ForceRelease of a lock about to be kept
		signalAll(q.observers)
	}
}

// taken is the watcher's news that name was taken, or kept by no one
// (firm) until its lease ends: observers (Election's Observe) look at it;
// waiters wait on for its release, or for that end.
func (r *waitRegistry) taken(name string, until time.Time, firm bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if q := r.names[name]; q != nil && !r.streamOn() {
		signalAll(q.observers) // waiters poll: news this late would only hold them back
	} else if q != nil {
		if now, unc := r.clock.Read(); firm && q.local == 0 && !until.After(now.Add(-unc)) {
			r.wakeLocked(q) // kept until a time now past: free
			return
		}
		r.stopTurnLocked(q)
		q.told.busy, q.told.expiry, q.told.turnUntil, q.told.firm = true, until, time.Time{}, time.Time{}
		if firm {
			q.told.firm = until
		}
		if q.local > 0 {
			// This process's own acquire: joins told before it are old.
			q.member.joiners = q.member.joiners[:0]
		}
		signalAll(q.observers)
		if q.local == 0 && len(q.waiters) > 0 {
			signal(q.waiters[0].kick) // its timer may be set for a turn's end, now moot
		}
	}
}

// leaderNews is one acquire the change stream told of.
type leaderNews struct {
	leadership
	value string
}

// leadership tells one leadership from another: by its fencing token and
// its holder's token, as a failover's rollback can undo an acquire whose
// fence a later leader then takes again.
type leadership struct {
	fence  int64
	holder string
}

// after reports whether l is a leadership to report after last: a later
// fence, or the same fence taken by another holder (the first was rolled
// back). An observer reports each one once, in order.
func (l leadership) after(last leadership) bool {
	return l.fence > last.fence || l.fence == last.fence && l.holder != last.holder
}

// maxNews bounds the leaders kept for observers that do not read them.
const maxNews = 64

// leader is the watcher's news that name was taken with fence and value:
// kept for observers (Election.Observe), so that a leadership that ended
// before they read the document is still seen.
func (r *waitRegistry) leader(name string, lead leadership, value string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if q := r.names[name]; q != nil && len(q.observers) > 0 {
		if q.news == nil {
			q.news = map[chan struct{}][]leaderNews{}
		}
		for _, c := range q.observers {
			n := q.news[c]
			q.news[c] = append(n[max(0, len(n)-maxNews+1):], leaderNews{lead, value})
		}
		signalAll(q.observers)
	}
}

// takeNews returns and forgets the leaders told of name so far to the
// observer c.
func (r *waitRegistry) takeNews(name string, c chan struct{}) []leaderNews {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.names[name]
	if q == nil {
		return nil
	}
	news := q.news[c]
	delete(q.news, c)
	return news
}

// readersChanged is the watcher's news that an RWMutex's readers came or
// went: a writer of this process waiting for them to leave looks again.
func (r *waitRegistry) readersChanged(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if q := r.names[name]; q != nil {
		signalAll(q.observers)
	}
}

// notifyAll wakes the head of every name not held in this process, nor
// kept by no one until a time to come: a kept lock frees at its time
// whatever events were missed (only ForceRelease frees it sooner).
func (r *waitRegistry) notifyAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.wakeAllLocked()
}

// wakeAllLocked wakes the head of every name no hold of this process has
// and no one keeps, as far as it knows (a switch to polling forgets the
// kept ends first: their heads try once, and read the end); r.mu must be
// held.
func (r *waitRegistry) wakeAllLocked() {
	now, _ := r.clock.Read()
	for _, q := range r.names {
		if q.local == 0 && !q.told.firm.After(now) {
			r.wakeLocked(q)
		}
	}
}

// streaming switches the poll pauses between the poll interval (no news
// from the server) and the longer safety interval.
func (r *waitRegistry) streaming(up bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.streamUp = up
	r.streamingLocked()
}

// waitsOnStream is streamOn, under r.mu.
func (r *waitRegistry) waitsOnStream() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.streamOn()
}

// streamOn reports whether waiters wait on the change stream's events: it
// runs, and its events come in time (not slowEvents); polls are then only
// a safety net. r.mu must be held.
func (r *waitRegistry) streamOn() bool {
	return r.streamUp && !r.slow
}

// streamingLocked forgets what waiting the other way left, as the stream
// starts or stops, or waiters switch between it and polling; r.mu must
// be held.
func (r *waitRegistry) streamingLocked() {
	on := r.streamOn()
	for _, q := range r.names {
		q.member.joined = false // joined the other way, or turns were missed: join again
		q.told.busy = false     // news may have been missed
		q.pace = pollPace{}     // a poller's last read is out of date
		if !on {
			q.told.firm = time.Time{} // a ForceRelease may go unseen from now on
		}
		if !on && r.slow {
			// Events too late to wait on: the joins they told of grow
			// stale (the acquire's event that clears them is ignored
			// from now on), and a release would name Lockers that poll
			// now as streaming heirs. A stream that only went down keeps
			// them: it resumes and tells what it missed, and until then
			// they keep the rejoined Lockers' entries from being removed
			// as stale (staleOf).
			q.member.joiners = q.member.joiners[:0]
		}
	}
	if !on {
		for _, q := range r.names {
			q.pause = min(q.pause, r.cfg.maxPause)
		}
	}
}
