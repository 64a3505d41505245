package mongolock_test

import (
	"errors"
	"testing"
	"time"

	"github.com/mongolock/mongolock"
)

func TestAdmin(t *testing.T) {
	e := newEnv(t)
	l, _ := e.locker("")
	ctx := ctxT(t, time.Minute)
	s := session(t, l, mongolock.WithOwner("worker-1"), mongolock.WithTTL(5*time.Second),
		mongolock.WithRenewInterval(100*time.Millisecond))
	m := s.NewMutex("jobs/a")
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.GetLock(ctx, "jobs/b", "seed-owner", 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := l.ReleaseLock(ctx, "jobs/b", "seed-owner"); err != nil {
		t.Fatal(err)
	}
	if err := s.NewElection("leaders/x").Campaign(ctx, "10.0.0.1:80"); err != nil {
		t.Fatal(err)
	}

	all, err := l.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || all[0].Name != "jobs/a" || all[1].Name != "jobs/b" || all[2].Name != "leaders/x" {
		t.Fatalf("List = %+v", all)
	}
	jobs, err := l.List(ctx, "jobs/")
	if err != nil || len(jobs) != 2 {
		t.Fatalf("List(jobs/) = %+v, %v", jobs, err)
	}
	if a := jobs[0]; !a.Held || a.Owner != "worker-1" || a.Token != m.Token() || !a.ExpiresAt.After(a.AcquiredAt) {
		t.Fatalf("jobs/a = %+v", a)
	}
	if b := jobs[1]; b.Held || b.Owner != "seed-owner" || b.Token != 1 {
		t.Fatalf("jobs/b = %+v", b)
	}
	if x, _ := l.Status(ctx, "leaders/x"); !x.Held || x.Value != "10.0.0.1:80" {
		t.Fatalf("leaders/x = %+v", x)
	}
	if none, err := l.Status(ctx, "never"); err != nil || none.Held || none.Token != 0 {
		t.Fatalf("Status(never) = %+v, %v", none, err)
	}
	if _, err := l.Status(ctx, ""); !errors.Is(err, mongolock.ErrInvalidName) {
		t.Fatalf("Status(\"\") = %v", err)
	}

	// Force release: the holder learns at its next renewal; the token grows.
	old := m.Token()
	if err := l.ForceRelease(ctx, "jobs/a"); err != nil {
		t.Fatal(err)
	}
	<-m.Done()
	if !errors.Is(m.Err(), mongolock.ErrLockLost) {
		t.Fatalf("holder's Err after force release = %v", m.Err())
	}
	if err := m.Unlock(); !errors.Is(err, mongolock.ErrLockLost) {
		t.Fatalf("Unlock after force release = %v", err)
	}
	if err := l.ForceRelease(ctx, "jobs/a"); !errors.Is(err, mongolock.ErrNotHeld) {
		t.Fatalf("second ForceRelease = %v", err)
	}
	m2 := s.NewMutex("jobs/a")
	if err := m2.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if m2.Token() <= old {
		t.Fatalf("token after force release %d, before %d", m2.Token(), old)
	}
	select {
	case <-s.Done():
		t.Fatal("the session ended with one lost lock")
	default:
	}
}
