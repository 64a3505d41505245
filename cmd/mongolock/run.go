package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/mongolock/mongolock"
)

// run holds the lock NAME while CMD runs, as flock(1) does on one host.
func (c *cli) run(args []string) int {
	fs := c.flags("run", "[--ttl D] [--wait D] [--grace D] NAME -- CMD ARGS...",
		"mongolock run --wait 10s nightly-report -- ./report.sh --full",
		"Waits for the lock NAME, runs CMD with MONGOLOCK_NAME and MONGOLOCK_TOKEN (the fencing\n"+
			"token) in its environment, releases the lock when CMD exits and exits with CMD's status.\n"+
			"If the lock is lost while CMD runs, CMD gets SIGTERM and then SIGKILL, both before the\n"+
			"lease can expire on the server. SIGINT and SIGTERM sent to mongolock are passed to CMD.\n"+
			"Gives up with exit status 75 if the lock is still held after --wait.")
	ttl := fs.Duration("ttl", mongolock.DefaultTTL, "lease length, renewed while CMD runs")
	wait := fs.Duration("wait", -1, "give up (exit 75) if not locked within this time; 0 tries once; default waits forever")
	grace := fs.Duration("grace", 0, "time between SIGTERM and SIGKILL when the lock is lost (default TTL/20; must be below TTL/10)")
	owner := fs.String("owner", "", "owner recorded with the lock (default hostname:pid)")
	if code, ok := c.parse(fs, args); !ok {
		return code
	}
	rest := fs.Args()
	if len(rest) < 2 || rest[1] != "--" || len(rest) < 3 {
		fmt.Fprintln(c.stderr, "mongolock run: want NAME -- CMD ARGS...")
		fs.Usage()
		return exitUsage
	}
	name, argv := rest[0], rest[2:]
	if *grace == 0 {
		*grace = *ttl / 20
	}
	if *ttl <= 0 || *grace <= 0 || *grace >= *ttl/10 {
		fmt.Fprintf(c.stderr, "mongolock run: --grace %v must be positive and below a tenth of --ttl %v\n", *grace, *ttl)
		return exitUsage
	}

	// Signals arrive from here on: while waiting they cancel the wait;
	// while CMD runs they are passed to it.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	l := c.locker(ctx)
	if l == nil {
		return exitUsage
	}
	defer c.disconnect()
	defer l.Close()
	opts := []mongolock.SessionOption{mongolock.WithTTL(*ttl)}
	if *owner != "" {
		opts = append(opts, mongolock.WithOwner(*owner))
	}
	s, err := l.NewSession(ctx, opts...)
	if err != nil {
		return c.fail(err)
	}
	defer s.Close()
	m := s.NewMutex(name)

	if code, ok := c.acquire(ctx, m, *wait, sigs); !ok {
		return code
	}
	defer m.Unlock()
	return c.runHeld(m, argv, *grace, sigs)
}

// acquire takes the lock within wait (negative: forever), giving up on
// SIGINT/SIGTERM.
func (c *cli) acquire(ctx context.Context, m *mongolock.Mutex, wait time.Duration, sigs chan os.Signal) (int, bool) {
	if wait == 0 {
		if err := m.TryLock(ctx); err != nil {
			if errors.Is(err, mongolock.ErrLocked) {
				fmt.Fprintf(c.stderr, "mongolock: %q is held by another\n", m.Name())
				return exitTimeout, false
			}
			return c.fail(err), false
		}
		return 0, true
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if wait > 0 {
		wctx, cancel = context.WithTimeout(wctx, wait)
		defer cancel()
	}
	go func() {
		select {
		case sig := <-sigs:
			fmt.Fprintf(c.stderr, "mongolock: %v while waiting for the lock\n", sig)
			cancel()
		case <-wctx.Done():
		}
	}()
	if err := m.Lock(wctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			fmt.Fprintf(c.stderr, "mongolock: %q still held after %v\n", m.Name(), wait)
			return exitTimeout, false
		}
		if errors.Is(err, context.Canceled) {
			return 128 + int(syscall.SIGTERM), false
		}
		return c.fail(err), false
	}
	return 0, true
}

// runHeld runs argv while m is held, and returns its exit status.
func (c *cli) runHeld(m *mongolock.Mutex, argv []string, grace time.Duration, sigs chan os.Signal) int {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "MONGOLOCK_NAME="+m.Name(), "MONGOLOCK_TOKEN="+strconv.FormatInt(m.Token(), 10))
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(c.stderr, "mongolock:", err)
		return 127
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	lost := m.Done()
	var kill <-chan time.Time
	for {
		select {
		case sig := <-sigs:
			cmd.Process.Signal(sig)
		case <-lost:
			lost = nil
			fmt.Fprintf(c.stderr, "mongolock: lock %q lost (%v): terminating the command\n", m.Name(), m.Err())
			cmd.Process.Signal(syscall.SIGTERM)
			kill = time.After(grace)
		case <-kill:
			cmd.Process.Kill()
		case err := <-exited:
			return exitStatus(err)
		}
	}
}

// exitStatus maps a command's end to a shell's exit status.
func exitStatus(err error) int {
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return exit.ExitCode()
	}
	if err != nil {
		return 1
	}
	return 0
}
