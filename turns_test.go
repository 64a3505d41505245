package mongolock_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/mongolock/mongolock"
)

// TestTurnsGoRound: two processes with six waiting goroutines each take a
// contended lock in turns of at most runLength (4) holds, where each used to
// hand the lock to its own waiters until they were all served; and after
// the first free-for-all, no acquire fails.
func TestTurnsGoRound(t *testing.T) {
	if !hasChangeStreams(t) {
		t.Skip("turns need change streams")
	}
	e := newEnv(t)
	ctx := ctxT(t, time.Minute)
	a, _ := e.locker("")
	held := session(t, a).NewMutex("rr")
	if err := held.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []string
	var failed int
	var wg sync.WaitGroup
	var counters []*counter
	for _, name := range []string{"B", "C"} {
		l, cnt := e.locker("")
		counters = append(counters, cnt)
		s := session(t, l)
		for range 6 {
			m := s.NewMutex("rr")
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := m.Lock(ctx); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				order = append(order, name)
				mu.Unlock()
				time.Sleep(20 * time.Millisecond) // the guarded work
				if err := m.Unlock(); err != nil {
					t.Error(err)
				}
			}()
		}
	}
	time.Sleep(time.Second) // both heads tried, failed and joined the waiting processes
	for _, c := range counters {
		c.Reset()
	}
	if err := held.Unlock(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for _, c := range counters {
		for _, name := range c.Commands() {
			if name == "findAndModify" {
				failed++
			}
		}
	}
	failed -= 12
	t.Logf("order %v; %d acquires failed", order, failed)
	run, other := 1, map[string]int{"B": 6, "C": 6}
	other[order[0]]--
	for i := 1; i < len(order); i++ {
		other[order[i]]--
		if order[i] != order[i-1] {
			run = 1
			continue
		}
		run++
		rival := "B"
		if order[i] == "B" {
			rival = "C"
		}
		if run > 4 && other[rival] > 0 {
			t.Fatalf("order %v: %d holds in a row by %s while the other waited", order, run, order[i])
		}
	}
	// The release by A names no heir (its acquire saw no one waiting): B
	// and C both try once, one fails. Then every release names the heir.
	if failed > 1 {
		t.Fatalf("%d acquires failed after the first release, want at most 1", failed)
	}
}

// TestTurnOfAbsentHeir: a release that names as heir a process that is
// gone (here one that never existed) delays the next taker by the turn's
// grace only, and takes the absent one out of the waiting processes.
func TestTurnOfAbsentHeir(t *testing.T) {
	if !hasChangeStreams(t) {
		t.Skip("turns need change streams")
	}
	e := newEnv(t)
	ctx := ctxT(t, time.Minute)
	a, _ := e.locker("")
	m := session(t, a).NewMutex("ghost")
	c, _ := connect(t, "")
	coll := c.Database(testDB).Collection(e.coll)
	// The ghost waits before A's acquire, which then sees it.
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "ghost"}, {Key: "holder", Value: nil},
		{Key: "fence", Value: int64(0)}, {Key: "waiting", Value: bson.D{{Key: "ghost", Value: time.Now()}}}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ := e.locker("")
	next := session(t, b).NewMutex("ghost")
	got := make(chan error, 1)
	go func() { got <- next.Lock(ctx) }()
	time.Sleep(500 * time.Millisecond) // B tried, failed and watches
	if err := m.Unlock(); err != nil {
		t.Fatal(err)
	}
	var doc bson.M
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "ghost"}}).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if doc["heir"] != "ghost" {
		t.Fatalf("after the release: heir %v, want ghost", doc["heir"])
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	defer next.Unlock()
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "ghost"}}).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	waiting, _ := doc["waiting"].(bson.M)
	if _, still := waiting["ghost"]; still || doc["heir"] != nil {
		t.Fatalf("after B took it: heir %v, waiting %v; want no heir and no ghost", doc["heir"], waiting)
	}
}

// TestWaitAgainRightAfterGivingUp: processes whose waiters all gave up
// (their contexts ended) and that wait again at once still get their
// turns. Each leaves the waiting Lockers in the background; the new wait's
// join used to land before that leave and be undone by it, and with
// change streams the process, believing itself among the waiting Lockers,
// was never named in a turn: of 8 processes, 2 to 4 got no acquisition in
// 400 (until the entry's refresh, 10s later).
func TestWaitAgainRightAfterGivingUp(t *testing.T) {
	modes := []bool{false}
	if hasChangeStreams(t) {
		modes = append(modes, true)
	}
	for _, streams := range modes {
		t.Run(fmt.Sprintf("change streams %v", streams), func(t *testing.T) {
			const procs, total = 8, 400
			c := newContenders(newEnv(t), procs, mongolock.WithChangeStreams(streams))
			for round := range 2 {
				c.contend(t, 4, "again", 64, time.Minute) // ends with every process's waiters giving up
				got := c.contend(t, 4, "again", total, time.Minute)
				t.Logf("round %d: shares of %d: %v", round, got.n, got.shares)
				if got.n < total {
					t.Fatalf("%d acquisitions in a minute, want %d", got.n, total)
				}
				if lo := slices.Min(got.shares); lo < total/procs/2 {
					t.Fatalf("round %d: shares %v: a process got %d, under half the mean", round, got.shares, lo)
				}
			}
		})
	}
}
