package main

import (
	"bytes"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// The test binary is also the workers' binary: the driver starts it again
// with "worker" as its first argument.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		os.Exit(worker(os.Args[2:]))
	}
	goleak.VerifyTestMain(m)
}

// TestTortureShort is the short torture of `make test`: every fault kind a
// few times, and no violation, with waiters woken by mongotest's change
// streams (which the cuts and restarts make resume). `make torture` runs
// the long one.
func TestTortureShort(t *testing.T) {
	torture(t, "-duration", "40s", "-fault-every", "1500ms")
}

// TestTorturePolling: a shorter one on a server without change streams,
// where the waiters poll.
func TestTorturePolling(t *testing.T) {
	torture(t, "-duration", "15s", "-fault-every", "1500ms", "-change-streams=false")
}

func torture(t *testing.T, args ...string) {
	if testing.Short() {
		t.Skip("-short")
	}
	var out bytes.Buffer
	code, err := drive(args, &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Fatalf("the checker found violations (exit %d)", code)
	}
}
