package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// jobCommand returns the command that runs argv as a job: a guard (this
// program again, see guard) that leads a new process group and runs argv
// in it. The kernel sends the guard SIGUSR1 when mongolock dies (kill -9,
// the OOM killer), and the guard then kills the whole group, so that no
// part of the job runs on without the lock.
func jobCommand(argv []string) (*exec.Cmd, error) {
	if _, err := exec.LookPath(argv[0]); err != nil {
		return nil, err
	}
	self := "/proc/self/exe" // this very binary, even if replaced on disk since
	if _, err := os.Stat(self); err != nil {
		if self, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	args := append([]string{guardCommand, strconv.Itoa(os.Getpid()), "--"}, argv...)
	cmd := exec.Command(self, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGUSR1}
	return cmd, nil
}

// prSetChildSubreaper is prctl's PR_SET_CHILD_SUBREAPER.
const prSetChildSubreaper = 36

// adoptOrphans makes mongolock the parent of the job's processes whose own
// parent exits, so that it can reap them, signal them and tell when the
// job is gone.
func adoptOrphans() {
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
}

// leader is the pid of the job's leader while mongolock has not waited
// for it: adopted and reapOrphans leave it to os/exec.
var leader int

// children returns the children of pid.
func children(pid string) []int {
	var pids []int
	tasks, _ := filepath.Glob("/proc/" + pid + "/task/*/children")
	for _, t := range tasks {
		data, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(data)) {
			if n, err := strconv.Atoi(f); err == nil {
				pids = append(pids, n)
			}
		}
	}
	return pids
}

// adopted returns mongolock's children other than the job's leader: the
// job's orphans (including those that left its process group).
func adopted() []int {
	var pids []int
	for _, pid := range children("self") {
		if pid != leader {
			pids = append(pids, pid)
		}
	}
	return pids
}

// jobProcesses returns every process of the job rooted at leaderPID that
// /proc shows: the leader's descendants and mongolock's adopted orphans
// with theirs, whatever process group or session they moved to.
func jobProcesses(leaderPID int) []int {
	var out []int
	seen := map[int]bool{}
	var walk func(pid int)
	walk = func(pid int) {
		if seen[pid] {
			return
		}
		seen[pid] = true
		out = append(out, pid)
		for _, c := range children(strconv.Itoa(pid)) {
			walk(c)
		}
	}
	if leader != 0 {
		walk(leaderPID)
	}
	for _, pid := range adopted() {
		walk(pid)
	}
	return out
}

// reapOrphans waits for the adopted children that exited, so that they do
// not linger as zombies while the job runs. except is the leader's pid
// while it runs (0 once waited for).
func reapOrphans(except int) {
	leader = except
	for _, pid := range adopted() {
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	}
}

// foreground makes the job the terminal's foreground process group when
// mongolock runs in the foreground of a terminal that is its standard
// input, output and error alike (so that the job can read it, and Ctrl-C
// reaches it; not in a pipeline, whose other members would be stopped),
// and returns a function that takes the terminal back. Ctrl-Z then stops
// the job but not mongolock, which keeps the lock: it is not supported.
func foreground(cmd *exec.Cmd) (restore func()) {
	var pgrp int32
	for fd := uintptr(0); fd <= 2; fd++ {
		var p int32
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&p))); e != 0 ||
			int(p) != syscall.Getpgrp() {
			return func() {}
		}
		pgrp = p
	}
	cmd.SysProcAttr.Foreground = true
	cmd.SysProcAttr.Ctty = 0
	return func() {
		// Taking the terminal back from a background group raises SIGTTOU.
		ignoreTTOU(func() {
			syscall.Syscall(syscall.SYS_IOCTL, 0, syscall.TIOCSPGRP, uintptr(unsafe.Pointer(&pgrp)))
		})
	}
}
