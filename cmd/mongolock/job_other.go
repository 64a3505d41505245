//go:build unix && !linux

package main

import "syscall"

// jobAttr puts the job in a process group of its own.
func jobAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// adoptOrphans does nothing here: orphans of the job go to init, which
// reaps them.
func adoptOrphans() {}
