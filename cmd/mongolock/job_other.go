//go:build unix && !linux

package main

import (
	"os/exec"
	"syscall"
)

// jobCommand returns the command that runs argv in a process group of its
// own. Without Linux's parent-death signal, a job outlives a killed
// mongolock.
func jobCommand(argv []string) (*exec.Cmd, error) {
	if _, err := exec.LookPath(argv[0]); err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd, nil
}

// adoptOrphans does nothing here: orphans of the job go to init.
func adoptOrphans() {}

func adopted() []int { return nil }

func jobProcesses(int) []int { return nil }

func reapOrphans(int) {}

// foreground leaves the terminal alone here.
func foreground(*exec.Cmd) func() { return func() {} }

// guardCommand is the hidden subcommand that leads a job on Linux.
const guardCommand = "__job-guard"

func guard([]string) int { return exitUsage }
