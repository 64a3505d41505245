package mongolock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mongolock/mongolock"
)

// TestSeedSemantics walks the seed package's string-lock API through its
// table of behaviours, in order, on one collection.
func TestSeedSemantics(t *testing.T) {
	e := newEnv(t)
	l, _ := e.locker("", mongolock.WithPollInterval(50*time.Millisecond))
	ctx := ctxT(t, time.Minute)
	is := func(err, want error) bool {
		if want == nil {
			return err == nil
		}
		return errors.Is(err, want)
	}
	steps := []struct {
		what string
		call func() error
		want error
	}{
		{"get a free lock", func() error { return l.GetLock(ctx, "job", "alice", 0, time.Minute) }, nil},
		{"another owner, no wait", func() error { return l.GetLock(ctx, "job", "bob", 0, time.Minute) }, mongolock.ErrLocked},
		{"another owner, wait elapses", func() error { return l.GetLock(ctx, "job", "bob", 100*time.Millisecond, time.Minute) }, context.DeadlineExceeded},
		{"same owner again", func() error { return l.GetLock(ctx, "job", "alice", 0, time.Minute) }, nil},
		{"release by another owner", func() error { return l.ReleaseLock(ctx, "job", "bob") }, mongolock.ErrNotHeld},
		{"renew by another owner", func() error { return l.RenewLock(ctx, "job", "bob", time.Minute) }, mongolock.ErrNotHeld},
		{"renew by the owner", func() error { return l.RenewLock(ctx, "job", "alice", time.Minute) }, nil},
		{"used by the owner", func() error { return wantOwner(ctx, l, "job", "alice") }, nil},
		{"release by the owner", func() error { return l.ReleaseLock(ctx, "job", "alice") }, nil},
		{"free after release", func() error { return wantOwner(ctx, l, "job", "") }, nil},
		{"release again", func() error { return l.ReleaseLock(ctx, "job", "alice") }, mongolock.ErrNotHeld},
		{"renew after release", func() error { return l.RenewLock(ctx, "job", "alice", time.Minute) }, mongolock.ErrNotHeld},
		{"still free after that renew", func() error { return wantOwner(ctx, l, "job", "") }, nil},
		{"renew a lock never taken", func() error { return l.RenewLock(ctx, "never", "alice", time.Minute) }, mongolock.ErrNotHeld},
		{"never taken is free", func() error { return wantOwner(ctx, l, "never", "") }, nil},
		{"short lease", func() error { return l.GetLock(ctx, "short", "alice", 0, 300*time.Millisecond) }, nil},
		{"taken over by a waiter at expiry", func() error { return l.GetLock(ctx, "short", "bob", 5*time.Second, time.Minute) }, nil},
		{"expired owner cannot renew", func() error { return l.RenewLock(ctx, "short", "alice", time.Minute) }, mongolock.ErrNotHeld},
		{"expired owner cannot release", func() error { return l.ReleaseLock(ctx, "short", "alice") }, mongolock.ErrNotHeld},
		{"new owner holds it", func() error { return wantOwner(ctx, l, "short", "bob") }, nil},
		{"default TTL", func() error { return l.GetLock(ctx, "dflt", "carol", 0, 0) }, nil},
		{"default TTL holds", func() error { return wantOwner(ctx, l, "dflt", "carol") }, nil},
	}
	for _, s := range steps {
		if err := s.call(); !is(err, s.want) {
			t.Fatalf("%s: got %v, want %v", s.what, err, s.want)
		}
	}

	// The wait timeout matches both ErrLocked and DeadlineExceeded.
	err := l.GetLock(ctx, "dflt", "dave", 50*time.Millisecond, time.Minute)
	if !errors.Is(err, mongolock.ErrLocked) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait timeout: %v", err)
	}
	// A cancelled wait returns the context's error.
	cctx, cancel := context.WithCancel(ctx)
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	if err := l.GetLock(cctx, "dflt", "dave", -1, time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
	// A waiter gets the lock when its owner releases it.
	got := make(chan error, 1)
	go func() { got <- l.GetLock(ctx, "dflt", "erin", 10*time.Second, time.Minute) }()
	time.Sleep(50 * time.Millisecond)
	if err := l.ReleaseLock(ctx, "dflt", "carol"); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiter after release: %v", err)
	}
	if err := wantOwner(ctx, l, "dflt", "erin"); err != nil {
		t.Fatal(err)
	}
}

func wantOwner(ctx context.Context, l *mongolock.Locker, name, want string) error {
	owner, err := l.IsUsedLock(ctx, name)
	if err != nil {
		return err
	}
	free, err := l.IsFreeLock(ctx, name)
	if err != nil {
		return err
	}
	if owner != want || free != (want == "") {
		return errors.New("IsUsedLock = " + owner + ", want " + want)
	}
	return nil
}
