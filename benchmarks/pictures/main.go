// Command pictures draws the docs' pictures as plain SVG: the life of a
// lease, from the library's timings, and the handoff latency and commands
// per acquisition of mongolock and its peers, from one run of the
// benchmarks (go run .. -json). `make pictures` runs it.
//
//	go run ./pictures [-data ../docs/figures/peers.json] [-out ../docs]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/mongolock/mongolock"
)

func main() {
	data := flag.String("data", "../docs/figures/peers.json", "a run of the benchmarks, written with -json")
	out := flag.String("out", "../docs", "the folder the SVG files go to")
	flag.Parse()
	if err := write(filepath.Join(*out, "lease.svg"), leaseLife(mongolock.DefaultTTL)); err != nil {
		log.Fatal(err)
	}
	b, err := os.ReadFile(*data)
	if err != nil {
		log.Fatal(err)
	}
	var run results
	if err := json.Unmarshal(b, &run); err != nil {
		log.Fatal(err)
	}
	if err := write(filepath.Join(*out, "handoff.svg"), handoffChart(run)); err != nil {
		log.Fatal(err)
	}
}

func write(path, svg string) error { return os.WriteFile(path, []byte(svg), 0o644) }

// results is what the benchmarks write with -json (../results.go).
type results struct {
	Commit  string `json:"commit"`
	Date    string `json:"date"`
	Machine string `json:"machine"`
	PollNs  int64  `json:"pollNs"`
	Rows    []struct {
		Store      string  `json:"store"`
		Scenario   string  `json:"scenario"`
		MedianNs   int64   `json:"medianNs"`
		P99Ns      int64   `json:"p99Ns"`
		RoundTrips float64 `json:"roundTrips"`
		PerSecond  float64 `json:"perSecond"`
	} `json:"rows"`
}

// svg accumulates the elements of one picture.
type svg struct {
	w, h int
	b    strings.Builder
}

func newSVG(w, h int) *svg {
	s := &svg{w: w, h: h}
	fmt.Fprintf(&s.b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="13">`+"\n", w, h, w, h)
	fmt.Fprintf(&s.b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", w, h)
	return s
}

func (s *svg) text(x, y float64, anchor, fill, t string) {
	fmt.Fprintf(&s.b, `<text x="%.1f" y="%.1f" text-anchor="%s" fill="%s">%s</text>`+"\n", x, y, anchor, fill, escape(t))
}

func (s *svg) line(x1, y1, x2, y2 float64, stroke string, dash bool) {
	d := ""
	if dash {
		d = ` stroke-dasharray="5 4"`
	}
	fmt.Fprintf(&s.b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5"%s/>`+"\n", x1, y1, x2, y2, stroke, d)
}

func (s *svg) rect(x, y, w, h float64, fill string) {
	fmt.Fprintf(&s.b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x, y, w, h, fill)
}

func (s *svg) String() string { return s.b.String() + "</svg>\n" }

func escape(t string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(t)
}
