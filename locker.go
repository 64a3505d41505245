package mongolock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	mopt "go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readconcern"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
)

// Locker is bound to one collection, which holds one document per lock
// name. It carries the seed package's string-lock API (GetLock,
// ReleaseLock, RenewLock, IsUsedLock, IsFreeLock) and makes the Sessions
// that own Mutex and Election values. A Locker is safe for concurrent use;
// make one per collection and client, and share it.
type Locker struct {
	id    string // this Locker's name among a lock's waiting Lockers (turns.go)
	opts  options
	store *store
	clock *serverClock
	waits *waitRegistry
	watch *watcher // the change stream that feeds waits; nil: none (WithChangeStreams(false))

	probeMu sync.Mutex
	probed  bool

	closeOnce sync.Once
	closed    chan struct{}

	bg      *background        // clean-ups after callers, which Close waits for
	workMu  sync.Mutex         // guards working, and orders its additions before Close
	working map[*hold]struct{} // holds that code runs under (work.go)

	staleMu sync.Mutex
	stale   map[string]staleSeen // waiting Lockers a GetLock saw stale, by name, for its ReleaseLock (seed.go)
}

// New returns a Locker on coll. It does not contact the server: the first
// call that needs the server reads its clock and, once, its build. Writes
// use majority write concern unless WithWriteConcern says otherwise; reads
// go to the primary. New returns ErrNilCollection for a nil coll.
func New(coll *mongo.Collection, opts ...Option) (*Locker, error) {
	if coll == nil {
		return nil, ErrNilCollection
	}
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	coll = coll.Clone(mopt.Collection().
		SetWriteConcern(o.writeConcern).
		SetReadPreference(readpref.Primary()))
	clock := newServerClock(o.clock, helloTime(coll.Database()), o.clockRefresh)
	closed := make(chan struct{})
	bg := &background{}
	l := &Locker{
		id:   newToken(),
		opts: o,
		store: &store{coll: coll, clock: clock, skew: o.memberSkew,
			reports: coll.Clone(mopt.Collection().SetReadConcern(readconcern.Majority()))},
		clock:   clock,
		waits:   newWaitRegistry(o, clock, closed),
		closed:  closed,
		bg:      bg,
		working: map[*hold]struct{}{},
		stale:   map[string]staleSeen{},
	}
	if o.watch {
		l.watch = &watcher{open: l.store.openHolderChanges, sink: l.waits, log: o.logger, self: l.id,
			onStream: o.observer.ChangeStream, lag: lagMeter{now: clock.SurelyPast}}
	}
	l.waits.self = l.id
	l.waits.entries = l.store
	l.waits.bg = bg
	return l, nil
}

// Close stops the Locker: calls waiting for a lock (Mutex.Lock,
// Election.Campaign, GetLock) return ErrClosed, at once or, for an acquire
// already sent, when it is answered or times out; later calls that would
// take a lock (on the Locker, or TryLock, Lock and Campaign on its
// Sessions' values) fail with it. Unlock, Resign and Session.Close still
// work. The shared change stream stops. Close waits for the stream (at
// most 2s to close it) and then for background clean-ups (at most 5s)
// when the server is unreachable. It does not release locks: close the
// Sessions first; holds they still have go on being renewed until then.
// The exception is a hold that code runs under (Election.Run's lead, a
// Mutex made WithWaitForUnlock): it ends at once (lead's context is
// cancelled, Run returns ErrClosed), is released once that code returned,
// and Close waits for it, at most a TTL (until that hold's lease ends on
// the server); a lead still running at the hold's deadline leaves its lock
// to expire on the server, never freed early. (A hold whose session is
// closing at the same time is waited for by that Session.Close instead.)
func (l *Locker) Close() error {
	l.workMu.Lock()
	l.closeOnce.Do(func() { close(l.closed) })
	working := slices.Collect(maps.Keys(l.working))
	l.workMu.Unlock()
	var wg sync.WaitGroup
	for _, h := range working {
		if free := h.s.endWorking(h, ErrClosed); free != nil {
			l.observeReleased(h)
			wg.Go(func() { free() })
		}
	}
	if l.watch != nil {
		l.watch.close()
	}
	wg.Wait()
	l.bg.close() // no clean-up is added once closed
	return nil
}

// Streaming reports whether this Locker's waiters are told of releases by
// a change stream right now. It is false while nothing waits (the stream
// opens with the first waiter and closes a second after the last), when
// the server has no change streams (a standalone server: waiters poll
// instead), while its change events come too late to wait on (then the
// stream closes for a minute at a time, see docs/replica-sets.md), and
// with WithChangeStreams(false). It never blocks.
func (l *Locker) Streaming() bool {
	return l.waits.waitsOnStream()
}

// ready checks that the Locker is open and ctx alive, and brings the
// estimate of the server's clock up to date.
func (l *Locker) ready(ctx context.Context) error {
	if err := l.isClosed(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := l.clock.Ensure(ctx); err != nil {
		return err
	}
	l.probe(ctx)
	return nil
}

// readyFor is ready for a call on the lock name: it checks the name first,
// so that a bad one changes nothing and costs no round trip.
func (l *Locker) readyFor(ctx context.Context, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	return l.ready(ctx)
}

// readLive returns the document of the lock name if a holder's lease on it
// is live, and nil when the lock is free or expired. It reads with
// majority read concern (store.report): it names the holder to a caller.
func (l *Locker) readLive(ctx context.Context, name string) (*lockDoc, error) {
	if err := l.readyFor(ctx, name); err != nil {
		return nil, err
	}
	doc, err := l.store.report(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("mongolock: reading %q: %w", name, err)
	}
	if !l.held(doc) {
		return nil, nil
	}
	return doc, nil
}

// probe runs once per Locker: it warns when the server is FerretDB, whose
// conditional updates are not atomic without a serialising proxy, and
// creates the index that keepalive renewals use.
func (l *Locker) probe(ctx context.Context) {
	l.probeMu.Lock()
	defer l.probeMu.Unlock()
	if l.probed {
		return
	}
	l.probed = true
	if v := l.store.ferretDB(ctx); v != nil {
		l.opts.logger.Warn("mongolock: the server is FerretDB: its conditional updates are not atomic "+
			"unless a proxy serialises commands (as mongotest does); do not rely on these locks otherwise",
			"ferretdbVersion", v)
	}
	if err := l.store.sessionIndex(ctx); err != nil {
		l.opts.logger.Warn("mongolock: could not create the index on session; renewals will scan", "err", err)
	}
}

// taken describes a successful acquire: the fencing token, the local time
// the attempt was sent with the clock's error then, from which the holder
// counts its lease, the local time the first attempt was sent (a hold may
// start with it, when a reply was lost), the server time the attempt wrote
// as the acquire's, and the other Lockers waiting for the lock.
type taken struct {
	id    string // the document taken: the name, or a semaphore's slot
	fence int64
	sent  time.Time
	first time.Time
	unc   time.Duration
	now   time.Time
	// election is the electionId of the primary whose clock now was
	// read on (leasePast).
	election any
	waiting  waiters
	drained  bool // an RWMutex's writer: no reader was in
}

// take runs one acquire for c, repeated with the same holder token while
// its outcome is unknown (a lost reply), so that a lost reply never leaves
// a lock behind: if ctx ends first, the lock is released in the background
// in case the last attempt took it, and take returns ctx.Err() at once.
// Retries also stop when the Locker closes (ErrClosed) or stop closes
// (stopErr()). It refreshes the estimate of the server's clock when it
// has grown old, so that a long wait keeps judging leases on a fresh one;
// a failed refresh keeps the old estimate.
func (l *Locker) take(ctx context.Context, c claim, stop <-chan struct{}, stopErr func() error) (t taken, ok bool, err error) {
	if err := l.isClosed(); err != nil {
		return t, false, err
	}
	if err := l.clock.Ensure(ctx); err != nil {
		if ctx.Err() != nil {
			return t, false, ctx.Err()
		}
		if !l.clock.Measured() {
			return t, false, err
		}
		l.opts.logger.Debug("mongolock: refreshing the server's clock failed; keeping the last estimate", "err", err)
	}
	c.turns = claimTurns{locker: l.id, fifo: l.opts.fifo}
	pause := 10 * time.Millisecond
	first := time.Now()
	for {
		now, unc, election := l.clock.ReadElection()
		c.election = election
		t = taken{sent: time.Now(), first: first, unc: unc, now: now, election: election}
		var doc *lockDoc
		doc, ok, err = c.kind.take(ctx, l.store, c, now, l.store.over(now.Add(-unc), election))
		if err == nil {
			if ok {
				t.fence, t.waiting, t.id = doc.Fence, doc.Turns.waiters(now, l.opts.window.stale), doc.Name
				t.drained = len(doc.RW.Readers) == 0
			}
			return t, ok, nil
		}
		if !ambiguous(err) || !sleep(ctx, pause) {
			break
		}
		if stopped := l.stopped(stop, stopErr); stopped != nil {
			l.forget(c)
			return t, false, stopped
		}
		l.opts.logger.Debug("mongolock: acquire outcome unknown; retrying with the same token", "name", c.name, "err", err)
		c.retry = true
		pause = min(2*pause, time.Second)
	}
	if ambiguous(err) || ctx.Err() != nil {
		l.forget(c)
	}
	if err := deadlineNear(ctx, err); err != nil {
		return t, false, err
	}
	return t, false, fmt.Errorf("mongolock: acquiring %q: %w", c.name, err)
}

// deadlineNear returns ctx.Err() when ctx ended, or when err says the
// driver did not send a command because ctx's deadline was closer than a
// round trip (then after waiting for it, a round trip at most): the
// caller's deadline, not the server, ended the call. Otherwise nil.
func deadlineNear(ctx context.Context, err error) error {
	if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		if _, ok := ctx.Deadline(); ok {
			<-ctx.Done()
		}
	}
	return ctx.Err()
}

// stopped returns ErrClosed after Close, stopErr() once stop is closed,
// and otherwise nil.
func (l *Locker) stopped(stop <-chan struct{}, stopErr func() error) error {
	if err := l.isClosed(); err != nil {
		return err
	}
	select {
	case <-stop:
		return stopErr()
	default:
		return nil
	}
}

// isClosed returns ErrClosed after Close.
func (l *Locker) isClosed() error {
	select {
	case <-l.closed:
		return ErrClosed
	default:
		return nil
	}
}

// sleep pauses for d, and reports false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// forget releases, in the background and within cleanupTimeout, what an
// attempt for c may have taken unseen: the caller's context may be gone,
// and its caller must not wait for the server. Close waits for these.
func (l *Locker) forget(c claim) {
	l.background(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := c.kind.forget(ctx, l.store, c); err != nil {
			l.opts.logger.Warn("mongolock: could not release what an acquire whose outcome is unknown may have taken; it expires with its lease",
				"name", displayName(c.name), "err", err)
		}
	})
}

// background runs f in a goroutine that Close waits for, or, after Close,
// in the caller, so that nothing outlives it.
func (l *Locker) background(f func()) {
	if !l.bg.start(f) {
		f()
	}
}

// cleanupTimeout bounds releases made after the caller's context is gone.
const cleanupTimeout = 5 * time.Second

// peek returns a function reading name's lock for a waiter: free, or the
// lease end of its live holder, or the end of another Locker's turn at it,
// and whether the lock is kept by no one until then (WithHoldAtLeast): no
// release comes before.
func (l *Locker) peek(name string) func(context.Context) peeked {
	return func(ctx context.Context) peeked {
		doc, err := l.store.read(ctx, name)
		switch {
		case err != nil:
			return peeked{}
		case doc == nil:
			return peeked{free: true}
		case doc.Holder == "" && doc.Turns.Heir != "" && doc.Turns.Heir != l.id && doc.ExpiresAt.After(l.clock.SurelyPast()):
			return peeked{until: doc.ExpiresAt} // another Locker's turn ends then
		case !l.held(doc):
			return peeked{free: true}
		}
		return peeked{until: l.store.leaseEnd(doc), firm: kept(doc.Holder)}
	}
}

// held reports whether doc shows a holder whose lease a taker would not
// yet count as over: takers allow for their clock's error, and so do the
// reads that tell whether a lock is used, so that IsFreeLock and Status
// agree with what GetLock and TryLock would do.
func (l *Locker) held(doc *lockDoc) bool {
	return doc != nil && doc.Holder != "" && l.store.leaseEnd(doc).After(l.clock.SurelyPast())
}

// newToken returns a random holder token: knowing a lock's owner is not
// enough to release or renew it.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}
