package mongolock

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// clockRefresh is how old the estimate of the server's clock may grow
// before the next call that needs it measures it again.
const clockRefresh = time.Minute

// serverClock estimates the server's clock from the local one. Leases are
// written and judged in server time, so that a client whose clock is off
// neither steals a live lock nor believes in a dead one.
type serverClock struct {
	local func() time.Time
	hello func(ctx context.Context) (time.Time, error) // the server's localTime

	refresh sync.Mutex // one measurement at a time

	mu         sync.Mutex
	offset     time.Duration // server minus local
	rtt        time.Duration // round trip of the measurement in use
	measuredAt time.Time     // local, zero before the first measurement
	keptAt     time.Time     // local: when the measurement in use was made
}

// helloTime returns a function asking db for the server's time.
func helloTime(db *mongo.Database) func(context.Context) (time.Time, error) {
	return func(ctx context.Context) (time.Time, error) {
		var reply struct {
			LocalTime time.Time `bson:"localTime"`
		}
		if err := db.RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&reply); err != nil {
			return time.Time{}, err
		}
		if reply.LocalTime.IsZero() {
			return time.Time{}, fmt.Errorf("the hello reply has no localTime")
		}
		return reply.LocalTime, nil
	}
}

// Now returns the estimated server time. The result keeps the local clock's
// monotonic reading, so durations between two results are exact.
func (c *serverClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.local().Add(c.offset)
}

// Uncertainty bounds the error of Now: half the round trip of the
// measurement in use. Leases allow for it on both sides: a holder gives up
// its hold this much earlier, a taker waits this much longer.
func (c *serverClock) Uncertainty() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rtt/2 + time.Millisecond // localTime has millisecond precision
}

// Ensure measures the offset if it was never measured or is older than
// clockRefresh.
func (c *serverClock) Ensure(ctx context.Context) error {
	if !c.stale() {
		return nil
	}
	c.refresh.Lock()
	defer c.refresh.Unlock()
	if !c.stale() { // measured while we waited
		return nil
	}
	c.mu.Lock()
	first := c.keptAt.IsZero()
	c.mu.Unlock()
	if err := c.measure(ctx); err != nil || !first {
		return err
	}
	// The first round trip may include opening a connection, which makes
	// a loose estimate: measure again on the warm one, keep the tighter.
	return c.measure(ctx)
}

func (c *serverClock) stale() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.measuredAt.IsZero() || c.local().Sub(c.measuredAt) > clockRefresh
}

// measure asks the server for its time with hello and assumes the reply was
// made half-way through the round trip.
func (c *serverClock) measure(ctx context.Context) error {
	sent := c.local()
	serverTime, err := c.hello(ctx)
	if err != nil {
		return fmt.Errorf("mongolock: reading the server's clock: %w", err)
	}
	received := c.local()
	rtt := received.Sub(sent)
	mid := sent.Add(rtt / 2)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.measuredAt = received
	// A slow reply (a loaded server, a delaying network) gives a loose
	// estimate: keep the tighter one unless it has grown old.
	if !c.keptAt.IsZero() && rtt > 2*c.rtt+5*time.Millisecond && received.Sub(c.keptAt) < 10*clockRefresh {
		return nil
	}
	c.offset = serverTime.Sub(mid.Round(0))
	c.rtt, c.keptAt = rtt, received
	return nil
}
