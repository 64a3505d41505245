//go:build unix

package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// forwarded are the signals mongolock passes to the job's process group
// while it runs; the terminating ones end a wait for the lock instead.
var forwarded = []os.Signal{
	syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTSTP, syscall.SIGCONT,
}

// notifiable returns the forwarded signals that mongolock was not started
// with ignored: under nohup, SIGHUP stays ignored, for the job too.
func notifiable() []os.Signal {
	var out []os.Signal
	for _, sig := range forwarded {
		if !signal.Ignored(sig) {
			out = append(out, sig)
		}
	}
	return out
}

func terminating(sig os.Signal) bool {
	switch sig {
	case syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT:
		return true
	}
	return false
}

// group is a job: the process group led by the process mongolock started,
// every descendant of that process (one that moved to a group or session
// of its own included: GNU timeout does), and on Linux the job's processes
// adopted by mongolock when their parent exited.
type group int

// signal sends sig to every process of the job.
func (g group) signal(sig syscall.Signal) {
	syscall.Kill(-int(g), sig)
	for _, pid := range jobProcesses(int(g)) {
		syscall.Kill(pid, sig)
	}
}

// alive reports whether any process of the job is left, once its leader
// was waited for; it reaps those that mongolock adopted.
func (g group) alive() bool {
	reapOrphans(0)
	for {
		var ws syscall.WaitStatus
		if pid, err := syscall.Wait4(-int(g), &ws, syscall.WNOHANG, nil); err != nil || pid <= 0 {
			break
		}
	}
	// EPERM (a process of another user) counts as alive: only ESRCH is gone.
	return syscall.Kill(-int(g), 0) != syscall.ESRCH || len(jobProcesses(int(g))) > 0
}

// endBound bounds how long mongolock waits for processes that survive
// SIGKILL (a process of another user, a zombie nobody reaps).
const endBound = 10 * time.Second

// end waits until the job is gone once its leader has exited: what is left
// gets SIGTERM at once, then SIGKILL after grace and again on every tick
// (a process adopted after the first SIGKILL gets it too), unless a kill
// timer already runs or SIGKILL was already sent. It gives up, saying so,
// endBound after the first SIGKILL.
func (g group) end(grace time.Duration, kill <-chan time.Time, killed bool, stderr io.Writer) {
	if !g.alive() {
		return
	}
	if !killed && kill == nil {
		g.signal(syscall.SIGTERM)
		kill = time.After(grace)
	}
	var giveUp <-chan time.Time
	if killed {
		giveUp = time.After(endBound)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for g.alive() {
		if killed {
			g.signal(syscall.SIGKILL)
		}
		select {
		case <-kill:
			kill, killed = nil, true
			giveUp = time.After(endBound)
		case <-giveUp:
			fmt.Fprintln(stderr, "mongolock: some of the job's processes survived SIGKILL (another user's, or unreaped); giving up on them")
			return
		case <-tick.C:
		}
	}
}
