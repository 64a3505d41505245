package mongolock_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/mongolock/mongolock"
)

// waitFor waits until s was recorded, failing the test when ctx ends.
func (e *recorded) waitFor(t *testing.T, ctx context.Context, s string) {
	t.Helper()
	for !slices.Contains(e.all(), s) {
		if ctx.Err() != nil {
			t.Fatalf("%q never came: %v", s, e.all())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// before fails the test unless a was recorded before b.
func (e *recorded) before(t *testing.T, a, b string) {
	t.Helper()
	got := e.all()
	if i, j := slices.Index(got, a), slices.Index(got, b); i < 0 || j < 0 || i > j {
		t.Fatalf("want %q before %q: %v", a, b, got)
	}
}

// TestShutdownWaitsForLead (issue 22, item 1): process A leads with a
// lead that needs 300ms to stop once its context is cancelled; A's
// session ends (Close, its context, or A's Locker closes) while B
// campaigns. B's lead starts only after A's returned.
func TestShutdownWaitsForLead(t *testing.T) {
	for _, how := range []string{"Session.Close", "session context", "Locker.Close", "Resign"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t)
			ctx := ctxT(t, time.Minute)
			var ev recorded
			la, _ := e.locker("")
			lb, _ := e.locker("")
			sctx, endSession := context.WithCancel(ctx)
			defer endSession()
			sa, err := la.NewSession(sctx)
			if err != nil {
				t.Fatal(err)
			}
			defer sa.Close()
			doneA := make(chan error, 1)
			runA, stopA := context.WithCancel(ctx)
			defer stopA()
			ea := sa.NewElection("leader")
			go func() {
				doneA <- ea.Run(runA, "A", func(ctx context.Context) {
					ev.add("A leads")
					<-ctx.Done()
					time.Sleep(300 * time.Millisecond) // flushing, closing files
					ev.add("A returned")
				})
			}()
			ev.waitFor(t, ctx, "A leads")
			sb := session(t, lb)
			runB, stopB := context.WithCancel(ctx)
			doneB := make(chan error, 1)
			go func() {
				doneB <- sb.NewElection("leader").Run(runB, "B", func(ctx context.Context) {
					ev.add("B leads")
					<-ctx.Done()
				})
			}()
			switch how {
			case "Session.Close":
				if err := sa.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				ev.add("A closed")
				ev.before(t, "A returned", "A closed") // Close waited for the lead
			case "session context":
				endSession()
			case "Locker.Close":
				la.Close()
				ev.add("A closed")
				ev.before(t, "A returned", "A closed")
			case "Resign": // from another goroutine than Run's
				if err := ea.Resign(ctx); err != nil {
					t.Fatalf("Resign: %v", err)
				}
				info, err := lb.Status(ctx, "leader")
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Contains(ev.all(), "A returned") && (!info.Held || info.Value != "A") {
					t.Fatalf("Resign freed the leadership while A's lead still ran: %+v", info)
				}
				stopA() // or A's Run campaigns again
			}
			ev.waitFor(t, ctx, "B leads")
			ev.before(t, "A returned", "B leads")
			stopA()
			if err := <-doneA; err == nil {
				t.Fatal("A's Run returned nil after its session or Locker ended")
			}
			stopB()
			<-doneB
		})
	}
}

// TestShutdownLeadThatNeverReturns (issue 22, item 1): a lead that does
// not return when its context is cancelled: Session.Close returns by the
// lease's end, with an error, without freeing the lock, and B's
// leadership begins no earlier than A's lease end as written.
func TestShutdownLeadThatNeverReturns(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, time.Minute)
	la, _ := e.locker("")
	lb, _ := e.locker("", mongolock.WithPollInterval(20*time.Millisecond))
	sa, err := la.NewSession(ctx, mongolock.WithTTL(time.Second), mongolock.WithRenewInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	leading := make(chan struct{})
	doneA := make(chan error, 1)
	go func() {
		doneA <- sa.NewElection("leader").Run(ctx, "A", func(context.Context) {
			close(leading)
			<-release // ignores its context
		})
	}()
	<-leading
	sb := session(t, lb)
	bLeads := make(chan error, 1)
	go func() { bLeads <- sb.NewElection("leader").Campaign(ctx, "B") }()
	if err := sa.Close(); !errors.Is(err, mongolock.ErrLockLost) {
		t.Fatalf("Close with a lead still running = %v, want ErrLockLost (given up, left to run out)", err)
	}
	lost, err := lb.Status(ctx, "leader") // A's lease as written, B not yet in
	if err != nil {
		t.Fatal(err)
	}
	if lost.Value != "A" || !lost.Held {
		t.Fatalf("after Close, the lock shows %+v: A's lease was freed early", lost)
	}
	if err := <-bLeads; err != nil {
		t.Fatal(err)
	}
	taken, err := lb.Status(ctx, "leader")
	if err != nil {
		t.Fatal(err)
	}
	if taken.AcquiredAt.Before(lost.ExpiresAt) {
		t.Fatalf("B led from %v, %v before A's lease end", taken.AcquiredAt, lost.ExpiresAt.Sub(taken.AcquiredAt))
	}
	close(release)
	<-doneA
}

// TestWaitForUnlock (issue 22, item 1): a Mutex made WithWaitForUnlock
// whose session closes while its holder still works is freed only at
// Unlock: another session's TryLock fails until then.
func TestWaitForUnlock(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, time.Minute)
	la, _ := e.locker("")
	lb, _ := e.locker("")
	sa, err := la.NewSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := sa.NewMutex("job", mongolock.WithWaitForUnlock())
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- sa.Close() }()
	<-m.Done() // the hold ended in this process at once
	other := session(t, lb).NewMutex("job")
	if err := other.TryLock(ctx); !errors.Is(err, mongolock.ErrLocked) {
		t.Fatalf("TryLock while the job works after its session's Close = %v, want ErrLocked", err)
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) before Unlock", err)
	default:
	}
	m.Unlock()
	if err := <-closed; err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := other.TryLock(ctx); err != nil {
		t.Fatalf("TryLock after Unlock = %v", err)
	}
	other.Unlock()
}

// TestResignInsideLead: a lead that resigns (then finishes its work) is
// not blocked by Resign, and the leadership is freed only once lead
// returned.
func TestResignInsideLead(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, time.Minute)
	var ev recorded
	la, _ := e.locker("")
	lb, _ := e.locker("")
	ea := session(t, la).NewElection("leader")
	runA, stopA := context.WithCancel(ctx)
	doneA := make(chan error, 1)
	bWaits := make(chan struct{})
	go func() {
		doneA <- ea.Run(runA, "A", func(context.Context) {
			<-bWaits
			if err := ea.Resign(ctx); err != nil {
				t.Errorf("Resign inside lead: %v", err)
			}
			ev.add("A resigned")
			time.Sleep(200 * time.Millisecond) // finishing its work
			ev.add("A returned")
			stopA()
		})
	}()
	eb := session(t, lb).NewElection("leader")
	bLeads := make(chan error, 1)
	go func() { bLeads <- eb.Campaign(ctx, "B") }()
	time.Sleep(50 * time.Millisecond) // B waits (or is about to)
	close(bWaits)
	if err := <-bLeads; err != nil {
		t.Fatal(err)
	}
	ev.add("B leads")
	ev.before(t, "A resigned", "A returned")
	ev.before(t, "A returned", "B leads")
	<-doneA
}
