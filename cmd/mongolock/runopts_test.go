package main_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mongolock/mongolock"
)

// TestRunHoldAtLeastOncePerTick: four hosts whose cron fires 0.4s apart
// run a 50ms job with --wait 0 --hold-at-least 5s: it runs once, and the
// three others exit 75, each saying in one line who holds the lock and
// until when; --quiet says nothing.
func TestRunHoldAtLeastOncePerTick(t *testing.T) {
	e := newCLIEnv(t)
	log := filepath.Join(t.TempDir(), "log")
	var cmds []*bytes.Buffer
	codes := make([]int, 4)
	type result struct {
		i    int
		code int
	}
	results := make(chan result, 4)
	for i := range 4 {
		c := e.cmd("run", "--wait", "0", "--hold-at-least", "5s", "--owner", "host"+string(rune('a'+i)),
			"nightly", "--", "sh", "-c", "echo run >> "+log+"; sleep 0.05")
		cmds = append(cmds, c.Stderr.(*bytes.Buffer))
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			c.Wait()
			results <- result{i, c.ProcessState.ExitCode()}
		}()
		time.Sleep(400 * time.Millisecond)
	}
	for range 4 {
		r := <-results
		codes[r.i] = r.code
	}
	data, _ := os.ReadFile(log)
	if runs := strings.Count(string(data), "run"); runs != 1 {
		t.Fatalf("the job ran %d times, want once; exit statuses %v", runs, codes)
	}
	if codes[0] != 0 {
		t.Fatalf("the first host exited %d: %s", codes[0], cmds[0])
	}
	for i := 1; i < 4; i++ {
		msg := cmds[i].String()
		if codes[i] != 75 || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "held by hosta until ") {
			t.Fatalf("host %d: exit %d, stderr %q; want 75 and one line naming hosta and the lease's end", i, codes[i], msg)
		}
	}
	c := e.cmd("run", "--wait", "0", "--quiet", "nightly", "--", "true")
	if code, _ := exit(t, c); code != 75 || c.Stderr.(*bytes.Buffer).Len() != 0 {
		t.Fatalf("--quiet: exit %d, stderr %q; want 75 and nothing", code, c.Stderr)
	}
	st, err := e.locker.Status(context.Background(), "nightly")
	if err != nil || !st.Held || !st.ExpiresAt.Equal(st.AcquiredAt.Add(5*time.Second)) {
		t.Fatalf("status: %+v, %v; want held until 5s after the acquire", st, err)
	}
}

// TestRunHoldAtMost: a job still running at --hold-at-most is ended, the
// whole group (its background child too), mongolock exits 124, and the
// lock stays held while the job, which ignores SIGTERM, is being killed;
// then it frees for another.
func TestRunHoldAtMost(t *testing.T) {
	e := newCLIEnv(t)
	dir := t.TempDir()
	pidFile, term := filepath.Join(dir, "pid"), filepath.Join(dir, "term")
	c := e.cmd("run", "--hold-at-most", "1s", "--grace", "1500ms", "capped", "--",
		"sh", "-c", `trap 'touch `+term+`' TERM; sleep 60 >/dev/null 2>&1 & echo $! > `+pidFile+`; while :; do sleep 0.05; done`)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	pid := readPID(t, pidFile)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	waitFile(t, term)
	// SIGTERM came, SIGKILL has not yet (1.5s later): still held.
	if err := e.locker.GetLock(context.Background(), "capped", "next", 0, 0); !errors.Is(err, mongolock.ErrLocked) {
		t.Fatalf("GetLock while the capped job was being killed = %v, want ErrLocked", err)
	}
	c.Wait()
	if code := c.ProcessState.ExitCode(); code != 124 {
		t.Fatalf("exit status %d, want 124; stderr %s", code, c.Stderr)
	}
	if alive(pid) {
		t.Fatalf("the job's background sleep (pid %d) outlived mongolock; stderr %s", pid, c.Stderr)
	}
	if !strings.Contains(c.Stderr.(*bytes.Buffer).String(), "--hold-at-most") {
		t.Fatalf("stderr does not name the cap: %s", c.Stderr)
	}
	if err := e.locker.GetLock(context.Background(), "capped", "next", 0, 0); err != nil {
		t.Fatalf("the lock was not released after the capped job: %v", err)
	}
}

// TestRunHoldFlagsRefused: negative bounds, or a cap below the least
// hold, are usage errors (exit 2) and nothing runs.
func TestRunHoldFlagsRefused(t *testing.T) {
	e := newCLIEnv(t)
	for _, args := range [][]string{
		{"--hold-at-least", "-1s"},
		{"--hold-at-most", "-1s"},
		{"--hold-at-least", "10s", "--hold-at-most", "5s"},
	} {
		args = append(args, "bad", "--", "sh", "-c", "echo ran")
		if code, out := exit(t, e.cmd("run", args...)); code != 2 || out != "" {
			t.Fatalf("%v: exit %d, output %q; want 2 and nothing run", args, code, out)
		}
	}
}

// TestRunLimit: with --limit 2, two jobs run at once and a third waits for
// one of them (or, with --wait 0, exits 75 saying all permits are held);
// each job gets its slot.
func TestRunLimit(t *testing.T) {
	e := newCLIEnv(t)
	dir := t.TempDir()
	var cmds []*exec.Cmd
	for i := range 2 {
		ready := filepath.Join(dir, fmt.Sprint("ready", i))
		c := e.cmd("run", "--limit", "2", "pool", "--", "sh", "-c",
			`echo "$MONGOLOCK_SLOT" > `+ready+`.tmp; mv `+ready+`.tmp `+ready+`; sleep 60`)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Signal(syscall.SIGTERM); c.Wait() })
		cmds = append(cmds, c)
		waitFile(t, ready)
	}
	a, _ := os.ReadFile(filepath.Join(dir, "ready0"))
	b, _ := os.ReadFile(filepath.Join(dir, "ready1"))
	if string(a) == string(b) {
		t.Fatalf("two jobs on slot %s", a)
	}
	c := e.cmd("run", "--limit", "2", "--wait", "0", "pool", "--", "true")
	code, _ := exit(t, c)
	if msg := c.Stderr.(*bytes.Buffer).String(); code != 75 || !strings.Contains(msg, "all its 2 permits held") {
		t.Fatalf("third job with --wait 0: exit %d, stderr %q", code, msg)
	}
	cmds[0].Process.Signal(syscall.SIGTERM)
	cmds[0].Wait()
	if code, out := exit(t, e.cmd("run", "--limit", "2", "pool", "--", "sh", "-c", `echo "slot $MONGOLOCK_SLOT"`)); code != 0 ||
		strings.TrimSpace(out) != "slot "+strings.TrimSpace(string(a)) {
		t.Fatalf("third job after the first ended: exit %d, output %q, want slot %s", code, out, a)
	}
	for _, limit := range []string{"3", "1"} {
		if code, _ := exit(t, e.cmd("run", "--limit", limit, "--wait", "0", "pool", "--", "true")); code != 2 {
			t.Fatalf("a job giving --limit %s: exit %d, want 2 (limit mismatch)", limit, code)
		}
	}
	// A host that forgot --limit takes no permit and does not run either.
	if code, out := exit(t, e.cmd("run", "--wait", "0", "pool", "--", "echo", "ran")); code != 75 || out != "" {
		t.Fatalf("a job without --limit: exit %d, output %q; want 75 and nothing run", code, out)
	}
}
