// Command torture runs mongolock under faults and checks its histories:
// worker processes contend for a few locks on the embedded server while
// the driver kills, pauses and cuts them off, restarts the server and
// delays its replies; every hold writes through a fenced resource, and
// the checker reports overlaps, writes out of token order and stuck locks.
//
//	go run . [-duration 10m] [-workers 4]          the driver
//	torture worker ...                             a worker (started by the driver)
//
// It exits non-zero on any violation.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		os.Exit(worker(os.Args[2:]))
	}
	code, err := drive(os.Args[1:], os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "torture:", err)
		os.Exit(2)
	}
	os.Exit(code)
}
