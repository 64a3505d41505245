package mongolock

import (
	"context"
	"errors"
	"sync"
	"time"
)

// RunOption configures Election.Run.
type RunOption func(*runOptions)

type runOptions struct {
	newLeader func(value string)
	stopped   func()
}

// OnNewLeader has Run call f with the value of each new leader it sees,
// this process included, in order, from a goroutine of its own; f must
// not block for long. Short leaderships may be missed, as by Observe.
func OnNewLeader(f func(value string)) RunOption {
	return func(o *runOptions) { o.newLeader = f }
}

// OnStoppedLeading has Run call f each time this process stops leading,
// after lead has returned and leadership was given up (its release sent,
// or, after the session's end, left to the session's Close): never for a
// process whose lead did not run.
func OnStoppedLeading(f func()) RunOption {
	return func(o *runOptions) { o.stopped = f }
}

// Run is the leader loop, in the style of client-go's leaderelection: it
// campaigns with value; when it leads, it calls lead with a context that
// is cancelled the moment leadership ends (lost lease, the session's end,
// ctx's end), which is before any other campaigner can win; once lead has
// returned, it resigns (if it still leads) and campaigns again. So lead
// runs in at most one process at a time, provided it stops when its
// context is cancelled, and the lease is never given up while lead runs.
//
// Whatever ends the leadership, the lock is never freed on the server
// while lead may still run: lead's context is cancelled at once, and the
// release is sent only after lead returned. Session.Close (or the end of
// the session's context) and Locker.Close wait for that; if lead has not
// returned by the time the leadership would be given up anyway (its
// lease's end less the safety margin, less than the TTL away), it is given
// up as lost, said on the log, and left to run out on the server, so that
// the next leader starts after it. A leadership lost to an admin's
// ForceRelease ends only at the next renewal.
//
// Run blocks until ctx ends (it then returns ctx.Err(), having resigned if
// it led) or the session ends (ErrSessionClosed, at once if it had ended
// already); it returns ErrClosed when the Locker closes, and an invalid
// name's error at once. Between campaigns after a server error it pauses,
// up to a second. Token, on the Election Run runs on, is the fencing
// token of the leadership lead runs under.
func (e *Election) Run(ctx context.Context, value string, lead func(ctx context.Context), opts ...RunOption) error {
	var o runOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if err := e.s.check(ctx, e.name); err != nil {
		return err
	}
	if o.newLeader != nil {
		obsCtx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() {
			for v := range e.Observe(obsCtx) {
				o.newLeader(v)
			}
		})
		defer wg.Wait()
		defer stop()
	}
	pause := 10 * time.Millisecond
	for {
		h, err := e.campaign(ctx, value)
		switch {
		case err == nil:
			pause = 10 * time.Millisecond
			if e.lead(ctx, h, lead) && o.stopped != nil {
				o.stopped()
			}
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, ErrSessionClosed), errors.Is(err, ErrClosed), errors.Is(err, ErrInvalidName):
			return err
		}
		e.s.l.opts.logger.Warn("mongolock: campaign failed; trying again", "name", e.name, "err", err)
		if !sleep(ctx, pause) {
			return ctx.Err()
		}
		pause = min(2*pause, time.Second)
	}
}

// lead runs f while the leadership h lasts, then resigns if it still
// leads, and reports whether f ran. Whatever else ends the leadership
// gracefully (the session's end, Locker.Close, Resign) frees it only once
// f returned (work.go).
func (e *Election) lead(ctx context.Context, h *hold, f func(ctx context.Context)) bool {
	switch err := e.s.l.startWork(h); {
	case errors.Is(err, errWorking):
		// Another Run of this Election leads on h: wait for its end.
		select {
		case <-h.done:
		case <-ctx.Done():
		}
		return false
	case errors.Is(err, ErrClosed):
		h.release() // no lead starts once the Locker closed
		return false
	case err != nil:
		return false // h ended before lead could start: nothing runs
	}
	leadCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-h.done: // leadership ended: f must stop now
			cancel()
		case <-leadCtx.Done():
		}
	}()
	f(leadCtx)
	cancel()
	<-stopped
	e.s.l.stopWork(h)
	h.release() // only after f returned; ErrNotHeld or a loss if it ended already
	return true
}
