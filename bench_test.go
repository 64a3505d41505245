package mongolock_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
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
		med[i] = median(ratios[i])
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
	record(benchRow{scenario: "many names, 8 in parallel (raw)", median: rawS.quantile(.5), p99: rawS.quantile(.99),
		opsPerS: float64(len(rawS)) / rawElapsed.Seconds()})
	record(benchRow{scenario: "many names, 8 in parallel", median: libS.quantile(.5), p99: libS.quantile(.99),
		opsPerS: float64(len(libS)) / libElapsed.Seconds(),
		ratio:   median(ratios), baseline: "raw, 8 in parallel"})
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
