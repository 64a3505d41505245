package main_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.uber.org/goleak"

	"github.com/mongolock/mongolock"
)

// bin is the mongolock command, built once for all tests.
var bin string

func TestMain(m *testing.M) {
	if os.Getenv("MONGODB_URI") == "" {
		fmt.Fprintln(os.Stderr, "these tests need a server: run `make test`, or set MONGODB_URI")
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "mongolock-cli-")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "mongolock")
	if out, err := exec.Command("go", "build", "-race", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building mongolock: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// cliEnv is one test's collection and a Locker on it for checks.
type cliEnv struct {
	t      *testing.T
	coll   string
	locker *mongolock.Locker
}

func newCLIEnv(t *testing.T) *cliEnv {
	var b [4]byte
	rand.Read(b[:])
	e := &cliEnv{t: t, coll: "cli_" + hex.EncodeToString(b[:])}
	c, err := mongo.Connect(options.Client().ApplyURI(os.Getenv("MONGODB_URI")))
	if err != nil {
		t.Fatal(err)
	}
	coll := c.Database("mongolock_test").Collection(e.coll)
	e.locker, _ = mongolock.New(coll)
	t.Cleanup(func() {
		e.locker.Close()
		coll.Drop(context.Background())
		c.Disconnect(context.Background())
	})
	return e
}

// cmd returns the mongolock command with args, on the test's collection.
func (e *cliEnv) cmd(sub string, args ...string) *exec.Cmd {
	all := append([]string{sub, "--db", "mongolock_test", "--collection", e.coll}, args...)
	c := exec.Command(bin, all...)
	c.Stderr = &bytes.Buffer{}
	c.WaitDelay = 10 * time.Second // a leftover child holding the output pipes
	return c
}

// exit runs c and returns its exit status and output.
func exit(t *testing.T, c *exec.Cmd) (int, string) {
	t.Helper()
	var out bytes.Buffer
	c.Stdout = &out
	err := c.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatal(err)
		}
	}
	return c.ProcessState.ExitCode(), out.String()
}

func TestRunExcludes(t *testing.T) {
	e := newCLIEnv(t)
	log := filepath.Join(t.TempDir(), "log")
	script := `echo "start $(date +%s%N)" >> ` + log + `; sleep 0.3; echo "end $(date +%s%N)" >> ` + log
	var cmds []*exec.Cmd
	for range 2 {
		c := e.cmd("run", "--ttl", "5s", "shared", "--", "sh", "-c", script)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("%v: %s", err, c.Stderr)
		}
	}
	data, _ := os.ReadFile(log)
	lines := strings.Fields(string(data))
	if len(lines) != 8 {
		t.Fatalf("log: %q, want two runs", data)
	}
	// start, end, start, end: never two starts in a row.
	for i := 0; i < 8; i += 4 {
		if lines[i] != "start" || lines[i+2] != "end" {
			t.Fatalf("the commands overlapped: %q", data)
		}
	}
}

func TestRunExitStatusAndWait(t *testing.T) {
	e := newCLIEnv(t)
	if code, _ := exit(t, e.cmd("run", "job", "--", "sh", "-c", "exit 7")); code != 7 {
		t.Fatalf("exit status %d, want 7", code)
	}
	code, out := exit(t, e.cmd("run", "job", "--", "sh", "-c", `echo "$MONGOLOCK_NAME $MONGOLOCK_TOKEN"`))
	if code != 0 || strings.TrimSpace(out) != "job 2" {
		t.Fatalf("exit %d, output %q; want the name and token 2", code, out)
	}
	// Held by someone else: --wait gives up with 75, and so does --wait 0.
	ctx := context.Background()
	if err := e.locker.GetLock(ctx, "job", "other", 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, wait := range []string{"300ms", "0"} {
		if code, _ := exit(t, e.cmd("run", "--wait", wait, "job", "--", "true")); code != 75 {
			t.Fatalf("--wait %s: exit status %d, want 75", wait, code)
		}
	}
	if code, _ := exit(t, e.cmd("run", "job")); code != 2 {
		t.Fatalf("run without a command: exit %d, want 2", code)
	}
}

func TestRunPassesSignals(t *testing.T) {
	e := newCLIEnv(t)
	dir := t.TempDir()
	ready, got := filepath.Join(dir, "ready"), filepath.Join(dir, "got")
	c := e.cmd("run", "sig", "--", "sh", "-c",
		`trap 'echo TERM > `+got+`; exit 3' TERM; touch `+ready+`; while :; do sleep 0.05; done`)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, ready)
	c.Process.Signal(syscall.SIGTERM)
	c.Wait()
	if code := c.ProcessState.ExitCode(); code != 3 {
		t.Fatalf("exit status %d, want the command's 3; stderr %s", code, c.Stderr)
	}
	if data, _ := os.ReadFile(got); strings.TrimSpace(string(data)) != "TERM" {
		t.Fatalf("the command did not get SIGTERM: %q", data)
	}
}

// TestRunLostHold force-releases the lock while the command runs: the
// command is terminated before the lease it had would have expired.
func TestRunLostHold(t *testing.T) {
	e := newCLIEnv(t)
	dir := t.TempDir()
	ready, term := filepath.Join(dir, "ready"), filepath.Join(dir, "term")
	c := e.cmd("run", "--ttl", "4s", "lost", "--", "sh", "-c",
		`trap 'date +%s%N > `+term+`; exit 0' TERM; touch `+ready+`; while :; do sleep 0.05; done`)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, ready)
	ctx := context.Background()
	st, err := e.locker.Status(ctx, "lost")
	if err != nil || !st.Held {
		t.Fatalf("status while running: %+v, %v", st, err)
	}
	if err := e.locker.ForceRelease(ctx, "lost"); err != nil {
		t.Fatal(err)
	}
	c.Wait()
	data, err := os.ReadFile(term)
	if err != nil {
		t.Fatalf("the command was not terminated: %v; stderr %s", err, c.Stderr)
	}
	ns, _ := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	// The server and this test share a clock here: compare directly.
	if at := time.Unix(0, ns); !at.Before(st.ExpiresAt) {
		t.Fatalf("terminated at %v, after the lease's end %v", at, st.ExpiresAt)
	}
	if !strings.Contains(c.Stderr.(*bytes.Buffer).String(), "lost") {
		t.Fatalf("stderr does not say the lock was lost: %s", c.Stderr)
	}
	// The command exited 0 on SIGTERM; mongolock says the lock was lost.
	if code := c.ProcessState.ExitCode(); code != 76 {
		t.Fatalf("exit status %d after a lost lock, want 76", code)
	}
}

// TestRunKillsWholeGroup: the job's background child is part of the job:
// when the lock is lost it is terminated too, before mongolock exits.
func TestRunKillsWholeGroup(t *testing.T) {
	e := newCLIEnv(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	c := e.cmd("run", "--ttl", "3s", "group", "--", "sh", "-c", `sleep 300 >/dev/null 2>&1 & echo $! > `+pidFile+`; wait`)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	pid := readPID(t, pidFile)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if err := e.locker.ForceRelease(context.Background(), "group"); err != nil {
		t.Fatal(err)
	}
	c.Wait()
	if alive(pid) {
		t.Fatalf("the job's background sleep (pid %d) outlived mongolock; stderr %s", pid, c.Stderr)
	}
	if code := c.ProcessState.ExitCode(); code != 76 {
		t.Fatalf("exit status %d, want 76; stderr %s", code, c.Stderr)
	}
}

// TestRunJobDiesWithMongolock: mongolock killed with SIGKILL takes the
// whole job with it, its background child included (the guard's
// parent-death signal), so no part of the job runs unguarded.
func TestRunJobDiesWithMongolock(t *testing.T) {
	e := newCLIEnv(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	c := e.cmd("run", "orphan", "--", "sh", "-c", `sleep 300 >/dev/null 2>&1 & echo $! > `+pidFile+`; wait`)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	pid := readPID(t, pidFile)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	c.Process.Kill()
	c.Wait()
	for deadline := time.Now().Add(10 * time.Second); alive(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the job's background sleep (pid %d) outlived mongolock's SIGKILL", pid)
		}
	}
}

// TestRunSignalWhileWaiting: SIGINT while waiting for the lock exits 130,
// and the command never runs.
func TestRunSignalWhileWaiting(t *testing.T) {
	e := newCLIEnv(t)
	if err := e.locker.GetLock(context.Background(), "busy", "other", 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	ran := filepath.Join(t.TempDir(), "ran")
	c := e.cmd("run", "busy", "--", "touch", ran)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // connected and waiting; an earlier signal exits 130 too
	c.Process.Signal(syscall.SIGINT)
	c.Wait()
	if code := c.ProcessState.ExitCode(); code != 130 {
		t.Fatalf("exit status %d after SIGINT while waiting, want 130; stderr %s", code, c.Stderr)
	}
	if _, err := os.Stat(ran); err == nil {
		t.Fatal("the command ran")
	}
}

// TestRunKillsSetsidChild: a job's child that leaves the process group
// (setsid) is still part of the job: mongolock ends it before it exits.
func TestRunKillsSetsidChild(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("no setsid")
	}
	e := newCLIEnv(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	c := e.cmd("run", "daemon", "--", "sh", "-c", `setsid sh -c 'echo $$ > `+pidFile+`; exec sleep 300' >/dev/null 2>&1 &`)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	pid := readPID(t, pidFile)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	c.Wait()
	if alive(pid) {
		t.Fatalf("the job's setsid child (pid %d) outlived mongolock; stderr %s", pid, c.Stderr)
	}
	if st, _ := e.locker.Status(context.Background(), "daemon"); st.Held {
		t.Fatal("the lock is still held after mongolock exited")
	}
}

// TestRunKillsCommandThatLeftGroup: a command that moves to a session of
// its own (as GNU timeout moves to a group of its own) is still the job:
// when the lock is lost it is terminated before mongolock exits.
func TestRunKillsCommandThatLeftGroup(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("no setsid")
	}
	e := newCLIEnv(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	c := e.cmd("run", "--ttl", "3s", "escaped", "--", "setsid", "sh", "-c", `echo $$ > `+pidFile+`; exec sleep 300 >/dev/null 2>&1`)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	pid := readPID(t, pidFile)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if err := e.locker.ForceRelease(context.Background(), "escaped"); err != nil {
		t.Fatal(err)
	}
	c.Wait()
	if alive(pid) {
		t.Fatalf("the command that left the group (pid %d) outlived mongolock; stderr %s", pid, c.Stderr)
	}
	if code := c.ProcessState.ExitCode(); code != 76 {
		t.Fatalf("exit status %d, want 76; stderr %s", code, c.Stderr)
	}
}

// readPID waits for path and returns the process id written in it.
func readPID(t *testing.T, path string) int {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		data, _ := os.ReadFile(path)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid > 0 {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pid in %s", path)
		}
	}
}

// alive reports whether the process pid exists and is not a zombie.
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	// pid (comm) STATE ...: the state follows the last ')'.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

func TestAdminCommands(t *testing.T) {
	e := newCLIEnv(t)
	ctx := context.Background()
	if err := e.locker.GetLock(ctx, "jobs/a", "alice", 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := e.locker.GetLock(ctx, "other", "bob", 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	s, err := e.locker.NewSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	el := s.NewElection("jobs/leader")
	if err := el.Campaign(ctx, "10.0.0.7:8080"); err != nil {
		t.Fatal(err)
	}

	code, out := exit(t, e.cmd("list", "--json", "jobs/"))
	var infos []mongolock.LockInfo
	if code != 0 || json.Unmarshal([]byte(out), &infos) != nil || len(infos) != 2 {
		t.Fatalf("list --json: exit %d, %q", code, out)
	}
	if infos[0].Name != "jobs/a" || !infos[0].Held || infos[0].Owner != "alice" || infos[1].Value != "10.0.0.7:8080" {
		t.Fatalf("list --json: %+v", infos)
	}
	if code, out := exit(t, e.cmd("list")); code != 0 || strings.Count(out, "\n") != 4 || !strings.Contains(out, "bob") {
		t.Fatalf("list: exit %d\n%s", code, out)
	}
	var info mongolock.LockInfo
	code, out = exit(t, e.cmd("status", "--json", "jobs/a"))
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil || !info.Held || info.Token != 1 {
		t.Fatalf("status --json: exit %d, %q", code, out)
	}
	if code, out := exit(t, e.cmd("leader", "jobs/leader")); code != 0 || strings.TrimSpace(out) != "10.0.0.7:8080" {
		t.Fatalf("leader: exit %d, %q", code, out)
	}
	if code, out := exit(t, e.cmd("leader", "--transitions", "jobs/leader")); code != 0 || strings.TrimSpace(out) != "10.0.0.7:8080\t1" {
		t.Fatalf("leader --transitions: exit %d, %q", code, out)
	}
	var lj struct {
		Value       string `json:"value"`
		Token       int64  `json:"token"`
		Transitions int64  `json:"transitions"`
	}
	code, out = exit(t, e.cmd("leader", "--json", "jobs/leader"))
	if code != 0 || json.Unmarshal([]byte(out), &lj) != nil || lj.Value != "10.0.0.7:8080" || lj.Token != el.Token() || lj.Token == 0 || lj.Transitions != 1 {
		t.Fatalf("leader --json: exit %d, %q, want the token %d", code, out, el.Token())
	}
	if code, _ := exit(t, e.cmd("leader", "nobody")); code != 1 {
		t.Fatalf("leader of no one: exit %d, want 1", code)
	}
	if code, _ := exit(t, e.cmd("release", "jobs/a")); code != 2 {
		t.Fatalf("release without --force: exit %d, want 2", code)
	}
	if code, _ := exit(t, e.cmd("release", "--force", "jobs/a")); code != 0 {
		t.Fatalf("release --force: exit %d", code)
	}
	if free, _ := e.locker.IsFreeLock(ctx, "jobs/a"); !free {
		t.Fatal("jobs/a still held after release --force")
	}
	if code, _ := exit(t, e.cmd("release", "--force", "jobs/a")); code != 1 {
		t.Fatalf("release --force of a free lock: exit %d, want 1", code)
	}

	// leader --watch prints each new leader until interrupted.
	w := e.cmd("leader", "--watch", "jobs/leader")
	var wout bytes.Buffer
	w.Stdout = &wout
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	s.Close()
	s2, err := e.locker.NewSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.NewElection("jobs/leader").Campaign(ctx, "10.0.0.8:8080"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // at most a poll interval
	w.Process.Signal(syscall.SIGINT)
	w.Wait()
	if got := strings.Fields(wout.String()); len(got) != 2 || got[0] != "10.0.0.7:8080" || got[1] != "10.0.0.8:8080" {
		t.Fatalf("leader --watch printed %q", wout.String())
	}
}

func TestBadConnection(t *testing.T) {
	for _, uri := range []string{"not-a-uri", "mongodb://127.0.0.1:1"} {
		c := exec.Command(bin, "list", "--uri", uri, "--connect-timeout", "500ms")
		var stderr bytes.Buffer
		c.Stderr = &stderr
		start := time.Now()
		c.Run()
		if code := c.ProcessState.ExitCode(); code != 2 {
			t.Fatalf("%s: exit %d, want 2", uri, code)
		}
		if time.Since(start) > 20*time.Second || stderr.Len() == 0 {
			t.Fatalf("%s: took %v, said %q", uri, time.Since(start), stderr.String())
		}
	}
	for _, sub := range []string{"run", "status", "list", "release", "leader"} {
		c := exec.Command(bin, sub, "--help")
		var stderr bytes.Buffer
		c.Stderr = &stderr
		if err := c.Run(); err != nil || !strings.Contains(stderr.String(), "Example:") {
			t.Fatalf("%s --help: %v, %q", sub, err, stderr.String())
		}
	}
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
	}
}
