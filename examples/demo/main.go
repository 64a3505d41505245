// Command demo shows mongolock's main job: several workers, each with its
// own client and session as separate hosts would have, compete for one
// lock. Every hold is printed with its owner and fencing token, then a
// summary: acquisitions, the most holders ever seen at once (which must be
// 1), how waiters were woken (by the change stream, or by polling when the
// server has none) with the acquire attempts that failed, and the median
// handoff time.
//
// Run it with `make demo` (embedded server) or with MONGODB_URI set.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"slices"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/mongolock/mongolock"
)

const (
	workers = 4
	rounds  = 5 // holds per worker
)

func main() {
	uri := os.Getenv("MONGODB_URI")
	if uri == "" {
		log.Fatal("set MONGODB_URI, or run `make demo` to use the embedded server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var (
		mu       sync.Mutex
		holders  int
		most     int
		lastEnd  time.Time
		handoffs []time.Duration
		holds    int
		attempts int // acquire commands sent (findAndModify), failed ones included
		lockers  []*mongolock.Locker
	)
	monitor := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		if e.CommandName == "findAndModify" {
			mu.Lock()
			attempts++
			mu.Unlock()
		}
	}}
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		client, err := mongo.Connect(options.Client().ApplyURI(uri).SetMonitor(monitor))
		if err != nil {
			log.Fatal(err)
		}
		defer client.Disconnect(context.Background())
		coll := client.Database("mongolock_demo").Collection("locks")
		if w == 0 {
			coll.Drop(ctx)
		}
		locker, err := mongolock.New(coll, mongolock.WithPollInterval(100*time.Millisecond))
		if err != nil {
			log.Fatal(err)
		}
		defer locker.Close()
		lockers = append(lockers, locker)
		session, err := locker.NewSession(ctx, mongolock.WithOwner(fmt.Sprintf("host-%d", w+1)),
			mongolock.WithTTL(5*time.Second))
		if err != nil {
			log.Fatal(err)
		}
		defer session.Close()
		m := session.NewMutex("nightly-report")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				if err := m.Lock(ctx); err != nil {
					log.Fatal(err)
				}
				mu.Lock()
				holders++
				most = max(most, holders)
				if !lastEnd.IsZero() {
					handoffs = append(handoffs, time.Since(lastEnd))
				}
				holds++
				fmt.Printf("%7.3fs  %-7s holds nightly-report  token %3d\n",
					time.Since(start).Seconds(), session.Owner(), m.Token())
				mu.Unlock()

				time.Sleep(20 * time.Millisecond) // the guarded work

				mu.Lock()
				holders--
				lastEnd = time.Now()
				mu.Unlock()
				if err := m.Unlock(); err != nil {
					log.Fatal(err)
				}
			}
		}()
	}
	wg.Wait()
	// The stream stays open a second after the last waiter left.
	woken := "polling (the server gives no change streams)"
	for _, l := range lockers {
		if l.Streaming() {
			woken = "the change stream (each release names the next waiting host)"
		}
	}
	slices.Sort(handoffs)
	fmt.Printf("\n%d workers, each with its own client and session\n", workers)
	fmt.Printf("acquisitions:               %d\n", holds)
	fmt.Printf("most holders at once:       %d\n", most)
	fmt.Printf("waiters woken by:           %s\n", woken)
	fmt.Printf("acquire attempts that failed: %d\n", attempts-holds)
	if len(handoffs) > 0 {
		fmt.Printf("median handoff (end of one hold to start of the next): %v\n",
			handoffs[len(handoffs)/2].Round(100*time.Microsecond))
	}
	if most != 1 {
		fmt.Println("MUTUAL EXCLUSION VIOLATED")
		os.Exit(1)
	}
}
