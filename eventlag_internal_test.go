package mongolock

import (
	"slices"
	"testing"
	"time"
)

// TestLagsWindow: the lag is the median of the last lagWindow events':
// one event a stall held back does not make events slow; events that all
// come late do; the window forgets what is older; a negative lag (the
// clock estimate's error) counts as none.
func TestLagsWindow(t *testing.T) {
	var l lags
	if l.typical() != 0 {
		t.Fatal("no event: want no lag")
	}
	l = l.add(-3 * time.Millisecond)
	if l.typical() != 0 {
		t.Fatalf("a negative lag: %v, want 0", l.typical())
	}
	l = l.add(time.Second) // one stalled event among quick ones
	for i := range lagWindow - 2 {
		l = l.add(2 * time.Millisecond)
		if i > 0 && l.typical() != 2*time.Millisecond {
			t.Fatalf("after %d quick events: %v, want the quick ones' 2ms", i+1, l.typical())
		}
	}
	for range lagWindow/2 + 1 {
		l = l.add(300 * time.Millisecond)
	}
	if l.typical() != 300*time.Millisecond {
		t.Fatalf("once most events come 300ms late: %v, want 300ms", l.typical())
	}
	if len(l) != lagWindow {
		t.Fatalf("%d kept, want %d", len(l), lagWindow)
	}
}

// TestSlowEventsDecide: with the default poll interval (500ms), events
// up to 50ms late are waited on, later ones are not; once slow, events
// must come within 25ms again. A turn lasts the lag longer, up to a poll
// interval.
func TestSlowEventsDecide(t *testing.T) {
	const poll = DefaultPollInterval
	rows := []struct {
		lag           time.Duration
		wasSlow, slow bool
		turnLongerBy  time.Duration
	}{
		{0, false, false, 0},
		{2 * time.Millisecond, false, false, 2 * time.Millisecond},
		{50 * time.Millisecond, false, false, 50 * time.Millisecond},
		{51 * time.Millisecond, false, true, 51 * time.Millisecond},
		{40 * time.Millisecond, true, true, 40 * time.Millisecond},
		{25 * time.Millisecond, true, false, 25 * time.Millisecond},
		{100 * time.Millisecond, false, true, 100 * time.Millisecond},
		{time.Second, false, true, poll},
		{10 * time.Second, true, true, poll},
	}
	for _, r := range rows {
		if got := slowEvents(r.lag, poll, r.wasSlow); got != r.slow {
			t.Errorf("lag %v (slow before: %v): slow %v, want %v", r.lag, r.wasSlow, got, r.slow)
		}
		// A short poll interval does not make a loaded server's events
		// slow: the bound is never below half a turn.
		if got := slowEvents(r.lag, 20*time.Millisecond, r.wasSlow); got != r.slow {
			t.Errorf("poll 20ms, lag %v (slow before: %v): slow %v, want %v", r.lag, r.wasSlow, got, r.slow)
		}
		if got := turnLag(r.lag, poll); got != r.turnLongerBy {
			t.Errorf("lag %v: turns longer by %v, want %v", r.lag, got, r.turnLongerBy)
		}
	}
}

// TestEventLagSwitchesWaiting: slow events make the registry's waiters
// poll (streamOn false) while the stream stays up, and timely ones bring
// them back; a stream that is down is never waited on.
func TestEventLagSwitchesWaiting(t *testing.T) {
	r := eventsRegistry()
	steps := []struct {
		lag  time.Duration
		want bool
	}{{time.Millisecond, true}, {time.Second, false}, {40 * time.Millisecond, false}, {10 * time.Millisecond, true}}
	for _, s := range steps {
		r.eventLag(s.lag)
		if r.streamOn() != s.want {
			t.Fatalf("lag %v: streamOn %v, want %v", s.lag, r.streamOn(), s.want)
		}
	}
	r.streaming(false)
	r.eventLag(time.Millisecond)
	if r.streamOn() {
		t.Fatal("stream down: streamOn")
	}
}

// TestSlowEventsForgetJoiners: the joins the stream told of are dropped
// when events become too slow to wait on, and none is recorded while
// waiters poll: no acquire's event comes to clear them any more, and a
// release would name a Locker that polls now as a streaming heir, whose
// turn the others would wait out (with them, contention ran at about 80% of
// polling's rate).
func TestSlowEventsForgetJoiners(t *testing.T) {
	r, q := holdingOnTimelyEvents("job")
	r.joined("job", "other")
	if len(q.member.joiners) != 1 {
		t.Fatalf("joiners %v while streaming, want the one told", q.member.joiners)
	}
	r.eventLag(time.Second)
	if len(q.member.joiners) != 0 {
		t.Fatalf("joiners %v once events are slow, want none", q.member.joiners)
	}
	r.joined("job", "another")
	if len(q.member.joiners) != 0 {
		t.Fatalf("joiners %v recorded while polling, want none", q.member.joiners)
	}
}

// TestStreamDropKeepsJoiners: a stream that only goes down (a failover, a
// cut) keeps the joins it told of during this process's hold: it resumes
// and tells what it missed, and a Locker that rejoined after its entry
// grew stale must not be removed as stale by the release meanwhile.
func TestStreamDropKeepsJoiners(t *testing.T) {
	r, _ := holdingOnTimelyEvents("job")
	r.joined("job", "rejoined")
	r.streaming(false)
	if got := r.staleOf("job", waiters{stale: []string{"rejoined", "dead"}}); !slices.Equal(got, []string{"dead"}) {
		t.Fatalf("stale after a drop of the stream: %v, want only [dead]", got)
	}
}

// eventsRegistry is a registry with the default intervals whose change
// stream is up, on the system clock.
func eventsRegistry() *waitRegistry {
	r := newWaitRegistry(options{pollInterval: DefaultPollInterval, safetyPoll: DefaultSafetyPollInterval, window: defaultWindow},
		newServerClock(SystemClock(), nil, 0), make(chan struct{}))
	r.streaming(true)
	return r
}

// holdingOnTimelyEvents is an eventsRegistry whose events come in time,
// with a hold of this process on name (joins are recorded for its
// release), and name's queue.
func holdingOnTimelyEvents(name string) (*waitRegistry, *nameQueue) {
	r := eventsRegistry()
	r.eventLag(time.Millisecond)
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue(name)
	q.local = 1
	return r, q
}

// TestLagMeter: events written before their cursor opened (the replay of
// a stream the watcher resumed, or of a cursor the driver opened by
// resuming inside Next, told by its new id) are not measured, however
// many batches they take, nor are events without a wallTime (servers
// before 6.0); the lag is judged once lagWindow events were measured, in
// as many of the stream's runs as they take, and afresh after a pause.
func TestLagMeter(t *testing.T) {
	server := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	const ms = time.Millisecond
	m := &lagMeter{now: func() time.Time { return server }}
	m.open(1, false) // a new stream: nothing replayed
	for i := range lagWindow {
		if _, ok := m.typical(); ok {
			t.Fatalf("judged after %d events, want %d", i, lagWindow)
		}
		if i == lagWindow/2 {
			m.open(2, false) // a run ended (no waiter), another began
		}
		m.measure(server.Add(-2*ms), m.cursor)
		server = server.Add(ms)
	}
	if d, ok := m.typical(); !ok || d != 2*ms {
		t.Fatalf("after %d events 2ms late: %v %v", lagWindow, d, ok)
	}
	// The driver resumed on cursor 3 after 5s down: 600 events written
	// meanwhile, then live ones.
	outage := server
	server = server.Add(5 * time.Second)
	for i := range 600 {
		m.measure(outage.Add(time.Duration(i)*ms), 3)
	}
	m.measure(time.Time{}, 3) // no wallTime
	if d, _ := m.typical(); d != 2*ms || !slices.Equal(m.lags, slices.Repeat(lags{2 * ms}, lagWindow)) {
		t.Fatalf("after the replay: %v %v, want the 2ms measured before it alone", d, m.lags)
	}
	server = server.Add(time.Second)
	m.measure(server.Add(-400*ms), 3) // one live event the busy server held back
	if d, _ := m.typical(); d != 2*ms || m.lags[lagWindow-1] != 400*ms {
		t.Fatalf("after one late live event: %v %v, want it measured and the median 2ms", d, m.lags)
	}
	for range lagWindow {
		server = server.Add(10 * ms)
		m.measure(server.Add(-300*ms), 3) // live, 300ms late
	}
	if d, _ := m.typical(); d != 300*ms {
		t.Fatalf("live events 300ms late after the resume: %v", d)
	}
	// Paused, then the watcher resumes from a token: what was written
	// before it opened is a replay, and the lag is measured afresh.
	m.forget()
	m.open(4, true)
	m.measure(server.Add(-time.Second), 4)
	if _, ok := m.typical(); ok || len(m.lags) != 0 {
		t.Fatalf("after the pause, a replayed event measured: %v", m.lags)
	}
	server = server.Add(time.Second)
	m.measure(server.Add(-400*ms), 4)
	if d, ok := m.typical(); ok || !slices.Equal(m.lags, lags{400 * ms}) {
		t.Fatalf("one live event 400ms late, alone: %v %v %v, want it measured, not judged", d, ok, m.lags)
	}
	// No server clock (the watcher's tests): nothing measured.
	var n lagMeter
	n.open(1, true)
	if n.measure(server, 1); len(n.lags) != 0 {
		t.Fatal("measured without a clock")
	}
}
