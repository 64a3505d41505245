package mongolock

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// defaultClockRefresh is how old the estimate of the server's clock may
// grow before the next call that needs it measures it again.
const defaultClockRefresh = time.Minute

// helloTimeout bounds one measurement of the server's clock, whatever the
// caller's context: a server that stopped answering must not hold up the
// keepalive or Close.
const helloTimeout = 10 * time.Second

// Clock is the local clock a Locker reads. Leases are judged in server
// time, estimated as the server time of the last measurement plus the
// Monotonic time elapsed since it, so that a step of the wall clock (NTP,
// a resumed VM) changes nothing.
type Clock interface {
	// Now returns the local wall-clock time. It may step; the library
	// only reports it, it never judges a lease by it.
	Now() time.Time
	// Monotonic returns the time elapsed since an arbitrary origin. It
	// must never step or go backward.
	Monotonic() time.Duration
}

// systemClock is the machine's clock: time.Now, and its monotonic reading.
type systemClock struct{ origin time.Time }

func (c systemClock) Now() time.Time           { return time.Now() }
func (c systemClock) Monotonic() time.Duration { return time.Since(c.origin) }

// SystemClock returns the machine's clock, the default of WithClock.
func SystemClock() Clock { return systemClock{origin: time.Now()} }

// serverClock estimates the server's clock from the local monotonic one.
// Leases are written and judged in server time, so that a client whose
// clock is off or steps neither steals a live lock nor believes in a dead
// one.
type serverClock struct {
	local Clock
	hello func(ctx context.Context) (time.Time, any, error) // the server's localTime, and the primary's electionId
	every time.Duration                                     // 0: defaultClockRefresh

	refresh chan struct{} // 1-buffered: one measurement at a time

	mu         sync.Mutex    // never held across a round trip
	server     time.Time     // server time of the measurement in use (no monotonic reading)
	at         time.Duration // local monotonic reading it corresponds to
	rtt        time.Duration // round trip of the measurement in use
	measuredAt time.Duration // local monotonic; measured is false before the first
	measured   bool
	// election is the electionId of the primary whose clock was measured
	// (nil on a standalone, or a mongos): whose clock the times written
	// with this estimate are in (leasePast).
	election any
}

func newServerClock(local Clock, hello func(context.Context) (time.Time, any, error), every time.Duration) *serverClock {
	if every <= 0 {
		every = defaultClockRefresh
	}
	return &serverClock{local: local, hello: hello, every: every,
		refresh: make(chan struct{}, 1)}
}

// helloTime returns a function asking db for the server's time, and the
// electionId of the primary that answers (nil when there is none).
func helloTime(db *mongo.Database) func(context.Context) (time.Time, any, error) {
	return func(ctx context.Context) (time.Time, any, error) {
		var reply struct {
			LocalTime  time.Time     `bson:"localTime"`
			ElectionID bson.ObjectID `bson:"electionId"`
		}
		if err := db.RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&reply); err != nil {
			return time.Time{}, nil, err
		}
		if reply.LocalTime.IsZero() {
			return time.Time{}, nil, fmt.Errorf("the hello reply has no localTime")
		}
		if reply.ElectionID.IsZero() {
			return reply.LocalTime, nil, nil
		}
		return reply.LocalTime, reply.ElectionID, nil
	}
}

// Now returns the estimated server time: the server time of the
// measurement in use plus the monotonic time elapsed since. Before the
// first measurement it is the local wall clock.
func (c *serverClock) Now() time.Time {
	now, _ := c.Read()
	return now
}

// Uncertainty bounds the error of Now: half the round trip of the
// measurement in use. Leases allow for it on both sides: a holder gives up
// its hold this much earlier, a taker waits this much longer.
func (c *serverClock) Uncertainty() time.Duration {
	_, unc := c.Read()
	return unc
}

// SurelyPast returns the latest server time that has surely passed,
// whatever the estimate's error: a lease that ended by then is over for
// every reader.
func (c *serverClock) SurelyPast() time.Time {
	now, unc := c.Read()
	return now.Add(-unc)
}

// Read returns Now and Uncertainty of one estimate, read together: the
// times a request writes and the error its holder allows for.
func (c *serverClock) Read() (now time.Time, unc time.Duration) {
	mono := c.local.Monotonic()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readLocked(mono)
}

// readLocked is Read at the local monotonic reading mono, with c.mu held.
func (c *serverClock) readLocked(mono time.Duration) (now time.Time, unc time.Duration) {
	unc = c.rtt/2 + time.Millisecond // localTime has millisecond precision
	if !c.measured {
		return c.local.Now().Round(0), unc
	}
	return c.server.Add(mono - c.at), unc
}

// ReadElection is Read with the electionId of the primary whose clock the
// estimate is of, all of one measurement: a lease written at now is
// stamped with it (leasePast).
func (c *serverClock) ReadElection() (now time.Time, unc time.Duration, election any) {
	mono := c.local.Monotonic()
	c.mu.Lock()
	defer c.mu.Unlock()
	now, unc = c.readLocked(mono)
	return now, unc, c.election
}

// Election returns the electionId of the primary whose clock the estimate
// is of.
func (c *serverClock) Election() any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.election
}

// Measured reports whether the server's clock was measured at least once.
func (c *serverClock) Measured() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.measured
}

// Ensure measures the offset if it was never measured or is older than the
// refresh interval. It returns ctx.Err() if ctx ends while another call
// measures.
func (c *serverClock) Ensure(ctx context.Context) error { return c.ensure(ctx, true) }

// Refresh is Ensure that never waits for another call's measurement: then
// it returns at once. The keepalive uses it so that a slow hello cannot
// hold its next renewal back.
func (c *serverClock) Refresh(ctx context.Context) error { return c.ensure(ctx, false) }

func (c *serverClock) ensure(ctx context.Context, wait bool) error {
	if !c.stale() {
		return nil
	}
	if wait {
		select {
		case c.refresh <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
	} else {
		select {
		case c.refresh <- struct{}{}:
		default:
			return nil // another call measures
		}
	}
	defer func() { <-c.refresh }()
	if !c.stale() { // measured while we waited
		return nil
	}
	c.mu.Lock()
	first := !c.measured
	c.mu.Unlock()
	if err := c.measure(ctx); err != nil || !first {
		return err
	}
	// The first round trip may include opening a connection, which makes
	// a loose estimate: measure again on the warm one, keep the tighter.
	return c.measure(ctx)
}

func (c *serverClock) stale() bool {
	mono := c.local.Monotonic()
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.measured || mono-c.measuredAt > c.every
}

// measure asks the server for its time with hello and assumes the reply was
// made half-way through the round trip.
func (c *serverClock) measure(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, helloTimeout)
	defer cancel()
	sent := c.local.Monotonic()
	serverTime, election, err := c.hello(ctx)
	if err != nil {
		return fmt.Errorf("mongolock: reading the server's clock: %w", err)
	}
	received := c.local.Monotonic()
	rtt := received - sent
	c.mu.Lock()
	defer c.mu.Unlock()
	c.measuredAt = received
	// A slow reply (a loaded server, a delaying network) gives a loose
	// estimate: keep the tighter one unless it has grown old.
	// Not after a failover, though: the new primary's clock is another.
	if c.measured && election == c.election && rtt > 2*c.rtt+5*time.Millisecond && received-c.at < 10*c.every {
		return nil
	}
	c.server, c.at, c.rtt, c.measured, c.election = serverTime.Round(0), sent+rtt/2, rtt, true, election
	return nil
}
