package mongolock

import (
	"context"
	"testing"
	"time"
)

// fakeLink is a local clock and a server whose clock runs offset ahead,
// reached over a link whose requests and replies take the given times.
// now is the true time; the local wall clock reads now + step.
type fakeLink struct {
	now    time.Time
	step   time.Duration // how far the local wall clock has stepped
	offset time.Duration
	delays [][2]time.Duration // per hello: request, reply
}

func (f *fakeLink) Now() time.Time           { return f.now.Add(f.step) }
func (f *fakeLink) Monotonic() time.Duration { return f.now.Sub(time.Unix(0, 0)) }

func (f *fakeLink) hello(context.Context) (time.Time, error) {
	d := f.delays[0]
	if len(f.delays) > 1 {
		f.delays = f.delays[1:]
	}
	f.now = f.now.Add(d[0])
	server := f.now.Add(f.offset)
	f.now = f.now.Add(d[1])
	return server, nil
}

func (f *fakeLink) serverNow() time.Time { return f.now.Add(f.offset) }

func clockError(c *serverClock, f *fakeLink) time.Duration {
	e := c.Now().Sub(f.serverNow())
	if e < 0 {
		e = -e
	}
	return e
}

// TestClockErrorWithinUncertainty: whatever the split of the round trip
// between request and reply, the estimate is off by at most Uncertainty.
func TestClockErrorWithinUncertainty(t *testing.T) {
	for _, d := range [][2]time.Duration{
		{0, 600 * time.Millisecond}, {600 * time.Millisecond, 0}, {300 * time.Millisecond, 300 * time.Millisecond},
	} {
		f := &fakeLink{now: time.Unix(1e9, 0), offset: -time.Minute, delays: [][2]time.Duration{d}}
		c := newServerClock(f, standalone(f.hello), 0)
		if err := c.Ensure(context.Background()); err != nil {
			t.Fatal(err)
		}
		if e, u := clockError(c, f), c.Uncertainty(); e > u {
			t.Fatalf("delays %v: error %v beyond the uncertainty %v", d, e, u)
		}
	}
}

// TestClockKeepsTightestEstimate: the first round trip (with a connection
// to open) is loose, the second tight: the tight one is kept, and a later
// loose refresh does not replace it.
func TestClockKeepsTightestEstimate(t *testing.T) {
	f := &fakeLink{now: time.Unix(1e9, 0), offset: time.Minute, delays: [][2]time.Duration{
		{0, 1200 * time.Millisecond}, // first: the handshake and a slow reply
		{2 * time.Millisecond, 2 * time.Millisecond},
		{0, 800 * time.Millisecond}, // a refresh through a slow moment
	}}
	c := newServerClock(f, standalone(f.hello), 0)
	if err := c.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if u := c.Uncertainty(); u > 5*time.Millisecond {
		t.Fatalf("uncertainty %v after a tight second measurement", u)
	}
	f.now = f.now.Add(2 * defaultClockRefresh)
	if err := c.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if u, e := c.Uncertainty(), clockError(c, f); u > 5*time.Millisecond || e > u {
		t.Fatalf("after a loose refresh: uncertainty %v, error %v", u, e)
	}
}

// TestClockIgnoresWallSteps: the local wall clock steps by +15s and -15s
// (NTP, a resumed VM) while its monotonic reading does not: the estimate of
// the server's time, and so every lease written or judged, does not move.
func TestClockIgnoresWallSteps(t *testing.T) {
	f := &fakeLink{now: time.Unix(1e9, 0), offset: 3 * time.Second, delays: [][2]time.Duration{{time.Millisecond, time.Millisecond}}}
	c := newServerClock(f, standalone(f.hello), 0)
	if err := c.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, step := range []time.Duration{15 * time.Second, -15 * time.Second, 0} {
		f.step = step
		f.now = f.now.Add(time.Second)
		if e, u := clockError(c, f), c.Uncertainty(); e > u {
			t.Fatalf("wall clock stepped %v: estimate off by %v (bound %v)", step, e, u)
		}
		if err := c.Ensure(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRefreshMeasuresWhenFree: a stale estimate is measured again by
// Refresh whenever no other call is measuring, every time.
func TestRefreshMeasuresWhenFree(t *testing.T) {
	f := &fakeLink{now: time.Unix(1e9, 0), delays: [][2]time.Duration{{time.Millisecond, time.Millisecond}}}
	hellos := 0
	c := newServerClock(f, standalone(func(ctx context.Context) (time.Time, error) { hellos++; return f.hello(ctx) }), 0)
	if err := c.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		f.now = f.now.Add(2 * defaultClockRefresh)
		before := hellos
		if err := c.Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
		if hellos != before+1 {
			t.Fatalf("refresh %d of a stale estimate sent %d hellos, want 1", i, hellos-before)
		}
	}
}

// standalone adapts the hello of a server without elections (no
// electionId) to the serverClock's.
func standalone(hello func(context.Context) (time.Time, error)) func(context.Context) (time.Time, any, error) {
	return func(ctx context.Context) (time.Time, any, error) {
		t, err := hello(ctx)
		return t, nil, err
	}
}
