package main

import (
	"fmt"
	"time"
)

// handoffChart draws, for every store of the run, the median time of a
// cross-session handoff (one process's Unlock returning to another's Lock
// returning) and the round trips per acquisition under contention, as two
// bar charts side by side.
func handoffChart(run results) string {
	type bar struct {
		store   string
		handoff time.Duration
		trips   float64
	}
	var bars []bar
	find := func(store string) int {
		for i, b := range bars {
			if b.store == store {
				return i
			}
		}
		bars = append(bars, bar{store: store})
		return len(bars) - 1
	}
	for _, r := range run.Rows {
		switch r.Scenario {
		case "handoff, cross-session":
			bars[find(r.Store)].handoff = time.Duration(r.MedianNs)
		case "contention 8 x 4":
			bars[find(r.Store)].trips = r.RoundTrips
		}
	}
	var maxH time.Duration
	maxT := 0.0
	for _, b := range bars {
		maxH, maxT = max(maxH, b.handoff), max(maxT, b.trips)
	}
	const rowH, top, label, width = 34.0, 70.0, 250.0, 300.0
	h := int(top + rowH*float64(len(bars)) + 70)
	s := newSVG(940, h)
	s.text(20, 26, "start", "#222", "Cross-session handoff, median (left), and round trips per acquisition, 8 clients x 4 goroutines (right)")
	s.text(20, 46, "start", "#666", fmt.Sprintf("one run of make bench-peers at %s, %s, %s; polling waiters pause at most %v",
		run.Commit, run.Date, run.Machine, time.Duration(run.PollNs)))
	for i, b := range bars {
		y := top + rowH*float64(i)
		s.text(label-10, y+16, "end", "#222", b.store)
		if maxH > 0 {
			w := width * float64(b.handoff) / float64(maxH)
			s.rect(label, y+2, w, 20, "#4a6fa5")
			s.text(label+w+6, y+16, "start", "#222", b.handoff.Round(10*time.Microsecond).String())
		}
		if maxT > 0 {
			x0 := label + width + 90
			w := (940 - x0 - 60) * b.trips / maxT
			s.rect(x0, y+2, w, 20, "#3f7f3f")
			s.text(x0+w+6, y+16, "start", "#222", fmt.Sprintf("%.2f", b.trips))
		}
	}
	s.text(20, float64(h)-32, "start", "#666", "Round trips leave out mongolock's change streams' getMores, which carry events as etcd's watch stream does.")
	s.text(20, float64(h)-14, "start", "#666", "Drawn by benchmarks/pictures from docs/figures/peers.json.")
	return s.String()
}
