package main

import "syscall"

// jobAttr puts the job in a process group of its own and has the kernel
// kill it if mongolock dies (kill -9, the OOM killer). The parent-death
// signal reaches the command mongolock started; its own children are
// reached through the group by every signal mongolock sends.
func jobAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// prSetChildSubreaper is prctl's PR_SET_CHILD_SUBREAPER.
const prSetChildSubreaper = 36

// adoptOrphans makes mongolock the parent of the job's processes whose own
// parent exits, so that it can reap them and tell when the group is gone.
func adoptOrphans() {
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
}
