package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// results are the rows of one run, with what says where they come from.
type results struct {
	Commit  string        `json:"commit"`  // git describe of the code measured
	Date    string        `json:"date"`    // when the run began
	Machine string        `json:"machine"` // OS, architecture and cores
	Poll    time.Duration `json:"pollNs"`  // the polling waiters' longest pause
	mu      sync.Mutex
	Rows    []row `json:"rows"`
}

// row is one line of the table.
type row struct {
	Store      string        `json:"store"`
	Scenario   string        `json:"scenario"`
	Median     time.Duration `json:"medianNs,omitempty"`
	P99        time.Duration `json:"p99Ns,omitempty"`
	RoundTrips float64       `json:"roundTrips"` // per operation, or per acquisition under contention
	PerSecond  float64       `json:"perSecond,omitempty"`
}

func newRun(poll time.Duration) *results {
	commit := "unknown"
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		commit = strings.TrimSpace(string(out))
	}
	return &results{Commit: commit, Date: time.Now().UTC().Format("2006-01-02"), Poll: poll,
		Machine: runtime.GOOS + "/" + runtime.GOARCH + ", " + strconv.Itoa(runtime.NumCPU()) + " cores"}
}

func (r *results) add(x row) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Rows = append(r.Rows, x)
}

func (r *results) write(path string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
