package mongolock_test

// Failovers to a member whose clock differs (docs/replica-sets.md).

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/mongolock/mongolock"
)

// TestFailoverToClockAhead: a failover to a member whose clock is ahead by
// more than a lease's margin (TTL/10) never makes two holders: a lease
// written on the old primary's clock is judged over only the member clock
// skew bound later, so that the new holder's Lock returns only after the
// old holder, cut off, gave its hold up (Done closed).
func TestFailoverToClockAhead(t *testing.T) {
	const ttl, ahead, bound = 3 * time.Second, time.Second, 2 * time.Second
	needsElection(t)
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

// needsElection skips a test on a server that reports no electionId (a
// standalone, mongotest -election-id=false): it has one clock, and a
// failover there would be a restart.
func needsElection(t *testing.T) {
	t.Helper()
	c, _ := connect(t, "")
	if hello(t, c).ElectionID.IsZero() {
		t.Skip("needs a server that reports an electionId (a replica set)")
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
	needsElection(t)
	h := hello(t, c)
	for _, row := range []struct {
		name    string
		clocks  bson.A
		wantErr error
	}{
		{"one clock: the lease is over", bson.A{h.ElectionID}, nil},
		{"mixed clocks: the skew is allowed for", bson.A{h.ElectionID, bson.NewObjectID()}, mongolock.ErrLocked},
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
				bson.D{{Key: "$set", Value: bson.D{{Key: "readersUntil", Value: h.LocalTime.Add(-2 * time.Second)},
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
