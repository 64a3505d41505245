package mongolock_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/mongolock/mongolock"
)

// TestBadInput feeds every entry point bad input: each gets its typed
// error and leaves the collection as it was.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	l, _ := e.locker("")
	client, _ := connect(t, "")
	coll := client.Database(testDB).Collection(e.coll)
	ctx := ctxT(t, time.Minute)

	// Some state to keep: a seed lock of alice, a Mutex hold, a closed
	// session, a closed Locker.
	if err := l.GetLock(ctx, "held", "alice", 0, time.Hour); err != nil {
		t.Fatal(err)
	}
	s := session(t, l, mongolock.WithTTL(time.Hour))
	held := s.NewMutex("mutex")
	if err := held.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	closedSession := session(t, l)
	closedSession.Close()
	closedLocker, _ := e.locker("")
	closedLockerSession := session(t, closedLocker)
	closedLocker.Close()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()

	long := strings.Repeat("n", mongolock.MaxNameLen+1)
	bad := "bad\xff"
	cases := []struct {
		what string
		call func() error
		want error
	}{
		{"New(nil)", func() error { _, err := mongolock.New(nil); return err }, mongolock.ErrNilCollection},
		{"empty name", func() error { return l.GetLock(ctx, "", "a", 0, time.Second) }, mongolock.ErrInvalidName},
		{"long name", func() error { return l.GetLock(ctx, long, "a", 0, time.Second) }, mongolock.ErrInvalidName},
		{"invalid UTF-8 name", func() error { return l.GetLock(ctx, bad, "a", 0, time.Second) }, mongolock.ErrInvalidName},
		{"empty owner", func() error { return l.GetLock(ctx, "n", "", 0, time.Second) }, mongolock.ErrInvalidOwner},
		{"invalid UTF-8 owner", func() error { return l.GetLock(ctx, "n", bad, 0, time.Second) }, mongolock.ErrInvalidOwner},
		{"negative TTL", func() error { return l.GetLock(ctx, "n", "a", 0, -time.Second) }, mongolock.ErrInvalidTTL},
		{"renew negative TTL", func() error { return l.RenewLock(ctx, "held", "alice", -time.Second) }, mongolock.ErrInvalidTTL},
		{"release empty name", func() error { return l.ReleaseLock(ctx, "", "alice") }, mongolock.ErrInvalidName},
		{"renew empty owner", func() error { return l.RenewLock(ctx, "held", "", time.Second) }, mongolock.ErrInvalidOwner},
		{"IsUsedLock long name", func() error { _, err := l.IsUsedLock(ctx, long); return err }, mongolock.ErrInvalidName},
		{"IsFreeLock invalid name", func() error { _, err := l.IsFreeLock(ctx, bad); return err }, mongolock.ErrInvalidName},
		{"release by another owner", func() error { return l.ReleaseLock(ctx, "held", "bob") }, mongolock.ErrNotHeld},
		{"renew by another owner", func() error { return l.RenewLock(ctx, "held", "bob", time.Hour) }, mongolock.ErrNotHeld},
		{"session zero TTL", func() error { return newSession(ctx, l, mongolock.WithTTL(0)) }, mongolock.ErrInvalidTTL},
		{"session negative TTL", func() error { return newSession(ctx, l, mongolock.WithTTL(-time.Second)) }, mongolock.ErrInvalidTTL},
		{"renew interval = TTL", func() error {
			return newSession(ctx, l, mongolock.WithTTL(time.Second), mongolock.WithRenewInterval(time.Second))
		}, mongolock.ErrInvalidTTL},
		{"negative renew interval", func() error { return newSession(ctx, l, mongolock.WithRenewInterval(-1)) }, mongolock.ErrInvalidTTL},
		{"renew interval leaving one renewal", func() error {
			return newSession(ctx, l, mongolock.WithTTL(time.Second), mongolock.WithRenewInterval(500*time.Millisecond))
		}, mongolock.ErrInvalidTTL},
		{"TTL too short for margin and clock error", func() error { return newSession(ctx, l, mongolock.WithTTL(2*time.Millisecond)) }, mongolock.ErrInvalidTTL},
		{"poll interval below 1ms", func() error {
			_, err := mongolock.New(coll, mongolock.WithPollInterval(500*time.Microsecond))
			return err
		}, mongolock.ErrInvalidOption},
		{"safety poll interval 0", func() error {
			_, err := mongolock.New(coll, mongolock.WithSafetyPollInterval(0))
			return err
		}, mongolock.ErrInvalidOption},
		{"empty session owner", func() error { return newSession(ctx, l, mongolock.WithOwner("")) }, mongolock.ErrInvalidOwner},
		{"Mutex empty name", func() error { return s.NewMutex("").Lock(ctx) }, mongolock.ErrInvalidName},
		{"Mutex long name TryLock", func() error { return s.NewMutex(long).TryLock(ctx) }, mongolock.ErrInvalidName},
		{"cancelled GetLock", func() error { return l.GetLock(cancelled, "n", "a", time.Second, time.Second) }, context.Canceled},
		{"cancelled ReleaseLock", func() error { return l.ReleaseLock(cancelled, "held", "alice") }, context.Canceled},
		{"cancelled Lock", func() error { return s.NewMutex("n").Lock(cancelled) }, context.Canceled},
		{"cancelled TryLock", func() error { return s.NewMutex("n").TryLock(cancelled) }, context.Canceled},
		{"cancelled NewSession", func() error { return newSession(cancelled, l) }, context.Canceled},
		{"Unlock never locked", func() error { return s.NewMutex("n").Unlock() }, mongolock.ErrNotHeld},
		{"TryLock of a held name", func() error { return s.NewMutex("mutex").TryLock(ctx) }, mongolock.ErrLocked},
		{"Lock after Session.Close", func() error { return closedSession.NewMutex("n").Lock(ctx) }, mongolock.ErrSessionClosed},
		{"TryLock after Session.Close", func() error { return closedSession.NewMutex("n").TryLock(ctx) }, mongolock.ErrSessionClosed},
		{"GetLock after Locker.Close", func() error { return closedLocker.GetLock(ctx, "n", "a", 0, time.Second) }, mongolock.ErrClosed},
		{"NewSession after Locker.Close", func() error { return newSession(ctx, closedLocker) }, mongolock.ErrClosed},
		{"TryLock after Locker.Close", func() error { return closedLockerSession.NewMutex("n").TryLock(ctx) }, mongolock.ErrClosed},
		{"Campaign after Locker.Close", func() error { return closedLockerSession.NewElection("e").Campaign(ctx, "v") }, mongolock.ErrClosed},
	}
	before := snapshot(t, coll)
	for _, c := range cases {
		if err := c.call(); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.what, err, c.want)
		}
		if after := snapshot(t, coll); !reflect.DeepEqual(before, after) {
			t.Fatalf("%s changed the collection:\nbefore %v\nafter  %v", c.what, before, after)
		}
	}

	// A second Unlock is refused, and only the first changed anything.
	if err := held.Unlock(); err != nil {
		t.Fatal(err)
	}
	before = snapshot(t, coll)
	if err := held.Unlock(); !errors.Is(err, mongolock.ErrNotHeld) {
		t.Fatalf("second Unlock: %v", err)
	}
	if after := snapshot(t, coll); !reflect.DeepEqual(before, after) {
		t.Fatal("second Unlock changed the collection")
	}
}

func newSession(ctx context.Context, l *mongolock.Locker, opts ...mongolock.SessionOption) error {
	s, err := l.NewSession(ctx, opts...)
	if err == nil {
		s.Close()
	}
	return err
}

func snapshot(t *testing.T, coll *mongo.Collection) []bson.M {
	t.Helper()
	cur, err := coll.Find(context.Background(), bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	var docs []bson.M
	if err := cur.All(context.Background(), &docs); err != nil {
		t.Fatal(err)
	}
	return docs
}
