package mongolock

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
)

// DefaultTTL is the lease length of a session, and of GetLock called with a
// zero TTL, as in the seed package.
const DefaultTTL = 20 * time.Second

// DefaultPollInterval is the longest pause between two attempts of a waiter
// that has no better news than polling.
const DefaultPollInterval = 500 * time.Millisecond

// DefaultSafetyPollInterval is the longest pause between two attempts of a
// waiter while a change stream brings news of releases.
const DefaultSafetyPollInterval = 5 * time.Second

// Option configures a Locker.
type Option func(*options)

type options struct {
	logger       *slog.Logger
	pollInterval time.Duration
	safetyPoll   time.Duration
	watch        bool
	writeConcern *writeconcern.WriteConcern
	clock        Clock
	clockRefresh time.Duration // 0: defaultClockRefresh; set by tests
	memberSkew   time.Duration // WithMemberClockSkew
	fifo         bool
	window       window // set by tests: rejoinAfter and staleAfter
	observer     Observer
}

// WithLogger sends the Locker's log (fallbacks, warnings, lost holds) to l.
// The default discards it.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithPollInterval sets the longest pause between two attempts of a waiter
// that polls: waiters back off from a small fraction of d up to d, with
// jitter. The default is DefaultPollInterval (500ms).
func WithPollInterval(d time.Duration) Option { return func(o *options) { o.pollInterval = d } }

// WithSafetyPollInterval sets the longest pause between two attempts of a
// waiter while the change stream runs: a missed event then costs at most
// this much latency, never liveness. The default is
// DefaultSafetyPollInterval (5s).
func WithSafetyPollInterval(d time.Duration) Option { return func(o *options) { o.safetyPoll = d } }

// WithChangeStreams turns the change stream that wakes waiters on or off.
// Off, waiters poll. The default is on; the Locker turns it off by itself,
// with one line in the log, where the server has no change streams.
func WithChangeStreams(on bool) Option { return func(o *options) { o.watch = on } }

// WithFIFO serves the processes that wait for a lock in the order they
// began to wait: a release names the one that has waited longest as the
// lock's heir, whether its waiters are told by a change stream or poll,
// and the releaser, if its process still has waiters, joins at the back.
// Within a process, waiters are served in the order they called.
//
// It is one rule for the whole name: a Locker with it marks the lock's
// document when it takes or joins the lock, and while that mark is less
// than 30 seconds old every process that uses the name follows the rule,
// with the option or without (no error: a rolling change of the option
// keeps the order). 30 seconds after the last process with it stopped
// using the name, the name's turns are the default ones again.
//
// It costs one round trip more per Unlock (a read of who waits, and since
// when, before the release); waiting costs what it does with the default
// turns (one write to join, again every 10 seconds). A release to a
// polling process keeps the lock free for that process alone for up to a
// poll interval more, so that it polls within its turn; one that misses
// it keeps its place, until its entry is 30 seconds old (its process
// died). The default, off, gives turns round the waiting processes (see
// "Turns" in docs/fairness.md) and lets a process keep the lock for up to
// 4 holds in a row when its own waiters wait too (up to 8 quick holds
// while a polling process takes part in the turns).
func WithFIFO(on bool) Option { return func(o *options) { o.fifo = on } }

// WithClock replaces the local clock the Locker reads, for tests of clock
// skew and steps: leases are still judged in server time, estimated from
// the server time of a measurement plus this clock's Monotonic time since.
// The default is SystemClock().
func WithClock(c Clock) Option { return func(o *options) { o.clock = c } }

// DefaultMemberClockSkew is the default of WithMemberClockSkew.
const DefaultMemberClockSkew = 5 * time.Second

// WithMemberClockSkew sets the most the clocks of a replica set's members
// may differ by. Leases are written and judged on the primary's clock
// (read with hello); after a failover that is another member's. A lease
// written on another primary's clock than the one a taker reads (each
// lease records the electionId of the primary whose clock it is in) is
// judged over only d later than on the same clock: a takeover of a dead
// holder's lock waits up to d more after a failover, and a new primary's
// clock ahead by up to d never ends a live lease early. The default is
// DefaultMemberClockSkew (5s); on a standalone server or through mongos,
// which report no electionId, it never applies.
func WithMemberClockSkew(d time.Duration) Option { return func(o *options) { o.memberSkew = d } }

// WithWriteConcern sets the write concern of every write. The default is
// majority: a lock acquired with w:1 can be rolled back by a failover and
// end up with two holders.
func WithWriteConcern(wc *writeconcern.WriteConcern) Option {
	return func(o *options) { o.writeConcern = wc }
}

func newOptions(opts []Option) (options, error) {
	o := options{
		logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		pollInterval: DefaultPollInterval,
		safetyPoll:   DefaultSafetyPollInterval,
		window:       defaultWindow,
		watch:        true,
		writeConcern: writeconcern.Majority(),
		clock:        SystemClock(),
		memberSkew:   DefaultMemberClockSkew,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.clock == nil {
		return o, fmt.Errorf("%w: nil clock", ErrInvalidOption)
	}
	if o.logger == nil {
		return o, fmt.Errorf("%w: nil logger", ErrInvalidOption)
	}
	// Below a millisecond a poll interval would only hammer the server.
	if o.pollInterval < time.Millisecond {
		return o, fmt.Errorf("%w: poll interval %v is below 1ms", ErrInvalidOption, o.pollInterval)
	}
	if o.safetyPoll < time.Millisecond {
		return o, fmt.Errorf("%w: safety poll interval %v is below 1ms", ErrInvalidOption, o.safetyPoll)
	}
	if o.writeConcern == nil {
		return o, fmt.Errorf("%w: nil write concern", ErrInvalidOption)
	}
	if o.memberSkew < 0 {
		return o, fmt.Errorf("%w: member clock skew %v is negative", ErrInvalidOption, o.memberSkew)
	}
	return o, nil
}

// SessionOption configures a Session.
type SessionOption func(*sessionOptions)

type sessionOptions struct {
	ttl           time.Duration
	renewInterval time.Duration // 0: ttl/3
	owner         string
}

// WithTTL sets the session's lease length: how long its locks outlive the
// last renewal that reached the server. The default is DefaultTTL (20s).
func WithTTL(d time.Duration) SessionOption { return func(o *sessionOptions) { o.ttl = d } }

// WithRenewInterval sets how often the keepalive goroutine renews the
// session's locks. It must be positive and leave at least two renewals
// before a hold whose renewals fail is given up (a tenth of the TTL before
// its end): at most (TTL - TTL/10) / 2. The default is a third of the TTL.
func WithRenewInterval(d time.Duration) SessionOption {
	return func(o *sessionOptions) { o.renewInterval = d }
}

// WithOwner sets the owner name recorded with every lock the session holds,
// for people and tools to read. The default is "hostname:pid".
func WithOwner(owner string) SessionOption { return func(o *sessionOptions) { o.owner = owner } }

func newSessionOptions(opts []SessionOption) (sessionOptions, error) {
	o := sessionOptions{ttl: DefaultTTL, owner: defaultOwner()}
	for _, opt := range opts {
		opt(&o)
	}
	if err := validTTL(o.ttl); err != nil {
		return o, err
	}
	if o.renewInterval == 0 {
		o.renewInterval = o.ttl / 3
	}
	if most := (o.ttl - safetyMargin(o.ttl)) / 2; o.renewInterval <= 0 || o.renewInterval > most {
		return o, fmt.Errorf("%w: renew interval %v must be positive and at most %v, so that two renewals "+
			"are tried before a hold of TTL %v is given up", ErrInvalidTTL, o.renewInterval, most, o.ttl)
	}
	return o, validOwner(o.owner)
}

func defaultOwner() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return host + ":" + strconv.Itoa(os.Getpid())
}

// MutexOption configures a Mutex's holds.
type MutexOption func(*holdOptions)

// holdOptions bound how long each hold of a Mutex keeps the lock.
type holdOptions struct {
	atLeast time.Duration // 0: an Unlock frees the lock at once
	atMost  time.Duration // 0: no cap
	// waitUnlock: the session's end and Locker.Close free the lock only
	// after Unlock (work.go)
	waitUnlock bool
}

// WithHoldAtLeast keeps the lock taken on the server until d after each
// acquire (server time), however early Unlock comes: an Unlock before then
// ends the hold in this process at once (Done closes, Err stays nil, the
// keepalive stops renewing it) and leaves the lock to expire at
// acquiredAt+d, without an owner that renews it. Until then other holders
// wait (Lock wakes at that time, without polling in between), TryLock and
// GetLock return ErrLocked, and IsUsedLock, Status and List show the lock
// held. Session.Close and the end of the session's context keep it the
// same way. So a job that many hosts start a little apart (cron on
// several machines) runs once per schedule: choose d a little under the
// schedule's period. If the process dies, or the session's lease is lost,
// before Unlock, the lease ends as it would without this option: at most a
// TTL after the last renewal. The default, 0, frees the lock at Unlock.
// A negative d is refused by Lock and TryLock with ErrInvalidOption.
func WithHoldAtLeast(d time.Duration) MutexOption { return func(o *holdOptions) { o.atLeast = d } }

// WithHoldAtMost caps each hold at d after its acquire: then the hold ends
// by itself as a lost one does (Done closes, Err matches ErrHoldCapped and
// so ErrLockLost), and the lock stays taken on the server for the margin a
// lost hold leaves its work to stop (a tenth of the session's TTL), then
// frees. The cap is counted from when the acquire was sent, so it ends the
// hold a round trip early rather than late. The default, 0, is no cap. A
// negative d, or one below WithHoldAtLeast's, is refused by Lock and
// TryLock with ErrInvalidOption.
func WithHoldAtMost(d time.Duration) MutexOption { return func(o *holdOptions) { o.atMost = d } }

// WithWaitForUnlock says that code runs under each hold until Unlock
// (a job that does not watch Done, as a scheduler's): then whatever ends
// the hold early without a loss (Session.Close, the end of the session's
// context, Locker.Close) never frees the lock before Unlock is called. The
// hold ends at once in this process (Done closes, and nothing renews it any
// more), the release is sent at Unlock, and Session.Close and Locker.Close
// wait for it; if Unlock has not come by the time the hold would be given
// up anyway (its lease's end less the safety margin, less than the TTL
// away), the hold is given up as lost, said on the log, and left to run
// out on the server. A lost lease frees nothing either way. The default
// frees the lock at the session's end at once.
func WithWaitForUnlock() MutexOption { return func(o *holdOptions) { o.waitUnlock = true } }

func newHoldOptions(opts []MutexOption) holdOptions {
	var o holdOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o
}

// valid checks the options when a hold is taken, so that a bad value
// changes nothing.
func (o holdOptions) valid() error {
	switch {
	case o.atLeast < 0:
		return fmt.Errorf("%w: WithHoldAtLeast(%v) is negative", ErrInvalidOption, o.atLeast)
	case o.atMost < 0:
		return fmt.Errorf("%w: WithHoldAtMost(%v) is negative", ErrInvalidOption, o.atMost)
	case o.atMost > 0 && o.atMost < o.atLeast:
		return fmt.Errorf("%w: WithHoldAtMost(%v) is below WithHoldAtLeast(%v): the hold would have to end before "+
			"it may", ErrInvalidOption, o.atMost, o.atLeast)
	}
	return nil
}
