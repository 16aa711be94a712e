//go:build !linux

package chaos

import "syscall"

// memberProcAttr: only Linux can tie a child's life to its parent; elsewhere
// the test's cleanup kills the members.
func memberProcAttr() *syscall.SysProcAttr { return nil }
