package mongolock

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// watchLinger is how long the change stream stays open after the last
// waiter left, so that a stream of short waits does not open one each.
const watchLinger = time.Second

// wakeSink receives the watcher's news.
type wakeSink interface {
	notify(name string) // a lock of that name may have been freed
	// taken: a lock of that name was taken, with a lease to then (zero:
	// unknown); firm when kept by no one until then (WithHoldAtLeast).
	taken(name string, until time.Time, firm bool)
	// turn: a lock of that name was freed for heir alone until then.
	turn(name, heir string, until time.Time)
	joined(name, locker string) // a Locker joined the lock's waiting ones
	readersChanged(name string) // an RWMutex's readers came or went
	// leader: a lock of that name was taken with this fencing token and
	// value (an election's new leader), told before any folding.
	leader(name string, lead leadership, value string)
	notifyAll()                            // any lock may have been freed: events may have been missed
	streaming(on bool)                     // whether releases are being watched
	eventLag(d time.Duration) (pause bool) // how late the latest events came (eventlag.go); pause: close the stream for reprobeAfter
}

// watcher runs ONE change stream per Locker while goroutines of the
// process wait, and fans its events out to them by name. Where the server
// has no change streams it says so once in the log and stays off: waiters
// then poll.
type watcher struct {
	open openStream
	sink wakeSink
	log  *slog.Logger
	self string // this Locker's id: turns given to it are never folded away
	// onStream is Observer.ChangeStream, called with no lock held.
	onStream func(on bool)
	// The events' lags (eventlag.go), from the latest server time surely
	// past: an event's lag, measured from its wallTime, is never more than
	// it was, whatever the error of the estimate.
	lag lagMeter

	mu          sync.Mutex
	demand      int       // waiters that want news
	running     streamRun // the running stream's goroutine
	stopTimer   *time.Timer
	unsupported bool
	told        streamTold
	// paused: events came too late to wait on (eventlag.go): the stream
	// stays closed until then, and waiters poll; its timer reopens it.
	paused streamPause
	closed bool
	wg     sync.WaitGroup
}

// streamRun is the watcher's running stream.
type streamRun struct {
	cancel context.CancelFunc // of the running stream's goroutine; nil when none
	gen    int                // of the last run started
}

// streamTold is what the watcher last said of its stream.
type streamTold struct {
	on  bool // the last state told to the sink
	off bool // the last state told to onStream was off
}

// streamPause is a stream closed because its events came too late.
type streamPause struct {
	until  time.Time
	resume *time.Timer
}

// want registers a waiter; the first starts the stream.
func (w *watcher) want() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.demand++
	if w.stopTimer != nil {
		w.stopTimer.Stop()
		w.stopTimer = nil
	}
	if w.running.cancel != nil || w.unsupported || w.closed || time.Now().Before(w.paused.until) {
		return
	}
	w.startLocked()
}

// startLocked starts a run of the stream, with w.mu held.
func (w *watcher) startLocked() {
	ctx, cancel := context.WithCancel(context.Background())
	w.running.cancel = cancel
	w.running.gen++
	gen := w.running.gen
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.run(ctx, gen)
	}()
}

// streaming tells the sink whether the stream of run gen is on, unless a
// later run has started: an old run ending must not say "off" over it.
func (w *watcher) streaming(gen int, on bool) {
	w.mu.Lock()
	changed := gen == w.running.gen && w.told.on != on
	if gen == w.running.gen {
		w.sink.streaming(on)
		w.told.on = on
	}
	if changed {
		w.told.off = !on
	}
	w.mu.Unlock()
	if changed && w.onStream != nil {
		w.onStream(on) // after the unlock: it may not block the stream's users
	}
}

// unwant drops a waiter; after the last, the stream closes once it has
// lingered unused for watchLinger.
func (w *watcher) unwant() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.demand--
	if w.demand > 0 || w.running.cancel == nil {
		return
	}
	w.stopTimer = time.AfterFunc(watchLinger, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.demand == 0 && w.running.cancel != nil {
			w.running.cancel()
			w.running.cancel = nil
		}
	})
}

// pause closes the stream for d: its events come too late to wait on,
// and an open stream costs the server (on mongotest, every write it
// watches). Then it opens again, if anything waits, to measure them again.
func (w *watcher) pause(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.running.cancel == nil {
		return
	}
	w.running.cancel()
	w.running.cancel = nil
	w.lag.forget()
	w.paused.until = time.Now().Add(d)
	if w.paused.resume != nil {
		w.paused.resume.Stop()
	}
	w.paused.resume = time.AfterFunc(d, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.demand > 0 && w.running.cancel == nil && !w.closed && !w.unsupported && !time.Now().Before(w.paused.until) {
			w.startLocked()
		}
	})
}

// close stops the stream and waits for its goroutine.
func (w *watcher) close() {
	w.mu.Lock()
	w.closed = true
	if w.stopTimer != nil {
		w.stopTimer.Stop()
	}
	if w.paused.resume != nil {
		w.paused.resume.Stop()
	}
	if w.running.cancel != nil {
		w.running.cancel()
		w.running.cancel = nil
	}
	w.mu.Unlock()
	w.wg.Wait()
}

// run keeps a stream open until ctx ends: it resumes from the last resume
// token after a transient error, and starts afresh (waking every waiter
// once, since events may have been missed) after an invalidate or a lost
// token.
func (w *watcher) run(ctx context.Context, gen int) {
	var token bson.Raw
	defer w.streaming(gen, false)
	pause := 50 * time.Millisecond // after a failed open, doubling up to 5s
	for ctx.Err() == nil {
		cs, err := w.open(ctx, token)
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return
			case notSupported(err):
				w.mu.Lock()
				tell := !w.told.off // at most one "off" in a row
				w.told.off = true
				w.unsupported = true
				if w.running.cancel != nil {
					w.running.cancel()
					w.running.cancel = nil
				}
				w.mu.Unlock()
				w.log.Info("mongolock: the server has no change streams for this collection; waiters poll instead", "err", err)
				if w.onStream != nil && tell {
					w.onStream(false) // it will not come on
				}
				return
			case historyLost(err):
				token = nil
			}
			w.log.Debug("mongolock: opening the change stream failed; retrying", "err", err)
			sleep(ctx, pause)
			pause = min(2*pause, 5*time.Second)
			continue
		}
		pause = 50 * time.Millisecond
		if token == nil {
			// A release between a waiter's last try and now would be missed.
			w.sink.notifyAll()
		}
		w.streaming(gen, true)
		token = w.drain(ctx, cs, token)
		w.streaming(gen, false)
		err = cs.Err()
		closeStream(cs)
		if ctx.Err() != nil {
			return
		}
		if err == nil || historyLost(err) {
			token = nil // invalidated, or the token can no longer be resumed from
		}
		w.log.Debug("mongolock: change stream ended; reopening", "err", err, "resume", token != nil)
		if !sleep(ctx, pause) {
			return
		}
	}
}

// drain fans the stream's events out until it ends, and returns the token
// to resume from: the stream's latest (which moves on past events the
// server filtered out, with each batch's postBatchResumeToken), or nil
// after an invalidating event. The events of one batch are folded by name
// first: a release followed by a new acquire of the same name wakes no one
// (the waiters would only find it taken), so a release that another
// process follows at once with its own acquire costs the others nothing.
func (w *watcher) drain(ctx context.Context, cs eventStream, token bson.Raw) bson.Raw {
	state := map[string]*changeEvent{} // by name, last event wins
	var order []string
	w.lag.open(cs.ID(), token != nil)
	flush := func() {
		for _, name := range order {
			ev := state[name]
			switch heir, until := ev.heir(); {
			case !ev.freed():
				w.sink.taken(name, ev.leaseEnd(), ev.kept())
			case heir != "":
				w.sink.turn(name, heir, until)
			default:
				w.sink.notify(name)
			}
		}
		clear(state)
		order = order[:0]
		if d, ok := w.lag.typical(); ok && w.sink.eventLag(d) {
			w.pause(reprobeAfter)
		}
	}
	defer flush()
	for cs.Next(ctx) {
		var ev changeEvent
		if err := cs.Decode(&ev); err != nil {
			w.sink.notifyAll()
		} else {
			token = cs.ResumeToken()
			if ctx.Err() == nil { // a paused run's rest of a batch would refill the emptied window
				w.lag.measure(ev.WallTime, cs.ID())
			}
			switch ev.OperationType {
			case "invalidate", "drop", "dropDatabase", "rename":
				w.sink.notifyAll() // and the deferred flush: wakes every waiter anyway
				return nil
			}
			name := ev.DocumentKey.ID
			switch heir, until := ev.heir(); {
			case ev.joiner() != "":
				w.sink.joined(name, ev.joiner()) // no change of holder: nothing to fold
			case ev.readersOnly():
				w.sink.readersChanged(name) // nor here
			case heir != "" && heir == w.self && ev.freed():
				// This Locker's turn: it must hear of it even if the lock
				// is taken again later in the batch (by another, once the
				// turn ended), or it would not know it left the waiting
				// Lockers.
				flush()
				w.sink.turn(name, heir, until)
			default:
				if lead, value, ok := ev.leadership(); ok && !ev.freed() {
					w.sink.leader(name, lead, value) // every one, before folding
				}
				if _, seen := state[name]; !seen {
					order = append(order, name)
				}
				state[name] = &ev
			}
		}
		// The end of a batch: tell what it folded, whatever its last event.
		if cs.RemainingBatchLength() == 0 {
			flush()
		}
	}
	if t := cs.ResumeToken(); t != nil {
		token = t
	}
	return token
}
