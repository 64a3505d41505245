// Package gocronlock lets gocron (github.com/go-co-op/gocron/v2)
// schedulers on many hosts share their jobs through mongolock: a Locker for
// gocron.WithDistributedLocker, so that each run of a job happens on one
// host, and an Elector for gocron.WithDistributedElector, so that only the
// leader's scheduler runs jobs.
//
// It is a module of its own, so that gocron never enters mongolock's
// go.mod.
package gocronlock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-co-op/gocron/v2"

	"github.com/mongolock/mongolock"
)

// ErrNotLeader is what Elector.IsLeader returns when this process does not
// lead: gocron then skips the run.
var ErrNotLeader = errors.New("gocronlock: not the leader")

// Locker is a gocron.Locker: each run of a job first takes a mongolock
// Mutex named prefix + the job's name, in one attempt, and releases it when
// the run returns. Schedulers on several hosts whose clocks, start-up and
// load make them fire a few hundred milliseconds apart would each find the
// lock free after a short run: give NewLocker
// mongolock.WithHoldAtLeast(d), d a little under the job's period, so that
// the lock stays taken until then and a tick runs once. A
// mongolock.WithHoldAtMost cap ends a run's hold (its Mutex's Done closes)
// but cannot stop the job's function: gocron gives it no context.
//
// Shut down in this order: the scheduler first (its Shutdown waits for
// running jobs), then the session. The other order is safe too: the run's
// lock is made mongolock.WithWaitForUnlock, so a session closed (or its
// context ended, or its Locker closed) while a job runs keeps the lock
// until the run returns, and Session.Close waits for that, up to the
// lease's end less its safety margin; a job still running then has its
// lock left to expire on the server, never freed early.
type Locker struct {
	s      *mongolock.Session
	prefix string
	opts   []mongolock.MutexOption
}

var _ gocron.Locker = (*Locker)(nil)

// NewLocker returns a Locker whose locks belong to s (its keepalive renews
// them while a run lasts) and are named prefix + the job's name, with
// opts bounding each hold. It returns an error for a nil session.
func NewLocker(s *mongolock.Session, prefix string, opts ...mongolock.MutexOption) (*Locker, error) {
	if s == nil {
		return nil, errors.New("gocronlock: nil session")
	}
	return &Locker{s: s, prefix: prefix, opts: opts}, nil
}

// Lock makes one attempt (one round trip) to take the job's lock. It
// returns the held lock; an error matching mongolock.ErrLocked when another
// host has it (gocron then skips this run); or the attempt's error (an
// invalid name or option, the session's end, the server's error), with
// nothing held.
func (l *Locker) Lock(ctx context.Context, key string) (gocron.Lock, error) {
	m := l.s.NewMutex(l.prefix+key, slices.Concat(l.opts, []mongolock.MutexOption{mongolock.WithWaitForUnlock()})...)
	if err := m.TryLock(ctx); err != nil {
		return nil, err
	}
	return &lock{m: m}, nil
}

type lock struct{ m *mongolock.Mutex }

// Unlock releases the run's lock, or, within a WithHoldAtLeast bound,
// leaves it taken by no one until then; see mongolock.Mutex.Unlock.
func (k *lock) Unlock(context.Context) error { return k.m.Unlock() }

// Elector is a gocron.Elector: a goroutine campaigns in a mongolock
// Election for as long as the Elector runs, and IsLeader says whether this
// process leads at the moment it is asked. Leadership is lost with the
// session's lease; when it is, IsLeader stops answering yes at once (before
// another campaigner can lead) and the goroutine campaigns again.
//
// gocron asks IsLeader before each run and says nothing when the run ends,
// so the Elector cannot know whether a job still runs: shut down in this
// order, the scheduler first (its Shutdown waits for running jobs), then
// the Elector (Close resigns, so another host leads at once), then the
// session. Closing the Elector or the session while a job still runs lets
// another host's scheduler lead, and run jobs, while that job finishes.
type Elector struct {
	e      *mongolock.Election
	cancel context.CancelFunc
	done   chan struct{}
}

var _ gocron.Elector = (*Elector)(nil)

// NewElector starts campaigning in the election name of session s, with
// value as this process's leader value (a host name, say). It returns at
// once; the campaign runs until Close, ctx's end or the session's end. It
// returns an error for a nil session or an invalid name.
func NewElector(ctx context.Context, s *mongolock.Session, name, value string) (*Elector, error) {
	if s == nil {
		return nil, errors.New("gocronlock: nil session")
	}
	if name == "" {
		return nil, fmt.Errorf("%w: empty", mongolock.ErrInvalidName)
	}
	ctx, cancel := context.WithCancel(ctx)
	el := &Elector{e: s.NewElection(name), cancel: cancel, done: make(chan struct{})}
	go el.campaign(ctx, s, value)
	return el, nil
}

// campaign leads whenever it can until ctx or the session ends; it resigns
// on its way out.
func (el *Elector) campaign(ctx context.Context, s *mongolock.Session, value string) {
	defer close(el.done)
	defer el.e.Resign(context.Background())
	pause := 100 * time.Millisecond
	for ctx.Err() == nil {
		if err := el.e.Campaign(ctx, value); err != nil {
			if ctx.Err() != nil || s.Err() != nil || errors.Is(err, mongolock.ErrClosed) ||
				errors.Is(err, mongolock.ErrInvalidName) {
				return
			}
			// A server error: campaign again after a pause.
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
			pause = min(2*pause, 5*time.Second)
			continue
		}
		pause = 100 * time.Millisecond
		select {
		case <-ctx.Done():
			return
		case <-el.e.Done(): // lost: campaign again
		}
	}
}

// IsLeader returns nil while this process leads, and ErrNotLeader
// otherwise. It never blocks and sends nothing to the server: leadership
// ends in this process before its lease can run out on the server.
func (el *Elector) IsLeader(context.Context) error {
	select {
	case <-el.e.Done():
		return ErrNotLeader
	default:
		return nil
	}
}

// Close stops campaigning, resigns if this process leads (so another can
// lead at once), and waits for the campaign's goroutine. It returns nil.
func (el *Elector) Close() error {
	el.cancel()
	<-el.done
	return nil
}
