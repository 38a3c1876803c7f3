//go:build unix

package connector

import (
	"os"
	"os/exec"
	"syscall"
)

// setProcessGroup puts the connector (the `sh -c` process and everything it starts) in its own
// process group, so that a connector that does not exit can be killed as a whole, even when the
// shell forked it instead of exec'ing it.
func setProcessGroup(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
}

// killProcessGroup sends SIGKILL to the process group led by p.
func killProcessGroup(p *os.Process) {
	if p != nil && p.Pid > 0 {
		_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
	}
}
