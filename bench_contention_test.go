package mongolock_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/mongolock/mongolock"
)

// The contention benchmarks of `make bench`: 8 sessions on separate
// clients, 4 goroutines each, take one name in turn.

// BenchmarkContention: acquisitions per second with change streams, then
// polling, then both with WithFIFO; server commands per acquisition (the
// change streams' own not counted), acquires that failed, and the spread
// between the sessions that got the fewest and the most, after a warm-up.
func BenchmarkContention(b *testing.B) {
	for _, mode := range []string{"change streams", "polling", "FIFO, change streams", "FIFO, polling"} {
		b.Run(mode, func(b *testing.B) {
			c := newContenders(newEnv(b), hotSessions, mongolock.WithChangeStreams(!strings.Contains(mode, "polling")),
				mongolock.WithFIFO(strings.HasPrefix(mode, "FIFO")))
			c.contend(b, hotGoroutines, "hot", warmUp, time.Minute)
			b.ResetTimer()
			got := c.contend(b, hotGoroutines, "hot", acquisitions(b), 10*time.Minute)
			b.StopTimer()
			record(contentionRow(mode, got, fmt.Sprintf("after %d acquisitions of warm-up", warmUp)))
			report(b, got)
		})
	}
}

// BenchmarkContentionSlowEvents is BenchmarkContention's first two rows
// with change events held back (mongotest's DelayEvents), as across
// regions (100ms) or on a sharded cluster with an idle shard (1s): the
// waiting layer must follow the events' lag (eventlag.go) and keep at
// least the throughput of polling, starving no session.
//
// Both sets of sessions, one on change streams and one polling, contend
// on names of their own in the same collection, in rounds that alternate
// which goes first (the embedded server slows down as a run goes on, and
// single runs of the same code differ by up to 15%); the ratio is the
// median of the rounds'. They are measured once each Locker of the first
// set has learnt how late events come (from the first ones) and polls, as
// in a service running for a while: after each set contended for 3x the
// delay or a second, whichever is longer. The row says how many of them waited on
// their streams at the end (Locker.Streaming): none, when both rows run
// the same code.
func BenchmarkContentionSlowEvents(b *testing.B) {
	for _, delay := range []time.Duration{100 * time.Millisecond, time.Second} {
		b.Run(delay.String(), func(b *testing.B) {
			fault(b, "delayEvents", bson.E{Key: "ms", Value: delay.Milliseconds()})
			e := newEnv(b)
			streams := newContenders(e, hotSessions, mongolock.WithChangeStreams(true))
			polling := newContenders(e, hotSessions, mongolock.WithChangeStreams(false))
			warm := max(3*delay, time.Second)
			streams.contend(b, hotGoroutines, "hot, change streams", 1<<30, warm)
			polling.contend(b, hotGoroutines, "hot, polling", 1<<30, warm)
			const rounds = 6
			per := acquisitions(b) / 2
			var s, p contended
			var ratios []float64
			b.ResetTimer()
			for r := range rounds {
				var a, z contended
				if r%2 == 0 {
					a = streams.contend(b, hotGoroutines, "hot, change streams", per, 10*time.Minute)
					z = polling.contend(b, hotGoroutines, "hot, polling", per, 10*time.Minute)
				} else {
					z = polling.contend(b, hotGoroutines, "hot, polling", per, 10*time.Minute)
					a = streams.contend(b, hotGoroutines, "hot, change streams", per, 10*time.Minute)
				}
				ratios = append(ratios, a.perSecond()/z.perSecond())
				s, p = s.add(a), p.add(z)
			}
			b.StopTimer()
			late := fmt.Sprintf("events %v late", delay)
			on := 0
			for _, l := range streams.lockers {
				if l.Streaming() {
					on++
				}
			}
			how := fmt.Sprintf("%d rounds of %d alternating with the other row, after %v", rounds, per, warm)
			record(contentionRow("polling, "+late, p, how))
			row := contentionRow("change streams, "+late, s, how+fmt.Sprintf("; ratio by round %.2f..%.2f; %d of %d Lockers on their streams at the end", slices.Min(ratios), slices.Max(ratios), on, hotSessions))
			row.ratio, row.baseline = median(ratios), "polling, same rounds"
			record(row)
			report(b, s)
			b.ReportMetric(row.ratio, "ratio")
		})
	}
}

// hotSessions and hotGoroutines make the 8x4 contention.
const hotSessions, hotGoroutines = 8, 4

// acquisitions is how many acquisitions a contention row measures: shares
// are judged over at least 1,000 whatever b.N, since while pollers take
// part in the turns a process keeps the lock for runs of up to 8 quick
// holds (turns.go, pollerRunLength), and 200 would be 25 runs among 8
// sessions.
func acquisitions(b *testing.B) int { return max(b.N, 1000) }

// warmUp is how many acquisitions (everyone's first attempt, the change
// streams opening) come before a contention row's: the figures are the
// steady state.
const warmUp = 64

// contentionRow is the table's row "contention 8 sessions x 4, <mode>".
func contentionRow(mode string, c contended, how string) benchRow {
	lo, hi := slices.Min(c.shares), slices.Max(c.shares)
	mean := float64(c.n) / float64(len(c.shares))
	spread := max(float64(hi)-mean, mean-float64(lo)) / mean
	return benchRow{scenario: "contention 8 sessions x 4, " + mode, median: c.waits.quantile(.5), p99: c.waits.quantile(.99),
		opsPerS: c.perSecond(),
		note: fmt.Sprintf("%.2f commands/acquisition, %.2f failed acquires/acquisition; per session %d..%d acquisitions (within %.0f%% of the mean); latency = wait for Lock; %s",
			float64(c.cmds)/float64(c.n), float64(c.acquires)/float64(c.n)-1, lo, hi, 100*spread, how)}
}

// report gives a contention row's figures to the benchmark's own output.
func report(b *testing.B, c contended) {
	b.ReportMetric(float64(c.cmds)/float64(c.n), "commands/acq")
	b.ReportMetric(float64(c.elapsed.Nanoseconds())/float64(c.n), "ns/op") // n, not b.N, were measured
}
