package mongolock_test

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
		ticked <- struct{}{}
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
	if n := countNamed(cnt.Commands(), "update"); n != 2 {
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

func countNamed(names []string, name string) int {
	n := 0
	for _, c := range names {
		if c == name {
			n++
		}
	}
	return n
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

// TestFailoverToClockAhead: a failover to a member whose clock is ahead by
// more than a lease's margin (TTL/10) never makes two holders: a lease
// written on the old primary's clock is judged over only the member clock
// skew bound later, so that the new holder's Lock returns only after the
// old holder, cut off, gave its hold up (Done closed).
func TestFailoverToClockAhead(t *testing.T) {
	const ttl, ahead, bound = 3 * time.Second, time.Second, 2 * time.Second
	p, uri := newCutProxy(t)
	e := newEnv(t)
	la, _ := e.locker(uri, mongolock.WithMemberClockSkew(bound))
	lb, cb := e.locker("", mongolock.WithMemberClockSkew(bound), mongolock.WithClockRefresh(100*time.Millisecond))
	ctx := ctxT(t, time.Minute)
	ma := session(t, la, mongolock.WithTTL(ttl)).NewMutex("job")
	mb := session(t, lb, mongolock.WithTTL(ttl)).NewMutex("job")
	if err := ma.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	fault(t, "failover", bson.E{Key: "clockOffsetMS", Value: ahead.Milliseconds()})
	cb.Reset()
	var mu sync.Mutex
	var order []string
	note := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
	go func() {
		<-ma.Done()
		note("a gave up")
	}()
	if err := mb.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	note("b took")
	<-ma.Done()
	mu.Lock()
	defer mu.Unlock()
	if order[0] != "a gave up" {
		t.Fatalf("events %v: the new holder took the lock while the old one held it", order)
	}
	if !errors.Is(ma.Err(), mongolock.ErrLockLost) {
		t.Fatalf("the cut off hold: %v, want ErrLockLost", ma.Err())
	}
	t.Logf("the taker's attempts: %d", findAndModifies(cb, "job"))
	mb.Unlock()
}

// TestRefusedChangeStreams: a server that refuses change streams (Atlas's
// shared tiers: 8000; a user without the privilege: 13) has waiters poll,
// after one log line and one ChangeStream(false) event, and no attempt to
// open the stream again every few seconds.
func TestRefusedChangeStreams(t *testing.T) {
	for _, code := range []int{8000, 13} {
		t.Run(codeName(code), func(t *testing.T) {
			fault(t, "refuseChangeStreams", bson.E{Key: "code", Value: code}, bson.E{Key: "msg", Value: "refused by the test"})
			e := newEnv(t)
			var logs syncBuffer
			var mu sync.Mutex
			var events []bool
			l, cnt := e.locker("", mongolock.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))),
				mongolock.WithPollInterval(50*time.Millisecond),
				mongolock.WithObserver(mongolock.Observer{ChangeStream: func(on bool) {
					mu.Lock()
					events = append(events, on)
					mu.Unlock()
				}}))
			other, _ := e.locker("")
			ctx := ctxT(t, time.Minute)
			hold := session(t, other).NewMutex("job")
			if err := hold.Lock(ctx); err != nil {
				t.Fatal(err)
			}
			m := session(t, l).NewMutex("job")
			go func() {
				time.Sleep(time.Second)
				hold.Unlock()
			}()
			if err := m.Lock(ctx); err != nil {
				t.Fatal(err)
			}
			m.Unlock()
			if n := strings.Count(logs.String(), "no change streams"); n != 1 {
				t.Fatalf("logged %d times, want once:\n%s", n, logs.String())
			}
			if n := countNamed(cnt.Commands(), "aggregate"); n != 1 {
				t.Fatalf("%d aggregates, want one attempt to open the stream", n)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(events) != 1 || events[0] {
				t.Fatalf("ChangeStream events %v, want one false", events)
			}
			if l.Streaming() {
				t.Fatal("Streaming() after the refusal")
			}
		})
	}
}

func codeName(code int) string {
	return map[int]string{8000: "AtlasError", 13: "Unauthorized"}[code]
}

// TestRenewalIndexHoldsLiveHoldsOnly: released documents leave their
// session's entries of the {session: 1} index, so that after a session
// took and released 5,000 distinct names, the documents its renewal's
// filter can match (all that name the session) are its live holds only.
// On MongoDB, explain's totalDocsExamined of the renewal shows the same
// (README: "Running on a replica set").
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

// TestSlowEventsPoll: change events 300ms late (a sharded cluster's, or
// across regions) are too late to wait on with the default poll interval:
// the Locker's waiters poll (Streaming is false), its stream closes (no
// getMore while it polls), and they still get the lock in turn.
func TestSlowEventsPoll(t *testing.T) {
	fault(t, "delayEvents", bson.E{Key: "ms", Value: 300})
	e := newEnv(t)
	la, _ := e.locker("")
	lb, cb := e.locker("")
	ctx := ctxT(t, time.Minute)
	ma := session(t, la).NewMutex("job")
	mb := session(t, lb).NewMutex("job")
	stop := make(chan struct{})
	var g errgroup.Group
	for _, m := range []*mongolock.Mutex{ma, mb} {
		g.Go(func() error {
			for {
				select {
				case <-stop:
					return nil
				default:
				}
				if err := m.Lock(ctx); err != nil {
					return err
				}
				time.Sleep(50 * time.Millisecond)
				m.Unlock()
			}
		})
	}
	defer func() {
		close(stop)
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for lb.Streaming() || countNamed(cb.Commands(), "getMore") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the waiters still wait on events 300ms late")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	cb.Reset()
	time.Sleep(time.Second)
	if n := countNamed(cb.Commands(), "getMore"); n != 0 {
		t.Fatalf("%d getMores in a second of polling: the stream should be closed", n)
	}
	if n := countNamed(cb.Commands(), "findAndModify"); n == 0 {
		t.Fatal("no acquire in a second: the waiters starve")
	}
}

// TestReadersLeaseOnMixedClocks: an RWMutex's readers all write one lease
// end with $max, each on its own clock estimate; the lease is judged on
// one primary's clock only while every write since the readers were
// cleared was on it (readersClocks): a reader's renewal held back across
// a failover, landing after another's on the new clock, makes the
// writer allow the member clock skew.
func TestReadersLeaseOnMixedClocks(t *testing.T) {
	e := newEnv(t)
	l, _ := e.locker("", mongolock.WithMemberClockSkew(5*time.Second))
	ctx := ctxT(t, time.Minute)
	c, _ := connect(t, "")
	coll := c.Database(testDB).Collection(e.coll)
	var hello struct {
		LocalTime  time.Time     `bson:"localTime"`
		ElectionID bson.ObjectID `bson:"electionId"`
	}
	if err := c.Database("admin").RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&hello); err != nil {
		t.Fatal(err)
	}
	if hello.ElectionID.IsZero() {
		t.Skip("needs a server that reports an electionId")
	}
	for _, row := range []struct {
		name    string
		clocks  bson.A
		wantErr error
	}{
		{"one clock: the lease is over", bson.A{hello.ElectionID}, nil},
		{"mixed clocks: the skew is allowed for", bson.A{hello.ElectionID, bson.NewObjectID()}, mongolock.ErrLocked},
	} {
		t.Run(row.name, func(t *testing.T) {
			name := fmt.Sprint("rw-", len(row.clocks))
			reader := session(t, l).NewRWMutex(name)
			if err := reader.RLock(ctx); err != nil {
				t.Fatal(err)
			}
			// The readers' lease ended 2s ago (server time), within the
			// 5s skew; the reader is still listed.
			res, err := coll.UpdateMany(ctx, bson.D{{Key: "readers.0", Value: bson.D{{Key: "$exists", Value: true}}}},
				bson.D{{Key: "$set", Value: bson.D{{Key: "readersUntil", Value: hello.LocalTime.Add(-2 * time.Second)},
					{Key: "readersClocks", Value: row.clocks}}}})
			if err != nil || res.ModifiedCount != 1 {
				t.Fatalf("setting the readers' lease: %v %+v", err, res)
			}
			writer := session(t, l).NewRWMutex(name)
			if err := writer.TryLock(ctx); !errors.Is(err, row.wantErr) && (row.wantErr != nil || err != nil) {
				t.Fatalf("the writer's TryLock: %v, want %v", err, row.wantErr)
			}
			if row.wantErr == nil {
				writer.Unlock()
			}
		})
	}
}
