package mongolock_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/mongolock/mongolock"
)

// waitingSince returns how many Lockers the lock's document records as
// waiting under WithFIFO.
func waitingSince(t *testing.T, coll, name string) int {
	t.Helper()
	c, _ := connect(t, "")
	var doc struct {
		Since map[string]time.Time `bson:"since"`
	}
	err := c.Database(testDB).Collection(coll).FindOne(context.Background(), bson.D{{Key: "_id", Value: name}}).Decode(&doc)
	if err != nil {
		return 0
	}
	return len(doc.Since)
}

// TestFIFOOrder: with WithFIFO, three processes that began to wait one
// after the other get the lock in that order, whether their waiters are
// told by a change stream or poll, each process's two goroutines one after
// the other, and a releaser with waiters left goes to the back. Mixed
// (issue 28, item 3): B and D do not have WithFIFO, and follow the name's
// rule all the same.
func TestFIFOOrder(t *testing.T) {
	modes := []string{"polling", "polling, mixed"}
	if hasChangeStreams(t) {
		modes = append(modes, "change streams", "change streams, mixed")
	}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			ctx := ctxT(t, time.Minute)
			opts := func(fifo bool) []mongolock.Option {
				return []mongolock.Option{mongolock.WithFIFO(fifo || !strings.HasSuffix(mode, "mixed")),
					mongolock.WithChangeStreams(!strings.HasPrefix(mode, "polling")), mongolock.WithPollInterval(100 * time.Millisecond)}
			}
			a, _ := e.locker("", opts(true)...)
			held := session(t, a).NewMutex("q")
			if err := held.Lock(ctx); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var order []string
			var wg sync.WaitGroup
			for i, name := range []string{"B", "C", "D"} {
				l, _ := e.locker("", opts(name == "C")...)
				s := session(t, l)
				for range 2 {
					m := s.NewMutex("q")
					wg.Go(func() {
						if err := m.Lock(ctx); err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						order = append(order, name)
						mu.Unlock()
						time.Sleep(10 * time.Millisecond)
						if err := m.Unlock(); err != nil {
							t.Error(err)
						}
					})
				}
				// The next process begins to wait once this one is recorded.
				for waitingSince(t, e.coll, "q") < i+1 {
					time.Sleep(10 * time.Millisecond)
				}
			}
			if err := held.Unlock(); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			// Each process's first goroutine in the order they began to
			// wait; each releaser with a waiter left goes to the back.
			want := []string{"B", "C", "D", "B", "C", "D"}
			if fmt.Sprint(order) != fmt.Sprint(want) {
				t.Fatalf("order %v, want %v", order, want)
			}
		})
	}
}

// TestFairShares: 4 processes with 2 goroutines each contend for one name;
// each process's share of the acquisitions is within half the mean of it
// (the benchmark reports the exact spread): by the default turns, with
// change streams or polling (pollturns.go; before turns for pollers,
// shares such as 10..31 of 80), or with half the processes polling
// (within a quarter, over 400), and by WithFIFO with or without streams,
// and when only half the processes have WithFIFO (before the name's rule,
// they had a quarter of the others' holds).
func TestFairShares(t *testing.T) {
	type mode struct {
		name string
		opts []mongolock.Option
		// Acquisitions the shares are judged over, and how far from the
		// mean a share may be, as a fraction of it.
		total  int
		spread float64
	}
	modes := []mode{
		{"turns, polling", []mongolock.Option{mongolock.WithChangeStreams(false)}, 80, .5},
		{"fifo, polling", []mongolock.Option{mongolock.WithFIFO(true), mongolock.WithChangeStreams(false)}, 80, .5},
	}
	if hasChangeStreams(t) {
		modes = append(modes, mode{"turns, change streams", nil, 80, .5}, mode{"fifo, change streams", []mongolock.Option{mongolock.WithFIFO(true)}, 80, .5},
			mode{"fifo mixed, change streams", nil, 80, .5},
			// Half the processes poll, so every run may have up to 8
			// holds (turns.go, pollerRunLength): those before a poller in
			// turn do not get longer runs than the others (with longer
			// runs for them alone, they had twice the others' shares).
			mode{"turns mixed, change streams and polling", nil, 400, .25})
	}
	for _, md := range modes {
		t.Run(md.name, func(t *testing.T) {
			const procs, goroutines = 4, 2
			total := md.total
			e := newEnv(t)
			var c contenders
			for p := range procs {
				opts := append(md.opts, mongolock.WithPollInterval(100*time.Millisecond))
				if strings.HasPrefix(md.name, "fifo mixed") {
					// Half the processes with WithFIFO: the others follow
					// the name's rule (issue 28, item 3).
					opts = append(opts, mongolock.WithFIFO(p%2 == 0))
				}
				if strings.HasPrefix(md.name, "turns mixed") {
					opts = append(opts, mongolock.WithChangeStreams(p%2 == 0))
				}
				l, cnt := e.locker("", opts...)
				c.lockers, c.counters = append(c.lockers, l), append(c.counters, cnt)
			}
			res := c.contend(t, goroutines, "fair", total, 2*time.Minute)
			if res.n < total {
				t.Fatalf("%d acquisitions in 2 minutes, want %d", res.n, total)
			}
			got := res.shares
			t.Logf("shares of %d: %v", res.n, got)
			for _, n := range got {
				if mean := float64(total) / procs; math.Abs(float64(n)-mean) > md.spread*mean {
					t.Fatalf("shares %v: one is not within %.0f%% of the mean (%.0f)", got, 100*md.spread, mean)
				}
			}
		})
	}
}

// TestFIFORoundTrips: with WithFIFO, an uncontended Lock+Unlock is three
// commands: the acquire, the read of who waits, the release.
func TestFIFORoundTrips(t *testing.T) {
	e := newEnv(t)
	l, cnt := e.locker("", mongolock.WithFIFO(true))
	ctx := ctxT(t, time.Minute)
	m := session(t, l).NewMutex("rt")
	for range 2 {
		cnt.Reset()
		if err := m.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		if err := m.Unlock(); err != nil {
			t.Fatal(err)
		}
		if got := cnt.Commands(); len(got) != 3 {
			t.Fatalf("Lock+Unlock with WithFIFO sent %v, want 3 commands", got)
		}
	}
}
