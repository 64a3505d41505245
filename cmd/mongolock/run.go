package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mongolock/mongolock"
)

// run holds the lock NAME while CMD runs, as flock(1) does on one host.
func (c *cli) run(args []string) int {
	fs := c.flags("run", "[--ttl D] [--wait D] [--grace D] [--hold-at-least D] [--hold-at-most D] [--limit N] [--quiet] NAME -- CMD ARGS...",
		"mongolock run --wait 0 --hold-at-least 50s nightly-report -- ./report.sh --full",
		"Waits for the lock NAME, runs CMD with MONGOLOCK_NAME and MONGOLOCK_TOKEN (the fencing\n"+
			"token) in its environment, releases the lock when CMD exits and exits with CMD's status.\n"+
			"The job (CMD, in a process group of its own, and what it starts) is mongolock's: signals\n"+
			"sent to mongolock are passed to the whole job; if the lock is lost while CMD runs, the job\n"+
			"gets SIGTERM and then SIGKILL, both before the lease can expire on the server, and\n"+
			"mongolock exits 76 whatever CMD's status; what CMD leaves running when it exits gets\n"+
			"SIGTERM, then SIGKILL after --grace; mongolock exits, and releases the lock, only once\n"+
			"the job is gone. On Linux the whole job gets SIGKILL if mongolock itself dies.\n"+
			"Gives up with exit status 75 if the lock is still held after --wait (saying who holds it\n"+
			"and until when, unless --quiet), and with 128+N on signal N before CMD starts (130 for\n"+
			"SIGINT).\n"+
			"--hold-at-least D keeps the lock taken until D after it was acquired however soon CMD\n"+
			"exits, so that hosts whose cron fires a little apart run the job once: take D a little\n"+
			"under the schedule's period. --hold-at-most D ends a job still running D after it\n"+
			"started (SIGTERM, SIGKILL after --grace, the whole job), releases the lock once the job\n"+
			"is gone, and exits 124, as timeout(1).\n"+
			"--limit N lets up to N jobs run at once (a semaphore of N permits, as consul lock -n);\n"+
			"every host must give the same N. The job also gets MONGOLOCK_SLOT, its permit's number.")
	ttl := fs.Duration("ttl", mongolock.DefaultTTL, "lease length, renewed while CMD runs")
	wait := fs.Duration("wait", -1, "give up (exit 75) if not locked within this time; 0 tries once; default waits forever")
	grace := fs.Duration("grace", 0, "time between SIGTERM and SIGKILL when the lock is lost (default TTL/20; must be below TTL/10)")
	owner := fs.String("owner", "", "owner recorded with the lock (default hostname:pid)")
	least := fs.Duration("hold-at-least", 0, "keep the lock until this long after acquiring it, however soon CMD exits")
	most := fs.Duration("hold-at-most", 0, "end CMD (exit 124) if it still runs this long after it started; 0: no cap")
	quiet := fs.Bool("quiet", false, "say nothing when the lock is held by another (exit 75)")
	limit := fs.Int("limit", 0, "let up to this many jobs hold NAME at once (a semaphore, as consul lock -n); every host must give the same")
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
	if *least < 0 || *most < 0 || (*most > 0 && *most < *least) {
		fmt.Fprintf(c.stderr, "mongolock run: --hold-at-least %v and --hold-at-most %v must not be negative, "+
			"and the cap not below the least hold\n", *least, *most)
		return exitUsage
	}
	limited := false
	fs.Visit(func(f *flag.Flag) { limited = limited || f.Name == "limit" })
	if limited && (*limit < 1 || *limit > mongolock.MaxLimit || *least > 0) {
		fmt.Fprintf(c.stderr, "mongolock run: --limit %d must be between 1 and %d, and not given with --hold-at-least\n",
			*limit, mongolock.MaxLimit)
		return exitUsage
	}
	c.quiet = *quiet

	// Signals arrive from here on: until CMD starts, a terminating one
	// ends the wait (exit 128+N); while CMD runs, each is passed to its
	// process group.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, notifiable()...)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got atomic.Int32 // the terminating signal received before CMD started
	handoff := make(chan struct{})
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		for {
			select {
			case sig := <-sigs:
				if terminating(sig) {
					got.CompareAndSwap(0, int32(sig.(syscall.Signal)))
					cancel()
				}
			case <-handoff:
				return
			}
		}
	}()
	stopWatching := func() int {
		close(handoff)
		<-watching
		for drained := false; !drained; { // a signal queued as the watcher stopped
			select {
			case sig := <-sigs:
				if terminating(sig) {
					got.CompareAndSwap(0, int32(sig.(syscall.Signal)))
				}
			default:
				drained = true
			}
		}
		if sig := got.Load(); sig != 0 {
			fmt.Fprintf(c.stderr, "mongolock: %v before the command started\n", syscall.Signal(sig))
			return 128 + int(sig)
		}
		return 0
	}

	l := c.locker(ctx)
	if l == nil {
		if code := stopWatching(); code != 0 {
			return code
		}
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
		if code := stopWatching(); code != 0 {
			return code
		}
		return c.fail(err)
	}
	defer s.Close()
	// The cap is timed here, not by WithHoldAtMost: the lock stays held,
	// and renewed, until the capped job is gone.
	t := mutexTaker(s.NewMutex(name, mongolock.WithHoldAtLeast(*least)))
	if limited { // even --limit 1: hosts giving other limits are told
		t = semaphoreTaker(s.NewSemaphore(name, *limit))
	}

	h, code, ok := c.acquire(ctx, t, *wait)
	if sig := stopWatching(); sig != 0 {
		if ok {
			h.release()
		}
		return sig
	}
	if !ok {
		return code
	}
	defer c.unlock(h)
	adoptOrphans()
	return c.runHeld(h, argv, *grace, *most, sigs)
}

// held is what run holds while the job runs: a Mutex's hold, or a
// semaphore's permit.
type held struct {
	name    string
	slot    int // a permit's; -1 for a Mutex
	done    <-chan struct{}
	err     func() error
	token   int64
	release func() error
}

// taker takes the lock NAME: one attempt, or a wait.
type taker struct {
	name      string
	try, wait func(ctx context.Context) (held, error)
	taken     string // what a skipped run says of the lock's holders
}

func mutexTaker(m *mongolock.Mutex) taker {
	h := func() held { return held{m.Name(), -1, m.Done(), m.Err, m.Token(), m.Unlock} }
	return taker{
		name: m.Name(),
		try: func(ctx context.Context) (held, error) {
			err := m.TryLock(ctx)
			return h(), err
		},
		wait: func(ctx context.Context) (held, error) {
			err := m.Lock(ctx)
			return h(), err
		},
	}
}

func semaphoreTaker(sem *mongolock.Semaphore) taker {
	h := func(p *mongolock.Permit, err error) (held, error) {
		if err != nil {
			return held{}, err
		}
		return held{sem.Name(), p.Slot(), p.Done(), p.Err, p.Token(), p.Release}, nil
	}
	return taker{
		name:  sem.Name(),
		try:   func(ctx context.Context) (held, error) { return h(sem.TryAcquire(ctx)) },
		wait:  func(ctx context.Context) (held, error) { return h(sem.Acquire(ctx)) },
		taken: fmt.Sprintf("has all its %d permits held", sem.Limit()),
	}
}

// acquire takes the lock within wait (negative: forever); ctx ends on a
// terminating signal.
func (c *cli) acquire(ctx context.Context, t taker, wait time.Duration) (held, int, bool) {
	if wait == 0 {
		h, err := t.try(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return h, 0, false // a signal: the caller reports it
			}
			if errors.Is(err, mongolock.ErrLocked) {
				c.skipped(ctx, t, 0)
				return h, exitTimeout, false
			}
			return h, c.fail(err), false
		}
		return h, 0, true
	}
	wctx, cancel := ctx, context.CancelFunc(func() {})
	if wait > 0 {
		wctx, cancel = context.WithTimeout(ctx, wait)
	}
	defer cancel()
	h, err := t.wait(wctx)
	if err != nil {
		if ctx.Err() != nil {
			return h, 0, false // a signal: the caller reports it
		}
		if errors.Is(err, context.DeadlineExceeded) {
			c.skipped(ctx, t, wait)
			return h, exitTimeout, false
		}
		return h, c.fail(err), false
	}
	return h, 0, true
}

// skipped says, in one line unless --quiet, that the job does not run
// because name is held (after waiting wait, if positive), by whom and until
// when.
func (c *cli) skipped(ctx context.Context, t taker, wait time.Duration) {
	if c.quiet {
		return
	}
	name := t.name
	if t.taken != "" {
		after := ""
		if wait > 0 {
			after = fmt.Sprintf(" after %v", wait)
		}
		fmt.Fprintf(c.stderr, "mongolock: %q %s%s: not running the command\n", name, t.taken, after)
		return
	}
	held := "is held"
	if wait > 0 {
		held = fmt.Sprintf("is still held after %v", wait)
	}
	by := " by another"
	if c.locks != nil {
		sctx, cancel := context.WithTimeout(ctx, c.connectTimeout)
		defer cancel()
		if st, err := c.locks.Status(sctx, name); err == nil && st.Held {
			by = fmt.Sprintf(" by %s until %s (server time)", st.Owner, st.ExpiresAt.UTC().Format("2006-01-02T15:04:05.000Z"))
		}
	}
	fmt.Fprintf(c.stderr, "mongolock: %q %s%s: not running the command\n", name, held, by)
}

// unlock releases h once the job is gone, or keeps it until the least
// hold's end, and says so when that failed: the lock then expires with its
// lease, which may come before --hold-at-least's end.
func (c *cli) unlock(h held) {
	if err := h.release(); err != nil && !errors.Is(err, mongolock.ErrLockLost) && !errors.Is(err, mongolock.ErrNotHeld) {
		fmt.Fprintf(c.stderr, "mongolock: %v\n", err)
	}
}

// runHeld runs argv in a process group of its own while m is held, and
// returns its exit status; exitLost if the hold ended first; exitCapped if
// the job still ran most (if positive) after it started, and was ended.
func (c *cli) runHeld(m held, argv []string, grace, most time.Duration, sigs chan os.Signal) int {
	select {
	case <-m.done:
		fmt.Fprintf(c.stderr, "mongolock: lock %q lost before the command started (%v); not running it\n", m.name, m.err())
		return exitLost
	default:
	}
	cmd, err := jobCommand(argv)
	if err != nil {
		fmt.Fprintln(c.stderr, "mongolock:", err)
		return 127
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "MONGOLOCK_NAME="+m.name, "MONGOLOCK_TOKEN="+strconv.FormatInt(m.token, 10))
	if m.slot >= 0 {
		cmd.Env = append(cmd.Env, "MONGOLOCK_SLOT="+strconv.Itoa(m.slot))
	}
	restore := foreground(cmd)
	defer restore()
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(c.stderr, "mongolock:", err)
		return 127
	}
	// In the background of a terminal now, mongolock must not be stopped
	// by writing to it (stty tostop): its keepalive and kill timer run on.
	// Set after Start, so that the job does not inherit it.
	signal.Ignore(syscall.SIGTTOU)
	job := group(cmd.Process.Pid)
	reapOrphans(cmd.Process.Pid) // os/exec waits for the leader
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	lost := m.done
	wasLost, killed, wasCapped := false, false, false
	var kill, capped <-chan time.Time
	if most > 0 {
		capped = time.After(most)
	}
	reap := time.NewTicker(time.Second) // orphans of the job that exited
	defer reap.Stop()
	for {
		select {
		case <-reap.C:
			reapOrphans(cmd.Process.Pid)
			if killed { // processes adopted since the first SIGKILL
				job.signal(syscall.SIGKILL)
			}
		case sig := <-sigs:
			job.signal(sig.(syscall.Signal))
			if sig != syscall.SIGCONT && sig != syscall.SIGTSTP {
				job.signal(syscall.SIGCONT) // a stopped job must act on it
			}
		case <-lost:
			lost, wasLost = nil, true
			job.signal(syscall.SIGTERM) // before anything that could block
			kill = time.After(grace)
			fmt.Fprintf(c.stderr, "mongolock: lock %q lost (%v): terminating the job\n", m.name, m.err())
		case <-capped:
			// Still holding: the lock is released once the job is gone.
			capped, wasCapped = nil, true
			job.signal(syscall.SIGTERM)
			if kill == nil {
				kill = time.After(grace)
			}
			fmt.Fprintf(c.stderr, "mongolock: the job on %q ran past --hold-at-most %v: terminating it\n", m.name, most)
		case <-kill:
			job.signal(syscall.SIGKILL)
			kill, killed = nil, true
		case err := <-exited:
			code := exitStatus(err)
			reapOrphans(0) // the leader was waited for
			// What the command left in its group ends before the lock is
			// released: the job is the whole group.
			job.end(grace, kill, killed, c.stderr)
			if !wasLost {
				select {
				case <-m.done: // lost while the command ran, seen only now
					wasLost = m.err() != nil
				default:
				}
			}
			if wasLost {
				fmt.Fprintf(c.stderr, "mongolock: lock %q was lost while the command ran (its status was %d): exiting %d\n",
					m.name, code, exitLost)
				return exitLost
			}
			if wasCapped {
				fmt.Fprintf(c.stderr, "mongolock: the job on %q was ended at --hold-at-most (its status was %d): exiting %d\n",
					m.name, code, exitCapped)
				return exitCapped
			}
			return code
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
