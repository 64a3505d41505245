package main

import (
	"bufio"
	"encoding/json"
	"os"
	"sync"
	"time"
)

// hold is one line of a worker's history: one holding of a lock, with
// times in Unix nanoseconds of the machine's clock, shared by all workers
// (a skewed worker skews only the clock it gives the library).
type hold struct {
	Worker   int    `json:"worker"`
	Name     string `json:"name"`
	Token    int64  `json:"token"`
	CalledAt int64  `json:"calledAt"` // Lock called
	LockAt   int64  `json:"lockAt"`   // Lock returned
	SentAt   int64  `json:"sentAt"`   // fenced write sent; 0 if none
	Accepted bool   `json:"accepted"` // the fence let the write through
	Seq      int64  `json:"seq"`      // the resource's write sequence number, when accepted
	Stale    bool   `json:"stale"`    // written after Done had fired (to prove the fence)
	EndAt    int64  `json:"endAt"`    // Unlock called, or loss seen
	DoneAt   int64  `json:"doneAt"`   // Done closed: the holder stopped believing it holds
	Lost     bool   `json:"lost"`     // Done fired before Unlock
}

// fault is one line of the driver's fault log.
type fault struct {
	Kind   string `json:"kind"`
	Worker int    `json:"worker"` // -1 when not about one worker
	Name   string `json:"name"`   // the lock the worker held, if known
	At     int64  `json:"at"`
	Until  int64  `json:"until"` // end of a pause, cut or delay
	// Offset is a failover's: the new primary's clock against the host's.
	Offset time.Duration `json:"offset,omitempty"`
}

// journal appends JSON lines to a file, one write per line, so that a
// killed worker leaves every line it finished.
type journal struct {
	mu sync.Mutex
	f  *os.File
}

func openJournal(path string) (*journal, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &journal{f: f}, nil
}

func (j *journal) add(v any) {
	b, _ := json.Marshal(v)
	j.mu.Lock()
	defer j.mu.Unlock()
	j.f.Write(append(b, '\n'))
}

func (j *journal) close() { j.f.Close() }

// readLines decodes every JSON line of path into a T.
func readLines[T any](path string) ([]T, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var v T
		if json.Unmarshal(sc.Bytes(), &v) == nil { // a torn last line of a killed worker is skipped
			out = append(out, v)
		}
	}
	return out, sc.Err()
}

func now() int64 { return time.Now().UnixNano() }
