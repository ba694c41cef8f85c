package unit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Systemctl runs systemctl in the host's namespaces. From a privileged pod with
// hostPID and the host's root mounted at HostRoot, it chroots into HostRoot and
// runs the host's own nsenter to enter PID 1's mount, UTS, IPC, network and PID
// namespaces: the pod's image needs no nsenter, systemctl or libc of its own.
type Systemctl struct {
	// HostRoot is where the host's / is mounted ("/" when running on the host).
	HostRoot string
	// Timeout bounds each systemctl call (default 2 minutes: a kubelet restart
	// waits for kubelet's stop job).
	Timeout time.Duration
	// Nsenter is nsenter's path on the host (default: the first of the usual
	// places that exists under HostRoot).
	Nsenter string
}

// nsenterPaths are where distributions put nsenter (util-linux).
var nsenterPaths = []string{"/usr/bin/nsenter", "/bin/nsenter", "/usr/sbin/nsenter", "/sbin/nsenter"}

// Command builds the command that runs `systemctl args...` on the host.
func (s Systemctl) Command(ctx context.Context, args ...string) (*exec.Cmd, error) {
	root := s.HostRoot
	if root == "" {
		root = "/"
	}
	nsenter := s.Nsenter
	for _, p := range nsenterPaths {
		if nsenter != "" {
			break
		}
		if st, err := os.Stat(filepath.Join(root, p)); err == nil && st.Mode().IsRegular() {
			nsenter = p
			break
		}
	}
	if nsenter == "" {
		return nil, fmt.Errorf("no nsenter under host root %s (looked for %s): install util-linux on the node", root, strings.Join(nsenterPaths, ", "))
	}
	argv := append([]string{"nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--", "systemctl"}, args...)
	// The path is resolved by the child after chroot, so it is the host's nsenter.
	cmd := exec.CommandContext(ctx, nsenter)
	cmd.Args = argv
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	if filepath.Clean(root) != "/" {
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	}
	return cmd, nil
}

func (s Systemctl) run(ctx context.Context, args ...string) error {
	timeout := s.Timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd, err := s.Command(ctx, args...)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if len(msg) > 2000 {
			msg = msg[len(msg)-2000:]
		}
		return fmt.Errorf("systemctl %s on the host: %w: %s", strings.Join(args, " "), err, msg)
	}
	return nil
}

// DaemonReload makes systemd re-read unit files.
func (s Systemctl) DaemonReload(ctx context.Context) error { return s.run(ctx, "daemon-reload") }

// Enable enables a unit (its [Install] section) without starting it.
func (s Systemctl) Enable(ctx context.Context, unit string) error { return s.run(ctx, "enable", unit) }

// Disable removes a unit's [Install] links.
func (s Systemctl) Disable(ctx context.Context, unit string) error {
	return s.run(ctx, "disable", unit)
}

// Start starts a unit and waits for its start job.
func (s Systemctl) Start(ctx context.Context, unit string) error { return s.run(ctx, "start", unit) }

// Restart restarts a unit and waits for its start job.
func (s Systemctl) Restart(ctx context.Context, unit string) error {
	return s.run(ctx, "restart", unit)
}

// Stop stops a unit and waits for its stop job.
func (s Systemctl) Stop(ctx context.Context, unit string) error { return s.run(ctx, "stop", unit) }

// IsActive reports whether a unit is active. systemctl is-active exits non-zero
// for every other state; only a failure to run it at all is an error.
func (s Systemctl) IsActive(ctx context.Context, unit string) (bool, error) {
	err := s.run(ctx, "is-active", "--quiet", unit)
	if err == nil {
		return true, nil
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return false, nil
	}
	return false, err
}
