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
// few times, and no violation. `make torture` runs the long one.
func TestTortureShort(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	var out bytes.Buffer
	code, err := drive([]string{"-duration", "40s", "-fault-every", "1500ms"}, &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Fatalf("the checker found violations (exit %d)", code)
	}
}
