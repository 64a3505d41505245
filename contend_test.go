package mongolock_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mongolock/mongolock"
)

// contenders are processes (Lockers, each on a client of its own, with a
// command counter) whose goroutines take one name in turn: the contention
// of the fairness tests and benchmarks.
type contenders struct {
	lockers  []*mongolock.Locker
	counters []*counter
}

// newContenders returns procs Lockers with opts, each on its own client.
func newContenders(e *env, procs int, opts ...mongolock.Option) contenders {
	var c contenders
	for range procs {
		l, cnt := e.locker("", opts...)
		c.lockers = append(c.lockers, l)
		c.counters = append(c.counters, cnt)
	}
	return c
}

// contended is what contend measured: acquisitions, each process's
// share, how long each Lock that succeeded waited, the longest wait
// (counting those the end cut short), and the commands the processes sent
// (but the change streams' own), findAndModify among them.
type contended struct {
	n        int
	elapsed  time.Duration
	shares   []int
	waits    samples
	longest  time.Duration
	cmds     int
	acquires int
}

func (c contended) perSecond() float64 { return float64(c.n) / c.elapsed.Seconds() }

// add sums two runs of the same contenders.
func (c contended) add(o contended) contended {
	shares := make([]int, max(len(c.shares), len(o.shares)))
	for i, n := range c.shares {
		shares[i] += n
	}
	for i, n := range o.shares {
		shares[i] += n
	}
	return contended{n: c.n + o.n, elapsed: c.elapsed + o.elapsed, shares: shares,
		waits: slices.Concat(c.waits, o.waits), longest: max(c.longest, o.longest),
		cmds: c.cmds + o.cmds, acquires: c.acquires + o.acquires}
}

// contend has each process's goroutines (goroutines each, on a session of
// its own) take name in turn until total acquisitions were made or d
// passed, whichever comes first; then those still waiting give up.
func (c contenders) contend(tb testing.TB, goroutines int, name string, total int, d time.Duration) contended {
	tb.Helper()
	res := contended{shares: make([]int, len(c.lockers))}
	var mutexes [][]*mongolock.Mutex
	for _, l := range c.lockers {
		s := session(tb, l)
		var ms []*mongolock.Mutex
		for range goroutines {
			ms = append(ms, s.NewMutex(name))
		}
		mutexes = append(mutexes, ms)
	}
	for _, cnt := range c.counters {
		cnt.Reset()
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for i, ms := range mutexes {
		for _, m := range ms {
			wg.Go(func() {
				for {
					t := time.Now()
					err := m.Lock(ctx)
					mu.Lock()
					res.longest = max(res.longest, time.Since(t))
					if err != nil {
						mu.Unlock()
						return // the time is up
					}
					res.n++
					res.shares[i]++
					res.waits = append(res.waits, time.Since(t))
					done := res.n >= total
					mu.Unlock()
					if err := m.Unlock(); err != nil {
						tb.Error(err)
						return
					}
					if done {
						cancel()
						return
					}
				}
			})
		}
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	for _, cnt := range c.counters {
		for _, name := range cnt.Commands() {
			switch name {
			case "aggregate", "getMore", "killCursors": // the change stream's own
			case "findAndModify":
				res.acquires++
				res.cmds++
			default:
				res.cmds++
			}
		}
	}
	return res
}
