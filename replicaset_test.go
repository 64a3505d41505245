package mongolock_test

// Tests of what a replica set does that a single node does not, on
// mongotest's faults (docs/replica-sets.md): writes answered with a
// stepdown's error, renewals across it, the session index, reads that
// name a holder. Members' clocks are in failover_test.go, slow and
// refused change streams in slowevents_test.go.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"golang.org/x/sync/errgroup"

	"github.com/mongolock/mongolock"
)

// fault switches one of mongotest's replica-set faults (mongotest's
// control command) for every client of the server, and switches it off
// at the end of the test. It skips the test on a server that has no such
// switches (MongoDB itself).
func fault(t testing.TB, sw string, args ...bson.E) {
	t.Helper()
	c, _ := connect(t, "")
	run := func(args ...bson.E) error {
		cmd := append(bson.D{{Key: "mongotest", Value: sw}}, args...)
		return c.Database("admin").RunCommand(context.Background(), cmd).Err()
	}
	var ce mongo.CommandError
	if err := run(args...); errors.As(err, &ce) && ce.Code == 59 {
		t.Skip("needs mongotest's fault switches")
	} else if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		switch sw {
		case "failWrites", "failWriteConcern":
			run(bson.E{Key: "n", Value: 0})
		case "delayEvents":
			run(bson.E{Key: "ms", Value: 0})
		case "refuseChangeStreams":
			run(bson.E{Key: "code", Value: 0})
		case "failover":
			run(bson.E{Key: "clockOffsetMS", Value: 0})
		}
	})
}

func failWrites(t testing.TB, n, code int, labels ...string) {
	t.Helper()
	fault(t, "failWrites", bson.E{Key: "n", Value: n}, bson.E{Key: "code", Value: code}, bson.E{Key: "labels", Value: labels})
}

// TestUnknownOutcomeAfterStepdown: an acquire, and then a release, applied
// and answered with a stepdown's error (or a write concern error) are
// taken for an unknown outcome, as a lost reply: the acquire is repeated
// with the same token and holds, the release is repeated and frees the
// lock, so that another session takes it at once (well within a second,
// TTL 20s), and only after the first hold ended; nothing is taken for
// lost. (The other session's waiting writes would meet the fault first:
// it tries once while the lock is held, and again once it was released.)
func TestUnknownOutcomeAfterStepdown(t *testing.T) {
	faults := map[string]func(t *testing.T){
		"PrimarySteppedDown": func(t *testing.T) { failWrites(t, 1, 189, "RetryableWriteError") },
		"InterruptedDueToReplStateChange": func(t *testing.T) {
			failWrites(t, 1, 11602, "RetryableWriteError")
		},
		"NotWritablePrimary, no label": func(t *testing.T) { failWrites(t, 1, 10107) },
		"WriteConcernFailed": func(t *testing.T) {
			fault(t, "failWriteConcern", bson.E{Key: "n", Value: 1}, bson.E{Key: "code", Value: 64})
		},
	}
	for name, inject := range faults {
		for _, on := range []string{"acquire", "release"} {
			t.Run(name+" on the "+on, func(t *testing.T) {
				var logs syncBuffer
				e := newEnv(t)
				la, _ := e.locker("", mongolock.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
				lb, _ := e.locker("")
				ctx := ctxT(t, time.Minute)
				ma := session(t, la, mongolock.WithTTL(20*time.Second)).NewMutex("job")
				mb := session(t, lb, mongolock.WithTTL(20*time.Second)).NewMutex("job")
				if on == "acquire" {
					inject(t)
				}
				if err := ma.TryLock(ctx); err != nil {
					t.Fatalf("TryLock: %v, want the lock (the acquire applied)", err)
				}
				if err := mb.TryLock(ctx); !errors.Is(err, mongolock.ErrLocked) {
					t.Fatalf("another session's TryLock while held: %v, want ErrLocked", err)
				}
				if on == "release" {
					inject(t)
				}
				if err := ma.Unlock(); err != nil {
					t.Fatalf("Unlock: %v", err)
				}
				// Not a wait for the lease: the release went through.
				if err := mb.Lock(ctxT(t, time.Second)); err != nil {
					t.Fatalf("the other session's Lock (1s): %v", err)
				}
				if err := ma.Err(); err != nil {
					t.Fatalf("the first hold's Err: %v", err)
				}
				if strings.Contains(logs.String(), "lost") || strings.Contains(logs.String(), "not confirmed") {
					t.Fatalf("logged as lost:\n%s", logs.String())
				}
				mb.Unlock()
			})
		}
	}
}

// TestRenewalRetriedAfterStepdown: the keepalive's renewal (an update of
// many documents, which the driver never retries) is retried at once
// after a failover's error: one failed renewal costs no tick, and two in
// a row leave a 20s hold kept, its Renewed reporting the failure once.
func TestRenewalRetriedAfterStepdown(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	var renewals, failed int
	ticked := make(chan struct{}, 16)
	l, cnt := e.locker("", mongolock.WithObserver(mongolock.Observer{Renewed: func(holds int, _ time.Duration, err error) {
		mu.Lock()
		renewals++
		if err != nil {
			failed++
		}
		mu.Unlock()
		select {
		case ticked <- struct{}{}:
		default: // never hold the keepalive back
		}
	}}))
	ctx := ctxT(t, time.Minute)
	s := session(t, l, mongolock.WithTTL(20*time.Second), mongolock.WithRenewInterval(300*time.Millisecond))
	m := s.NewMutex("job")
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	<-ticked // a renewal that went through
	cnt.Reset()
	failWrites(t, 1, 189, "RetryableWriteError")
	<-ticked
	mu.Lock()
	if failed != 0 {
		t.Fatalf("a renewal failed on one stepdown error: want it retried")
	}
	mu.Unlock()
	if n := countOf(cnt.Commands(), "update"); n != 2 {
		t.Fatalf("%d update commands in the tick, want 2 (the renewal and its retry)", n)
	}
	failWrites(t, 2, 11602, "RetryableWriteError")
	<-ticked
	<-ticked
	mu.Lock()
	if failed != 1 {
		t.Fatalf("%d failed renewals after two stepdown errors in a row, want 1", failed)
	}
	mu.Unlock()
	if err := m.Err(); err != nil {
		t.Fatalf("the hold: %v, want it kept", err)
	}
	if err := m.Unlock(); err != nil {
		t.Fatal(err)
	}
}

// TestSeedUnknownOutcomeAfterStepdown: GetLock and ReleaseLock answered
// with a stepdown's error after they were applied hold, and free, the
// lock as if they had been answered.
func TestSeedUnknownOutcomeAfterStepdown(t *testing.T) {
	e := newEnv(t)
	l, _ := e.locker("")
	ctx := ctxT(t, time.Minute)
	failWrites(t, 1, 189, "RetryableWriteError")
	if err := l.GetLock(ctx, "job", "a", 0, 20*time.Second); err != nil {
		t.Fatalf("GetLock: %v", err)
	}
	failWrites(t, 1, 189, "RetryableWriteError")
	if err := l.ReleaseLock(ctx, "job", "a"); err != nil {
		t.Fatalf("ReleaseLock: %v", err)
	}
	if free, err := l.IsFreeLock(ctx, "job"); err != nil || !free {
		t.Fatalf("IsFreeLock after the release: %v %v", free, err)
	}
}

// TestRenewalIndexHoldsLiveHoldsOnly: released documents leave their
// session's entries of the {session: 1} index, so that after a session
// took and released 5,000 distinct names, the documents its renewal's
// filter can match (all that name the session) are its live holds only.
// On MongoDB, explain's totalDocsExamined of the renewal shows the same
// (docs/replica-sets.md).
//
// make test takes 300 names (FerretDB scans the collection for every
// command, which makes 5,000 take minutes there); MONGOLOCK_INDEX_NAMES=5000
// takes the 5,000.
func TestRenewalIndexHoldsLiveHoldsOnly(t *testing.T) {
	const live = 3
	names := 300
	if n, err := strconv.Atoi(os.Getenv("MONGOLOCK_INDEX_NAMES")); err == nil && n > 0 {
		names = n
	}
	e := newEnv(t)
	l, _ := e.locker("")
	ctx := ctxT(t, time.Hour)
	s := session(t, l)
	var g errgroup.Group
	for w := range 8 {
		g.Go(func() error {
			for i := w; i < names; i += 8 {
				m := s.NewMutex(fmt.Sprint("entity-", i))
				if err := m.TryLock(ctx); err != nil {
					return err
				}
				if err := m.Unlock(); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	for i := range live {
		if err := s.NewMutex(fmt.Sprint("held-", i)).TryLock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := connect(t, "")
	coll := c.Database(testDB).Collection(e.coll)
	var doc struct {
		Session string `bson:"session"`
	}
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "held-0"}}).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	n, err := coll.CountDocuments(ctx, bson.D{{Key: "session", Value: doc.Session}})
	if err != nil {
		t.Fatal(err)
	}
	if n != live {
		t.Fatalf("%d documents name the session, want its %d live holds", n, live)
	}
	if !mongolock.RenewNow(s) {
		t.Fatal("renewal failed")
	}
}

// TestReportsReadMajority: the reads whose answer names a holder (Status,
// List, Leader, IsUsedLock, Observe) read with majority read concern, so
// that they never report an acquire a failover's rollback undid.
func TestReportsReadMajority(t *testing.T) {
	e := newEnv(t)
	l, cnt := e.locker("")
	ctx := ctxT(t, time.Minute)
	el := session(t, l).NewElection("leader")
	if err := el.Campaign(ctx, "me"); err != nil {
		t.Fatal(err)
	}
	reads := map[string]func() error{
		"Status":     func() error { _, err := l.Status(ctx, "leader"); return err },
		"List":       func() error { _, err := l.List(ctx, ""); return err },
		"Leader":     func() error { _, err := el.Leader(ctx); return err },
		"IsUsedLock": func() error { _, err := l.IsUsedLock(ctx, "leader"); return err },
		"Observe": func() error {
			octx, cancel := context.WithCancel(ctx)
			defer cancel()
			<-el.Observe(octx)
			return nil
		},
	}
	for name, read := range reads {
		cnt.Reset()
		if err := read(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		finds := 0
		for _, b := range cnt.Bodies() {
			if _, ok := b.Lookup("find").StringValueOK(); !ok {
				continue
			}
			finds++
			if lvl, _ := b.Lookup("readConcern", "level").StringValueOK(); lvl != "majority" {
				t.Errorf("%s: find with read concern %q, want majority", name, lvl)
			}
		}
		if finds == 0 {
			t.Errorf("%s: no find sent", name)
		}
	}
}
