package mongolock_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mongolock/mongolock"
)

// TestElectionRun: two processes run the leader loop; the leader's link is
// cut. The second leads only after the first's lead context was
// cancelled; the stop callback fires only for a process that led; the new
// leader callback sees both leaders; cancelling Run resigns.
func TestElectionRun(t *testing.T) {
	e := newEnv(t)
	proxy, proxied := newCutProxy(t)
	ctx := ctxT(t, time.Minute)
	var mu sync.Mutex
	var events []string
	record := func(s string) {
		mu.Lock()
		events = append(events, s)
		mu.Unlock()
	}
	seen := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(events)
	}
	run := func(l *mongolock.Locker, name string, ttl time.Duration) (context.CancelFunc, chan error) {
		s := session(t, l, mongolock.WithTTL(ttl))
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- s.NewElection("leader").Run(runCtx, name, func(ctx context.Context) {
				record(name + " leads")
				<-ctx.Done()
				record(name + " stops")
			},
				mongolock.OnStoppedLeading(func() { record(name + " stopped callback") }),
				mongolock.OnNewLeader(func(v string) { record(name + " sees " + v) }))
		}()
		return cancel, done
	}
	la, _ := e.locker(proxied, mongolock.WithPollInterval(50*time.Millisecond))
	_, doneA := run(la, "A", 2*time.Second)
	for !slices.Contains(seen(), "A leads") {
		time.Sleep(10 * time.Millisecond)
	}
	lb, _ := e.locker("", mongolock.WithPollInterval(50*time.Millisecond))
	cancelB, doneB := run(lb, "B", 5*time.Second)
	for !slices.Contains(seen(), "B sees A") {
		time.Sleep(10 * time.Millisecond)
	}
	proxy.Cut()
	for !slices.Contains(seen(), "B leads") {
		time.Sleep(10 * time.Millisecond)
	}
	got := seen()
	if i, j := slices.Index(got, "A stops"), slices.Index(got, "B leads"); i < 0 || i > j {
		t.Fatalf("B led before A's lead context was cancelled: %v", got)
	}
	if slices.Contains(got, "B stopped callback") {
		t.Fatalf("the stop callback fired for B before it led: %v", got)
	}
	// A's session ends with its lost lease: its Run returns.
	if err := <-doneA; !errors.Is(err, mongolock.ErrSessionClosed) {
		t.Fatalf("A's Run = %v, want ErrSessionClosed", err)
	}
	for !slices.Contains(seen(), "B sees B") { // B's observer, before B resigns
		if ctx.Err() != nil {
			t.Fatalf("B never saw itself lead: %v", seen())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancelB()
	if err := <-doneB; !errors.Is(err, context.Canceled) {
		t.Fatalf("B's Run = %v, want context.Canceled", err)
	}
	got = seen()
	for _, want := range []string{"A stopped callback", "B stops", "B stopped callback"} {
		if !slices.Contains(got, want) {
			t.Fatalf("no %q in %v", want, got)
		}
	}
	if _, err := session(t, lb).NewElection("leader").Leader(ctx); !errors.Is(err, mongolock.ErrNoLeader) {
		t.Fatalf("after B's Run returned: Leader = %v, want ErrNoLeader (it resigned)", err)
	}
	t.Log(fmt.Sprint(got))
}

// TestElectionRunAfterSessionEnd: Run on a session that ended returns at
// once, and never calls lead.
func TestElectionRunAfterSessionEnd(t *testing.T) {
	e := newEnv(t)
	l, _ := e.locker("")
	s := session(t, l)
	s.Close()
	err := s.NewElection("x").Run(ctxT(t, time.Minute), "v", func(context.Context) { t.Error("lead called") })
	if !errors.Is(err, mongolock.ErrSessionClosed) {
		t.Fatalf("Run after the session ended = %v, want ErrSessionClosed", err)
	}
}

// TestObserveByChangeStream: an observer whose poll interval is a minute
// sees each new leader of another process promptly: from the change
// stream, not by polling.
func TestObserveByChangeStream(t *testing.T) {
	if !hasChangeStreams(t) {
		t.Skip("needs change streams")
	}
	e := newEnv(t)
	ctx := ctxT(t, time.Minute)
	obsL, _ := e.locker("", mongolock.WithPollInterval(time.Minute), mongolock.WithSafetyPollInterval(time.Minute))
	seen := session(t, obsL).NewElection("lead").Observe(ctx)
	for !obsL.Streaming() {
		if ctx.Err() != nil {
			t.Fatal("the observer's change stream never opened")
		}
		time.Sleep(10 * time.Millisecond)
	}
	l, _ := e.locker("")
	for _, v := range []string{"one", "two", "three"} {
		el := session(t, l).NewElection("lead")
		if err := el.Campaign(ctx, v); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		select {
		case got := <-seen:
			if got != v {
				t.Fatalf("observed %q, want %q", got, v)
			}
		case <-wctx.Done():
			t.Fatalf("leader %q not observed in 20s with a poll interval of a minute", v)
		}
		cancel()
		if err := el.Resign(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// One transition per change of leader, kept in the document.
	if st, err := l.Status(ctx, "lead"); err != nil || st.Transitions != 3 {
		t.Fatalf("Status after 3 leaders: %+v, %v; want 3 transitions", st, err)
	}
	el := session(t, l).NewElection("lead")
	if err := el.Campaign(ctx, "four"); err != nil {
		t.Fatal(err)
	}
	if v, n, err := el.Leadership(ctx); v != "four" || n != 4 || err != nil {
		t.Fatalf("Leadership = %q, %d, %v; want four, 4", v, n, err)
	}
}

// TestObserveShortLeaderships: leaderships that end before the observer
// could read the document are still reported, from the change stream's
// events, in order.
func TestObserveShortLeaderships(t *testing.T) {
	if !hasChangeStreams(t) {
		t.Skip("needs change streams")
	}
	e := newEnv(t)
	ctx := ctxT(t, time.Minute)
	obsL, _ := e.locker("", mongolock.WithPollInterval(time.Minute), mongolock.WithSafetyPollInterval(time.Minute))
	seen := session(t, obsL).NewElection("short").Observe(ctx)
	for !obsL.Streaming() {
		if ctx.Err() != nil {
			t.Fatal("the observer's change stream never opened")
		}
		time.Sleep(10 * time.Millisecond)
	}
	l, _ := e.locker("")
	el := session(t, l).NewElection("short")
	want := []string{"one", "two", "three", "four"}
	for _, v := range want {
		if err := el.Campaign(ctx, v); err != nil {
			t.Fatal(err)
		}
		if err := el.Resign(ctx); err != nil { // at once
			t.Fatal(err)
		}
	}
	var got []string
	for len(got) < len(want) {
		select {
		case v := <-seen:
			got = append(got, v)
		case <-time.After(20 * time.Second):
			t.Fatalf("observed %v, want %v", got, want)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("observed %v, want %v", got, want)
	}
}
