package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is one long-running component started by the harness; its output
// goes to a log file so it survives the process and can be shown on failure.
type process struct {
	name    string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startProcess starts bin with args, appending its output to logPath. The
// process dies with the test binary (Pdeathsig) so a crashed test leaves no
// daemon behind.
func startProcess(t T, name, logPath string, env []string, bin string, args ...string) *process {
	t.Helper()
	p := &process{name: name, logPath: logPath}
	if err := p.start(env, bin, args...); err != nil {
		t.Fatalf("harness: starting %s: %v", name, err)
	}
	return p
}

func (p *process) start(env []string, bin string, args ...string) error {
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return err
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.err = cmd, done, nil
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// restart starts the same command again after the previous one ended.
func (p *process) restart() error {
	p.mu.Lock()
	old := p.cmd
	p.mu.Unlock()
	if !p.exited() {
		return fmt.Errorf("%s is still running", p.name)
	}
	return p.start(old.Env, old.Path, old.Args[1:]...)
}

func (p *process) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

func (p *process) exited() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return true
	default:
		return false
	}
}

func (p *process) waitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// wait waits up to d for the process to end and reports whether it did.
func (p *process) wait(d time.Duration) bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return true
	default:
	}
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// signal sends sig to the process (not its group: containerd's shims and
// kubelet's children are handled by their owners' cleanup).
func (p *process) signal(sig syscall.Signal) {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	_ = cmd.Process.Signal(sig)
}

// stop sends SIGTERM, waits grace, then SIGKILLs. It reports whether SIGTERM sufficed.
func (p *process) stop(grace time.Duration) bool {
	if p.exited() {
		return true
	}
	p.signal(syscall.SIGTERM)
	if p.wait(grace) {
		return true
	}
	p.signal(syscall.SIGKILL)
	p.wait(10 * time.Second)
	return false
}

func (p *process) logs() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// dumpOnFailure registers a cleanup that prints the tail of a component's log
// when the test failed, so a failure explains itself.
func dumpOnFailure(t T, p *process, lines int) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- %s log (last %d lines, full log was %s) ---\n%s", p.name, lines, p.logPath, tail(p.logs(), lines))
		}
	})
}

// pidsWithArg lists processes whose command line contains arg as one whole
// argument. The harness uses it with its own unique temp paths (a shim's
// -address), never with a bare program name.
func pidsWithArg(arg string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(b), "\x00") {
			if a == arg {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// killPids SIGKILLs pids and waits briefly for them to disappear.
func killPids(pids []int) error {
	var errs []error
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill %d: %w", pid, err))
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for time.Now().Before(deadline) {
			if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
				break
			}
			// A zombie whose parent is gone is reaped by init; do not spin forever.
			if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && strings.Contains(string(st), ") Z ") {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// unmountUnder detaches every mount at or below dir, deepest first.
func unmountUnder(t T, dir string) {
	for _, mp := range mountsUnder(dir) {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			t.Logf("harness: unmount %s: %v", mp, err)
		}
	}
}

// mountsUnder lists mount points at or below dir from /proc/self/mountinfo,
// longest path first so children go before parents.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	dir = filepath.Clean(dir)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountPath(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	// Deepest first; duplicates (stacked mounts) stay, each unmount pops one.
	for i := 0; i < len(out); i++ {
		for j := i + 1; j < len(out); j++ {
			if len(out[j]) > len(out[i]) {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for space etc.).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
