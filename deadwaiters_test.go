package mongolock_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mongolock/mongolock"
)

// deadEntries returns the Lockers other than live that have entries among
// the lock name's waiting ones.
func deadEntries(tb testing.TB, e *env, name string, live []*mongolock.Locker) []string {
	var dead []string
	for l := range lockEntries(tb, e, name) {
		if !slices.ContainsFunc(live, func(x *mongolock.Locker) bool { return mongolock.LockerID(x) == l }) {
			dead = append(dead, l)
		}
	}
	return dead
}

// TestDeadWaitersCostNothing (issue 28, item 2): 200 waiting processes
// are SIGKILLed (polling, and with change streams; and WithFIFO with
// each);
// once the window has passed (shortened here to a second, live waiters
// refreshing their entries every 100ms), 4 live processes with 2
// goroutines each contend for the name: no turn goes to the dead, so each
// live process gets a fair share, and the first releases remove every
// dead entry. The benchmark (BenchmarkDeadWaiters) reports the figures.
func TestDeadWaitersCostNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 200 Lockers in a child process")
	}
	modes := []string{"polling", "FIFO, polling"}
	if hasChangeStreams(t) {
		modes = append(modes, "change streams", "FIFO, change streams")
	}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			const procs, goroutines, total = 4, 2, 160
			const window = time.Second
			streams, fifo := !strings.HasSuffix(mode, "polling"), strings.HasPrefix(mode, "FIFO")
			const dead = 200 // each with a change stream of its own when streams
			e := newEnv(t)
			ctx := ctxT(t, 3*time.Minute)
			live := newContenders(e, procs, mongolock.WithChangeStreams(streams), mongolock.WithFIFO(fifo),
				mongolock.WithWindow(window/10, window))
			// The name is held while the dead join, as a name in use is.
			held := session(t, live.lockers[0]).NewMutex("churned")
			if err := held.Lock(ctx); err != nil {
				t.Fatal(err)
			}
			spawnDeadWaiters(t, ctx, e, "churned", dead, streams, fifo)
			time.Sleep(window)
			if err := held.Unlock(); err != nil {
				t.Fatal(err)
			}
			got := live.contend(t, goroutines, "churned", total, 2*time.Minute)
			if got.n < total {
				t.Fatalf("%d acquisitions before the time was up, want %d", got.n, total)
			}
			// The live Lockers' entries may outlast the contention by a
			// moment (a join in flight when the time was up): only the
			// dead ones count.
			left := len(deadEntries(t, e, "churned", live.lockers))
			t.Logf("shares of %d: %v; %d Lockers' entries left; Lock waited %v median, %v at most",
				got.n, got.shares, left, got.waits.quantile(.5), got.longest)
			for _, n := range got.shares {
				if mean := total / procs; n < mean/2 {
					t.Fatalf("shares %v: one is below half the mean (%d)", got.shares, mean)
				}
			}
			if left > 0 {
				t.Fatalf("%d entries of dead waiters left after %d acquisitions", left, total)
			}
		})
	}
}

// BenchmarkDeadWaiters (issue 28): 4 processes x 2 goroutines contend for
// a name for 15s, on a clean name and on one that 200 SIGKILLed waiting
// processes (polling ones) joined, before their entries went stale (right after the
// kill) and once they had (30s later), with change streams and polling,
// with and without WithFIFO: acquisitions per second (and the ratio to
// the clean name's, measured in the same run), each process's share, the
// longest wait, and the dead Lockers' entries left at the end.
func BenchmarkDeadWaiters(b *testing.B) {
	for _, mode := range []string{"change streams", "polling", "FIFO, change streams", "FIFO, polling"} {
		b.Run(mode, func(b *testing.B) {
			const procs, goroutines, d = 4, 2, 15 * time.Second
			dead := 200
			if n, err := strconv.Atoi(os.Getenv("MONGOLOCK_BENCH_DEAD")); err == nil {
				dead = n // MONGOLOCK_BENCH_DEAD=1000 for the other figure
			}
			streams, fifo := !strings.HasSuffix(mode, "polling"), strings.HasPrefix(mode, "FIFO")
			e := newEnv(b)
			live := newContenders(e, procs, mongolock.WithChangeStreams(streams), mongolock.WithFIFO(fifo))
			row := func(label, name string, c contended, clean float64) float64 {
				left := len(deadEntries(b, e, name, live.lockers))
				perS := float64(c.n) / c.elapsed.Seconds()
				shares := slices.Clone(c.shares)
				slices.Sort(shares)
				r := benchRow{scenario: "dead waiters 4 x 2, " + mode + ", " + label, median: c.waits.quantile(.5),
					p99: c.waits.quantile(.99), opsPerS: perS,
					note: fmt.Sprintf("shares %v; longest wait %v; %d Lockers' entries left", c.shares, c.longest.Round(time.Millisecond), left)}
				if clean > 0 {
					r.ratio, r.baseline = perS/clean, "clean name"
				}
				record(r)
				return perS
			}
			if b.N > 1 {
				return // -benchtime 200x runs it again with b.N 200: one run is the measure
			}
			{
				clean := row("clean name", "clean", live.contend(b, goroutines, "clean", 1<<30, d), 0)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				held := session(b, live.lockers[0]).NewMutex("churned")
				if err := held.Lock(ctx); err != nil {
					b.Fatal(err)
				}
				// Polling dead: mongotest serves 200 change streams too
				// slowly (issue 24); a user's processes killed early leave
				// mostly poller entries too.
				spawnDeadWaiters(b, ctx, e, "churned", dead, false, fifo)
				killed := time.Now()
				held.Unlock()
				row(fmt.Sprintf("%d dead, right after", dead), "churned", live.contend(b, goroutines, "churned", 1<<30, d), clean)
				time.Sleep(time.Until(killed.Add(31 * time.Second))) // the window, 30s, has passed
				row(fmt.Sprintf("%d dead, after the window", dead), "churned", live.contend(b, goroutines, "churned", 1<<30, d), clean)
				cancel()
			}
		})
	}
}
