package chaos

import "syscall"

// memberProcAttr makes the kernel SIGKILL a member if the test process dies,
// so a crashed or timed-out test leaves no member behind.
func memberProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
