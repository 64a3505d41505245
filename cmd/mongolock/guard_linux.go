package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// guardCommand is the hidden subcommand that leads a job's process group.
const guardCommand = "__job-guard"

// guard runs "PARENT -- CMD ARGS..." as the leader of the job's process
// group: it runs CMD, exits with its status (128+N if signal N ended it),
// and kills the whole group with SIGKILL if mongolock (PARENT) dies. It
// outlives the signals mongolock passes to the group; CMD gets them too.
func guard(args []string) int {
	if len(args) < 3 || args[1] != "--" {
		fmt.Fprintln(os.Stderr, "mongolock: the job guard is started by mongolock run")
		return exitUsage
	}
	parent, _ := strconv.Atoi(args[0])
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, append([]os.Signal{syscall.SIGUSR1}, forwarded...)...)
	orphaned := func() bool { return os.Getppid() != parent }
	adoptOrphans() // the job's orphans come to the guard, which can kill them
	self := os.Getpid()
	killJob := func() {
		syscall.Kill(-syscall.Getpgrp(), syscall.SIGKILL)
		leader = self
		for _, pid := range jobProcesses(self) {
			if pid != self {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if orphaned() { // mongolock died before the parent-death signal was set
		killJob()
		return 1
	}
	cmd := exec.Command(args[2], args[3:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "mongolock:", err)
		return 127
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tick := time.NewTicker(time.Second) // in case the signal was missed
	defer tick.Stop()
	for {
		select {
		case <-sigs: // SIGUSR1 from the kernel, or one mongolock passed to the job
			if orphaned() {
				killJob()
			}
		case <-tick.C:
			if orphaned() {
				killJob()
			}
			reapOrphans(cmd.Process.Pid) // orphans the guard adopted
		case err := <-exited:
			return exitStatus(err)
		}
	}
}

// ignoreTTOU runs f with SIGTTOU ignored.
func ignoreTTOU(f func()) {
	signal.Ignore(syscall.SIGTTOU)
	defer signal.Reset(syscall.SIGTTOU)
	f()
}
