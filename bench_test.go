package mongolock_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/mongolock/mongolock"
)

// The benchmarks of `make bench`. Each measures its baseline in the same
// run, and records a row of the table printed at the end.

// rawAcquire and rawRelease send by hand the two commands of an
// uncontended Lock+Unlock, as the library writes them: the floor the
// library is measured against.
func rawAcquire(ctx context.Context, coll *mongo.Collection, name string) error {
	now := time.Now()
	// The library's filter and update, field for field (store.acquire).
	filter := bson.D{{Key: "_id", Value: name}, {Key: "limit", Value: nil}, {Key: "$or", Value: bson.A{
		bson.D{{Key: "holder", Value: nil}, {Key: "heir", Value: bson.D{{Key: "$in", Value: bson.A{nil, "raw"}}}}},
		bson.D{{Key: "expiresAt", Value: bson.D{{Key: "$lte", Value: now}}}},
		bson.D{{Key: "holder", Value: "raw"}},
	}}}
	update := bson.D{
		{Key: "$set", Value: bson.D{
			{Key: "owner", Value: "bench"}, {Key: "holder", Value: "raw"}, {Key: "session", Value: "s"},
			{Key: "value", Value: ""}, {Key: "acquiredAt", Value: now}, {Key: "heir", Value: nil},
		}},
		{Key: "$unset", Value: bson.D{{Key: "waiting.raw", Value: ""}, {Key: "pollers.raw", Value: ""}, {Key: "since.raw", Value: ""}}},
		{Key: "$max", Value: bson.D{{Key: "expiresAt", Value: now.Add(time.Minute)}}},
		{Key: "$inc", Value: bson.D{{Key: "fence", Value: int64(1)}}},
	}
	return coll.FindOneAndUpdate(ctx, filter, update,
		options.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(options.After)).Err()
}

func rawRelease(ctx context.Context, coll *mongo.Collection, name string) error {
	_, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: name}, {Key: "holder", Value: "raw"}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "holder", Value: nil}, {Key: "expiresAt", Value: time.Now()}}}})
	return err
}

// benchSetup is one collection, a Locker with a session, and a raw
// collection handle with the library's write concern, on one client.
type benchSetup struct {
	locker *mongolock.Locker
	s      *mongolock.Session
	raw    *mongo.Collection
	ping   func() error
}

func newBenchSetup(b *testing.B) *benchSetup {
	e := newEnv(b)
	client, _ := connect(b, "")
	l, err := mongolock.New(client.Database(testDB).Collection(e.coll))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	raw := client.Database(testDB).Collection(e.coll, options.Collection().SetWriteConcern(writeconcern.Majority()))
	db := client.Database(testDB)
	return &benchSetup{
		locker: l,
		s:      session(b, l, mongolock.WithTTL(time.Minute)),
		raw:    raw,
		ping:   func() error { return db.RunCommand(context.Background(), bson.D{{Key: "ping", Value: 1}}).Err() },
	}
}

// rawLockUnlock sends the two commands of an uncontended Lock+Unlock by
// hand; twoPings sends two pings: the baselines of the uncontended rows.
func (st *benchSetup) rawLockUnlock() error {
	ctx := context.Background()
	if err := rawAcquire(ctx, st.raw, "bench-raw"); err != nil {
		return err
	}
	return rawRelease(ctx, st.raw, "bench-raw")
}

func (st *benchSetup) twoPings() error {
	if err := st.ping(); err != nil {
		return err
	}
	return st.ping()
}

// interleave times op and each baseline in alternating blocks (base, op,
// base, op...) so that the machine's drift cancels out, for b.N operations
// of each. It returns op's samples and, per baseline, its samples and the
// median of the per-block ratios op/baseline.
func interleave(b *testing.B, op func() error, bases ...func() error) (samples, []samples, []float64) {
	const block = 10
	run := func(f func() error, into *samples) time.Duration {
		start := time.Now()
		for range block {
			t := time.Now()
			if err := f(); err != nil {
				b.Fatal(err)
			}
			*into = append(*into, time.Since(t))
		}
		return time.Since(start)
	}
	var warm samples
	run(op, &warm) // connections, the clock, the documents
	for _, f := range bases {
		run(f, &warm)
	}
	var opS samples
	baseS := make([]samples, len(bases))
	ratios := make([][]float64, len(bases))
	b.ResetTimer()
	for done := 0; done < b.N; done += block {
		for i, f := range bases {
			bt := run(f, &baseS[i])
			ot := run(op, &opS)
			ratios[i] = append(ratios[i], float64(ot)/float64(bt))
		}
	}
	b.StopTimer()
	med := make([]float64, len(bases))
	for i := range bases {
		slices.Sort(ratios[i])
		med[i] = ratios[i][len(ratios[i])/2]
	}
	return opS, baseS, med
}

func recordInterleaved(b *testing.B, scenario string, op samples, bases []samples, ratios []float64, names ...string) {
	for i, name := range names {
		record(benchRow{scenario: name, median: bases[i].quantile(.5), p99: bases[i].quantile(.99), opsPerS: bases[i].opsPerSec()})
	}
	for i, name := range names {
		row := benchRow{scenario: scenario, median: op.quantile(.5), p99: op.quantile(.99), opsPerS: op.opsPerSec(),
			ratio: ratios[i], baseline: name}
		if i > 0 {
			row.scenario += " (vs " + name + ")"
		}
		record(row)
	}
	b.ReportMetric(float64(op.quantile(.5).Microseconds()), "median-µs")
	b.ReportMetric(ratios[0], "ratio")
}

// BenchmarkLockUnlock: uncontended Lock+Unlock against the raw driver
// sending the same two commands, and against two pings.
func BenchmarkLockUnlock(b *testing.B) {
	st := newBenchSetup(b)
	ctx := context.Background()
	m := st.s.NewMutex("bench-lib")
	op := func() error {
		if err := m.Lock(ctx); err != nil {
			return err
		}
		return m.Unlock()
	}
	opS, bases, ratios := interleave(b, op, st.rawLockUnlock, st.twoPings)
	recordInterleaved(b, "Lock+Unlock", opS, bases, ratios, "raw acquire+release", "2 pings")
}

// BenchmarkGetLockRelease: the seed API's GetLock+ReleaseLock, same
// baselines.
func BenchmarkGetLockRelease(b *testing.B) {
	st := newBenchSetup(b)
	ctx := context.Background()
	op := func() error {
		if err := st.locker.GetLock(ctx, "bench-seed", "me", 0, time.Minute); err != nil {
			return err
		}
		return st.locker.ReleaseLock(ctx, "bench-seed", "me")
	}
	opS, bases, ratios := interleave(b, op, st.rawLockUnlock, st.twoPings)
	recordInterleaved(b, "GetLock+ReleaseLock", opS, bases, ratios, "raw acquire+release", "2 pings")
}

// BenchmarkHandoff: one goroutine holds, another waits; the time from
// Unlock returning to the waiter's Lock returning. In-process, both share
// a session; cross-session, each has its own client. The baseline is one
// raw acquire round trip, measured in the same run.
func BenchmarkHandoff(b *testing.B) {
	for _, where := range []string{"in-process", "cross-session, change stream", "cross-session, polling"} {
		b.Run(where, func(b *testing.B) {
			st := newBenchSetup(b)
			ctx := context.Background()
			var waiterS *mongolock.Session
			var poll time.Duration
			switch where {
			case "in-process":
				waiterS = st.s
			case "cross-session, change stream":
				e := &env{t: b, coll: st.raw.Name()}
				l, _ := e.locker("")
				waiterS = session(b, l)
			default:
				e := &env{t: b, coll: st.raw.Name()}
				poll = 50 * time.Millisecond
				l, _ := e.locker("", mongolock.WithChangeStreams(false), mongolock.WithPollInterval(poll))
				waiterS = session(b, l)
			}
			var acq samples
			for range 5 { // the floor: one acquire round trip
				for range 4 {
					t := time.Now()
					if err := rawAcquire(ctx, st.raw, "bench-raw"); err != nil {
						b.Fatal(err)
					}
					acq = append(acq, time.Since(t))
					rawRelease(ctx, st.raw, "bench-raw")
				}
			}
			handoffs := handoff(b, st.s.NewMutex("h"), waiterS.NewMutex("h"), b.N)
			for range 5 {
				t := time.Now()
				rawAcquire(ctx, st.raw, "bench-raw")
				acq = append(acq, time.Since(t))
				rawRelease(ctx, st.raw, "bench-raw")
			}
			row := benchRow{scenario: "handoff, " + where, median: handoffs.quantile(.5), p99: handoffs.quantile(.99),
				ratio: float64(handoffs.quantile(.5)) / float64(acq.quantile(.5)), baseline: "1 acquire round trip"}
			if poll > 0 {
				row.note = fmt.Sprintf("waiter without change streams: polls, pause up to %v", poll)
			}
			record(row)
			b.ReportMetric(float64(handoffs.quantile(.5).Microseconds()), "median-µs")
		})
	}
}

// handoff passes the lock n times from holder to waiter and back, and
// returns the times from each Unlock returning to the other's Lock
// returning.
func handoff(b *testing.B, x, y *mongolock.Mutex, n int) samples {
	ctx := context.Background()
	var out samples
	if err := x.Lock(ctx); err != nil {
		b.Fatal(err)
	}
	holder, waiter := x, y
	for range n {
		got := make(chan time.Time, 1)
		waiting := make(chan struct{})
		go func() {
			close(waiting)
			if err := waiter.Lock(ctx); err != nil {
				b.Error(err)
			}
			got <- time.Now()
		}()
		<-waiting
		time.Sleep(2 * time.Millisecond) // the waiter tried and waits
		if err := holder.Unlock(); err != nil {
			b.Fatal(err)
		}
		released := time.Now()
		out = append(out, (<-got).Sub(released))
		holder, waiter = waiter, holder
	}
	holder.Unlock()
	return out
}

// BenchmarkContention: 8 sessions on separate clients, 4 goroutines each,
// take one name in turn for a while, with change streams and then with
// polling: acquisitions per second, server commands per acquisition (the
// change streams' own not counted), acquires that failed, and the spread
// between the sessions that got the fewest and the most, after a warm-up.
func BenchmarkContention(b *testing.B) {
	for _, mode := range []string{"change streams", "polling", "FIFO, change streams", "FIFO, polling"} {
		b.Run(mode, func(b *testing.B) {
			contention(b, mode, mongolock.WithChangeStreams(!strings.Contains(mode, "polling")),
				mongolock.WithFIFO(strings.HasPrefix(mode, "FIFO")))
		})
	}
}

// BenchmarkContentionSlowEvents is BenchmarkContention's first and third
// rows with change events held back (mongotest's DelayEvents), as across
// regions (100ms) or on a sharded cluster with an idle shard (1s): the
// waiting layer must follow the events' lag (eventlag.go) and keep at
// least the throughput of polling, starving no session.
func BenchmarkContentionSlowEvents(b *testing.B) {
	for _, delay := range []time.Duration{100 * time.Millisecond, time.Second} {
		for _, mode := range []string{"change streams", "polling"} {
			b.Run(fmt.Sprintf("%v/%s", delay, mode), func(b *testing.B) {
				fault(b, "delayEvents", bson.E{Key: "ms", Value: delay.Milliseconds()})
				// Measured once each Locker has learnt how late events
				// come (from the first ones) and its waiters poll, as in
				// a service running for a while: after 64 acquisitions,
				// and 3x the delay or a second, whichever is longer.
				contentionAfter(b, fmt.Sprintf("%s, events %v late", mode, delay), max(3*delay, time.Second),
					mongolock.WithChangeStreams(mode == "change streams"))
			})
		}
	}
}

func contention(b *testing.B, mode string, opt ...mongolock.Option) {
	contentionAfter(b, mode, 0, opt...)
}

// contentionAfter is contention measured from the first acquisition after
// the warm-up that comes warm after the start.
func contentionAfter(b *testing.B, mode string, warm time.Duration, opt ...mongolock.Option) {
	e := newEnv(b)
	const sessions, goroutines = 8, 4
	// Shares are judged over at least 1,000 acquisitions whatever b.N:
	// while pollers take part in the turns, a process keeps the lock for
	// runs of up to 8 quick holds (turns.go, pollerRunLength), so 200
	// would be 25 runs among 8 sessions.
	acquisitions := int64(max(b.N, 1000))
	var counters []*counter
	var wg sync.WaitGroup
	perSession := make([]atomic.Int64, sessions)
	var hold samples
	var holdMu sync.Mutex
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mutexes [][]*mongolock.Mutex
	for range sessions {
		l, cnt := e.locker("", opt...)
		counters = append(counters, cnt)
		s := session(b, l)
		var ms []*mongolock.Mutex
		for range goroutines {
			ms = append(ms, s.NewMutex("hot"))
		}
		mutexes = append(mutexes, ms)
	}
	// The first warmUp acquisitions (everyone's first attempt, the change
	// streams opening) are not measured: the figures are the steady state.
	const warmUp = 64
	var start time.Time
	measured := make(chan struct{})
	b.ResetTimer()
	begin := time.Now()
	var total, done atomic.Int64 // acquisitions, and those measured
	var measuring atomic.Bool
	var once sync.Once
	for i, ms := range mutexes {
		for _, m := range ms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for done.Load() < acquisitions {
					t := time.Now()
					if err := m.Lock(ctx); err != nil {
						return
					}
					switch n := total.Add(1); {
					case measuring.Load():
						if done.Add(1) <= acquisitions {
							holdMu.Lock()
							hold = append(hold, time.Since(t))
							holdMu.Unlock()
							perSession[i].Add(1)
						}
					case n >= warmUp && time.Since(begin) >= warm:
						once.Do(func() {
							for _, c := range counters {
								c.Reset()
							}
							start = time.Now()
							measuring.Store(true)
							close(measured)
						})
					}
					m.Unlock()
				}
				cancel()
			}()
		}
	}
	wg.Wait()
	<-measured
	elapsed := time.Since(start)
	b.StopTimer()
	cmds, acquires := 0, 0
	for _, c := range counters {
		for _, name := range c.Commands() {
			switch name {
			case "aggregate", "getMore", "killCursors": // the change stream's own
			case "findAndModify":
				acquires++
				cmds++
			default:
				cmds++
			}
		}
	}
	lo, hi := int64(1<<62), int64(0)
	for i := range perSession {
		lo, hi = min(lo, perSession[i].Load()), max(hi, perSession[i].Load())
	}
	n := min(done.Load(), acquisitions)
	mean := float64(n) / sessions
	spread := max(float64(hi)-mean, mean-float64(lo)) / mean
	record(benchRow{scenario: "contention 8 sessions x 4, " + mode, median: hold.quantile(.5), p99: hold.quantile(.99),
		opsPerS: float64(n) / elapsed.Seconds(),
		note: fmt.Sprintf("%.2f commands/acquisition, %.2f failed acquires/acquisition; per session %d..%d acquisitions (within %.0f%% of the mean); latency = wait for Lock; after %d acquisitions of warm-up%s",
			float64(cmds)/float64(n), float64(acquires-int(n))/float64(n), lo, hi, 100*spread, warmUp, warmNote(warm))})
	b.ReportMetric(float64(cmds)/float64(n), "commands/acq")
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(n), "ns/op") // n, not b.N, were measured
}

func warmNote(warm time.Duration) string {
	if warm == 0 {
		return ""
	}
	return fmt.Sprintf(" and %v", warm)
}

// BenchmarkManyNames: 8 goroutines lock and unlock distinct names in
// parallel; the baseline is the same with the raw commands.
func BenchmarkManyNames(b *testing.B) {
	st := newBenchSetup(b)
	ctx := context.Background()
	const workers = 8
	parallel := func(op func(w int) error, n int) samples {
		var mu sync.Mutex
		var all samples
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine samples
				for range max(n/workers, 1) {
					t := time.Now()
					if err := op(w); err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, time.Since(t))
				}
				mu.Lock()
				all = append(all, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		return all
	}
	mutexes := make([]*mongolock.Mutex, workers)
	for w := range mutexes {
		mutexes[w] = st.s.NewMutex(fmt.Sprint("name-", w))
	}
	lib := func(w int) error {
		if err := mutexes[w].Lock(ctx); err != nil {
			return err
		}
		return mutexes[w].Unlock()
	}
	raw := func(w int) error {
		// The library's documents: where a document lies in the embedded
		// server's tables changes what it costs, which a comparison on
		// documents of their own would measure instead.
		name := fmt.Sprint("name-", w)
		if err := rawAcquire(ctx, st.raw, name); err != nil {
			return err
		}
		return rawRelease(ctx, st.raw, name)
	}
	// Rounds alternate which goes first: the embedded server slows down as
	// a run goes on, and whichever ran second would look worse.
	const rounds = 6
	var rawS, libS samples
	var rawElapsed, libElapsed time.Duration
	var ratios []float64
	timed := func(op func(int) error, into *samples, elapsed *time.Duration) time.Duration {
		start := time.Now()
		got := parallel(op, max(b.N/rounds, workers))
		*into = append(*into, got...)
		d := time.Since(start)
		*elapsed += d
		return got.quantile(.5)
	}
	b.ResetTimer()
	for r := range rounds {
		var rm, lm time.Duration
		if r%2 == 0 {
			rm = timed(raw, &rawS, &rawElapsed)
			lm = timed(lib, &libS, &libElapsed)
		} else {
			lm = timed(lib, &libS, &libElapsed)
			rm = timed(raw, &rawS, &rawElapsed)
		}
		ratios = append(ratios, float64(lm)/float64(rm))
	}
	b.StopTimer()
	slices.Sort(ratios)
	record(benchRow{scenario: "many names, 8 in parallel (raw)", median: rawS.quantile(.5), p99: rawS.quantile(.99),
		opsPerS: float64(len(rawS)) / rawElapsed.Seconds()})
	record(benchRow{scenario: "many names, 8 in parallel", median: libS.quantile(.5), p99: libS.quantile(.99),
		opsPerS: float64(len(libS)) / libElapsed.Seconds(),
		ratio:   ratios[len(ratios)/2], baseline: "raw, 8 in parallel"})
}

// BenchmarkIdleWaiters: commands per second, other than the change
// stream's own, sent while 1 and then 1,000 goroutines (across 4 sessions
// on separate clients) wait on one held name.
func BenchmarkIdleWaiters(b *testing.B) {
	e := newEnv(b)
	holder, _ := e.locker("")
	hm := session(b, holder, mongolock.WithTTL(time.Hour)).NewMutex("busy")
	ctx := context.Background()
	if err := hm.Lock(ctx); err != nil {
		b.Fatal(err)
	}
	defer hm.Unlock()
	const watch = 5 * time.Second
	perSec := func(sessions, waiters int) (float64, map[string]int) {
		wctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		var counters []*counter
		for range sessions {
			l, cnt := e.locker("")
			counters = append(counters, cnt)
			s := session(b, l, mongolock.WithTTL(time.Hour))
			for range waiters / sessions {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s.NewMutex("busy").Lock(wctx)
				}()
			}
		}
		time.Sleep(time.Second) // past the first attempts
		for _, c := range counters {
			c.Reset()
		}
		time.Sleep(watch)
		n, byName := 0, map[string]int{}
		for _, c := range counters {
			for _, name := range c.Commands() {
				if name != "getMore" {
					n++
					byName[name]++
				}
			}
		}
		cancel()
		wg.Wait()
		return float64(n) / watch.Seconds(), byName
	}
	b.ResetTimer()
	one, oneBy := perSec(1, 1)
	many, manyBy := perSec(4, 1000)
	b.StopTimer()
	record(benchRow{scenario: "idle waiters: 1", note: fmt.Sprintf("%.1f commands/s besides the stream's getMores %v", one, oneBy)})
	record(benchRow{scenario: "idle waiters: 1,000 in 4 sessions", note: fmt.Sprintf("%.1f commands/s besides the streams' getMores %v", many, manyBy)})
}

// BenchmarkKeepalive: commands per keepalive tick for a session holding 1,
// 100 and 1,000 locks, and the tick's time.
func BenchmarkKeepalive(b *testing.B) {
	for _, locks := range []int{1, 100, 1000} {
		b.Run(fmt.Sprint(locks), func(b *testing.B) {
			e := newEnv(b)
			l, cnt := e.locker("")
			s := session(b, l, mongolock.WithTTL(time.Hour))
			ctx := context.Background()
			for i := range locks {
				if err := s.NewMutex(fmt.Sprint("k", i)).Lock(ctx); err != nil {
					b.Fatal(err)
				}
			}
			cnt.Reset()
			var ticks samples
			b.ResetTimer()
			// A few ticks tell: on the embedded server a tick over 1,000
			// locks takes seconds (FerretDB writes each document apart).
			n := min(b.N, 5)
			for range n {
				t := time.Now()
				if !mongolock.RenewNow(s) {
					b.Fatal("renewal failed")
				}
				ticks = append(ticks, time.Since(t))
			}
			b.StopTimer()
			// The clock's refresh (a hello a minute) is not the tick's.
			renewals := slices.DeleteFunc(cnt.Commands(), func(c string) bool { return c == "hello" })
			perTick := float64(len(renewals)) / float64(n)
			record(benchRow{scenario: fmt.Sprintf("keepalive tick, %d locks", locks), median: ticks.quantile(.5),
				p99: ticks.quantile(.99), note: fmt.Sprintf("%.2f commands/tick", perTick)})
			b.ReportMetric(perTick, "commands/tick")
		})
	}
}
