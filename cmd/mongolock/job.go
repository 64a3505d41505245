//go:build unix

package main

import (
	"os"
	"syscall"
	"time"
)

// forwarded are the signals mongolock passes to the job's process group
// while it runs; the terminating ones end a wait for the lock instead.
var forwarded = []os.Signal{
	syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTSTP, syscall.SIGCONT,
}

func terminating(sig os.Signal) bool {
	switch sig {
	case syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT:
		return true
	}
	return false
}

// group is a job: the process group led by the process mongolock started,
// and (on Linux) the job's processes that left the group but were adopted
// by mongolock when their parent exited (a daemon that called setsid).
type group int

// signal sends sig to every process of the job.
func (g group) signal(sig syscall.Signal) {
	syscall.Kill(-int(g), sig)
	for _, pid := range adopted() {
		syscall.Kill(pid, sig)
	}
}

// alive reports whether any process of the job is left, once its leader
// was waited for; it reaps those that mongolock adopted.
func (g group) alive() bool {
	reapOrphans(0)
	return syscall.Kill(-int(g), 0) != syscall.ESRCH || len(adopted()) > 0
}

// end waits until the job is gone once its leader has exited: what is left
// gets SIGTERM at once, then SIGKILL after grace, unless a kill timer
// already runs or SIGKILL was already sent.
func (g group) end(grace time.Duration, kill <-chan time.Time, killed bool) {
	if !g.alive() {
		return
	}
	switch {
	case killed:
		g.signal(syscall.SIGKILL)
	case kill == nil:
		g.signal(syscall.SIGTERM)
		kill = time.After(grace)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for g.alive() {
		select {
		case <-kill:
			g.signal(syscall.SIGKILL)
			kill = nil
		case <-tick.C:
		}
	}
}
