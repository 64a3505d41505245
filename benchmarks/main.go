// Command benchmarks runs the same lock scenarios on mongolock and on what
// users would pick instead, each on its own real server started here:
// etcd's concurrency.Mutex on an embedded etcd, and bsm/redislock on a
// redis-server. Because the stores differ, every time is also given as a
// multiple of that store's own ping round trip.
//
//	go run . [-n 200] [-contention 3s] [-poll 50ms] [-json results.json]
//
// With -json it also writes every row, with the commit, date and machine,
// for the pictures (go run ./pictures).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

func main() {
	n := flag.Int("n", 200, "operations per latency scenario")
	contention := flag.Duration("contention", 3*time.Second, "length of the contention scenario")
	poll := flag.Duration("poll", 50*time.Millisecond,
		"longest pause between two attempts of a polling waiter (mongolock's poll interval, redislock's backoff cap)")
	jsonOut := flag.String("json", "", "also write the rows to this file, as JSON")
	flag.Parse()
	ctx := context.Background()

	var stores []store
	for _, streams := range []bool{true, false} {
		ms, err := startMongo(ctx, *poll, streams)
		if err != nil {
			log.Fatal(err)
		}
		stores = append(stores, ms)
	}
	if es, err := startEtcd(); err != nil {
		log.Printf("etcd: %v (skipped)", err)
	} else {
		stores = append(stores, es)
	}
	if rs, err := startRedis(ctx, *poll); err != nil {
		log.Printf("redis: %v (skipped)", err)
	} else {
		stores = append(stores, rs)
	}

	tw := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "store\tscenario\tmedian\tp99\tx ping\tround trips\tnote")
	run := newRun(*poll)
	for _, s := range stores {
		if err := runAll(ctx, tw, run, s, *n, *contention); err != nil {
			log.Printf("%s: %v", s.name(), err)
		}
		s.close()
	}
	tw.Flush() // one table, aligned across the stores
	if *jsonOut != "" {
		if err := run.write(*jsonOut); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Printf("\nPolling waiters (mongolock without change streams, redislock) pause at most %v; etcd waiters watch.\n", *poll)
	fmt.Println("Round trips leave out mongolock's change streams' getMores, which carry events as etcd's watch stream does.")
}

func runAll(ctx context.Context, tw *tabwriter.Writer, run *results, s store, n int, contention time.Duration) error {
	a, err := s.connect(ctx)
	if err != nil {
		return err
	}
	defer a.close()
	b, err := s.connect(ctx)
	if err != nil {
		return err
	}
	defer b.close()

	ping, err := timeN(n, func() error { return a.ping(ctx) })
	if err != nil {
		return err
	}
	pingMed := median(ping)
	line := func(scenario string, d []time.Duration, trips float64, note string) {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%.1fx\t%.2f\t%s\n", s.name(), scenario, round(median(d)), round(p99(d)),
			float64(median(d))/float64(pingMed), trips, note)
		run.add(row{Store: s.name(), Scenario: scenario, Median: median(d), P99: p99(d), RoundTrips: trips})
	}
	line("ping", ping, 1, "")

	m := a.mutex("uncontended")
	before := a.roundTrips()
	lu, err := timeN(n, func() error {
		if err := m.lock(ctx); err != nil {
			return err
		}
		return m.unlock(ctx)
	})
	if err != nil {
		return err
	}
	line("lock+unlock", lu, float64(a.roundTrips()-before)/float64(n), "uncontended")

	for _, where := range []string{"in-process", "cross-session"} {
		other := b
		if where == "in-process" {
			other = a
		}
		x, y := a.mutex("handoff-"+where), other.mutex("handoff-"+where)
		before := a.roundTrips() + b.roundTrips()
		d, err := handoff(ctx, x, y, n/4)
		if err != nil {
			return err
		}
		trips := float64(a.roundTrips()+b.roundTrips()-before) / float64(len(d))
		line("handoff, "+where, d, trips, "Unlock returned -> next Lock returned")
	}

	acq, spread, trips, err := contend(ctx, s, contention)
	if err != nil {
		return err
	}
	fmt.Fprintf(tw, "%s\tcontention 8 x 4\t-\t-\t-\t%.2f\t%.0f acquisitions/s, per client %s\n", s.name(), trips, acq, spread)
	run.add(row{Store: s.name(), Scenario: "contention 8 x 4", RoundTrips: trips, PerSecond: acq})
	return nil
}

func timeN(n int, f func() error) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	for range n {
		t := time.Now()
		if err := f(); err != nil {
			return nil, err
		}
		out = append(out, time.Since(t))
	}
	return out, nil
}

// handoff passes the lock n times between x and y: the time from one's
// unlock returning to the other's lock returning.
func handoff(ctx context.Context, x, y mutex, n int) ([]time.Duration, error) {
	if err := x.lock(ctx); err != nil {
		return nil, err
	}
	holder, waiter := x, y
	var out []time.Duration
	for range n {
		got := make(chan error, 1)
		var at time.Time
		go func() {
			err := waiter.lock(ctx)
			at = time.Now()
			got <- err
		}()
		time.Sleep(5 * time.Millisecond) // the waiter tried and waits
		if err := holder.unlock(ctx); err != nil {
			return nil, err
		}
		released := time.Now()
		if err := <-got; err != nil {
			return nil, err
		}
		out = append(out, at.Sub(released))
		holder, waiter = waiter, holder
	}
	return out, holder.unlock(ctx)
}

// contend runs 8 clients x 4 goroutines on one name for d, and returns the
// acquisitions per second, the spread of acquisitions per client, and the
// round trips per acquisition.
func contend(ctx context.Context, s store, d time.Duration) (float64, string, float64, error) {
	const clients, goroutines = 8, 4
	var cs []client
	defer func() {
		for _, c := range cs {
			c.close()
		}
	}()
	for range clients {
		c, err := s.connect(ctx)
		if err != nil {
			return 0, "", 0, err
		}
		cs = append(cs, c)
	}
	var before int64
	for _, c := range cs {
		before += c.roundTrips()
	}
	counts := make([]atomic.Int64, clients)
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for i, c := range cs {
		for range goroutines {
			m := c.mutex("hot")
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					lctx, cancel := context.WithTimeout(ctx, time.Minute)
					err := m.lock(lctx)
					cancel()
					if err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
					counts[i].Add(1)
					if err := m.unlock(ctx); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, "", 0, err
	}
	var after, total int64
	per := make([]int64, clients)
	for i, c := range cs {
		after += c.roundTrips()
		per[i] = counts[i].Load()
		total += per[i]
	}
	slices.Sort(per)
	return float64(total) / d.Seconds(), fmt.Sprintf("%d..%d", per[0], per[len(per)-1]),
		float64(after-before) / float64(total), nil
}

func median(d []time.Duration) time.Duration { return quantile(d, .5) }
func p99(d []time.Duration) time.Duration    { return quantile(d, .99) }

func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(int(q*float64(len(s))), len(s)-1)]
}

func round(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
