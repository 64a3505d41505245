package mongolock_test

import (
	"fmt"
	"io"
	"slices"
	"sync"
	"text/tabwriter"
	"time"
)

// benchRow is one line of the table `make bench` prints.
type benchRow struct {
	scenario string
	median   time.Duration // per operation; 0 when not a latency
	p99      time.Duration
	opsPerS  float64
	ratio    float64 // to baseline; 0 when none
	baseline string
	note     string
}

var (
	tableMu sync.Mutex
	table   []benchRow
)

// record adds row to the table, replacing a row of the same scenario from
// an earlier (shorter) run of the same benchmark.
func record(row benchRow) {
	tableMu.Lock()
	defer tableMu.Unlock()
	for i := range table {
		if table[i].scenario == row.scenario {
			table[i] = row
			return
		}
	}
	table = append(table, row)
}

func printBenchTable(w io.Writer) {
	tableMu.Lock()
	defer tableMu.Unlock()
	if len(table) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "\nscenario\tmedian\tp99\tops/s\tratio\tbaseline\tnote")
	for _, r := range table {
		ratio := "-"
		if r.ratio > 0 {
			ratio = fmt.Sprintf("%.2fx", r.ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.scenario, dur(r.median), dur(r.p99),
			num(r.opsPerS), ratio, orDash(r.baseline), r.note)
	}
	tw.Flush()
}

func dur(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.Round(10 * time.Microsecond).String()
}

func num(f float64) string {
	if f == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", f)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// samples collects per-operation durations.
type samples []time.Duration

func (s samples) quantile(q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	return c[min(int(q*float64(len(c))), len(c)-1)]
}

func (s samples) opsPerSec() float64 {
	var total time.Duration
	for _, d := range s {
		total += d
	}
	if total == 0 {
		return 0
	}
	return float64(len(s)) / total.Seconds()
}

// median is the middle of xs, sorted in place; of an even count, the mean
// of the middle two (rounds that alternate which side goes first give
// half their ratios above and half below: either middle one alone would
// lean to one side).
func median(xs []float64) float64 {
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 0 {
		return (xs[n/2-1] + xs[n/2]) / 2
	}
	return xs[n/2]
}
