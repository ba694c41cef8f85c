package harness

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// CriguardBinary returns a criguard binary for the tests: $CRIGUARD_E2E_BINARY
// when set (the Makefile passes the one it built), else one built from
// ./cmd/criguard into the e2e cache, rebuilt only when a non-test .go file,
// go.mod or go.sum of the module is newer than it.
func CriguardBinary(t T) string {
	t.Helper()
	if p := os.Getenv("CRIGUARD_E2E_BINARY"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("harness: CRIGUARD_E2E_BINARY=%s: %v", p, err)
		}
		return p
	}
	return buildBinary(t, "./cmd/criguard", "criguard")
}

// buildBinary builds the main package pkg (relative to the repository root)
// into the e2e cache as name, unless the cached binary is newer than every
// source. Concurrent builders each write a private file and rename it into
// place, so a reader never sees half a binary.
func buildBinary(t T, pkg, name string) string {
	t.Helper()
	root := RepoRoot(t)
	out := filepath.Join(CacheDir(t), name)
	if st, err := os.Stat(out); err == nil && !sourcesNewer(root, st.ModTime()) {
		return out
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatalf("harness: %v", err)
	}
	tmp := fmt.Sprintf("%s.%d.tmp", out, os.Getpid())
	cmd := exec.CommandContext(t.Context(), "go", "build", "-trimpath", "-o", tmp, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		_ = os.Remove(tmp)
		t.Fatalf("harness: building %s: %v\n%s", pkg, err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		t.Fatalf("harness: %v", err)
	}
	return out
}

// sourcesNewer reports whether any non-test Go source, go.mod or go.sum of
// the module changed after ts.
func sourcesNewer(root string, ts time.Time) bool {
	newer := false
	errStop := errors.New("stop")
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", ".cache", "bin", "testdata", "docs":
				if p != root {
					return filepath.SkipDir
				}
			}
			return nil
		}
		n := d.Name()
		if (strings.HasSuffix(n, ".go") && !strings.HasSuffix(n, "_test.go")) || n == "go.mod" || n == "go.sum" {
			if info, err := d.Info(); err == nil && info.ModTime().After(ts) {
				newer = true
				return errStop
			}
		}
		return nil
	})
	return newer
}

// Criguard is a running `criguard serve`.
type Criguard struct {
	// Socket is the path criguard listens on.
	Socket string
	// Upstream is the socket it forwards to.
	Upstream string
	// Dir is its temporary directory (socket and log).
	Dir string
	// MetricsAddress is --metrics-address: the caller's, or a free loopback
	// port the harness picked so parallel criguards do not fight over the default.
	MetricsAddress string

	proc *process
}

// Endpoint is "unix://<Socket>".
func (g *Criguard) Endpoint() string { return "unix://" + g.Socket }

// Logs returns everything criguard logged so far (all restarts).
func (g *Criguard) Logs() string { return g.proc.logs() }

// Exited reports whether the criguard process has ended.
func (g *Criguard) Exited() bool { return g.proc.exited() }

// StartCriguard runs `criguard serve --listen unix://<tmp>/criguard.sock
// --upstream unix://<upstream> extraArgs...` and waits until its socket accepts
// connections. Unless extraArgs set --metrics-address, the harness adds one on
// a free loopback port. It is stopped with SIGTERM at cleanup.
func StartCriguard(t T, upstream string, extraArgs ...string) *Criguard {
	t.Helper()
	bin := CriguardBinary(t)
	dir := TempDir(t, "guard")
	g := &Criguard{Socket: filepath.Join(dir, "criguard.sock"), Upstream: socketPath(upstream), Dir: dir}
	args := []string{"serve", "--listen", "unix://" + g.Socket, "--upstream", endpoint(upstream)}
	for i, a := range extraArgs {
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && name == "metrics-address" {
			if hasVal {
				g.MetricsAddress = val
			} else if i+1 < len(extraArgs) {
				g.MetricsAddress = extraArgs[i+1]
			}
			break
		}
	}
	if g.MetricsAddress == "" {
		g.MetricsAddress = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
		args = append(args, "--metrics-address", g.MetricsAddress)
	}
	args = append(args, extraArgs...)
	g.proc = startProcess(t, "criguard", filepath.Join(dir, "criguard.log"), os.Environ(), bin, args...)
	t.Cleanup(func() { g.proc.stop(10 * time.Second) })
	dumpOnFailure(t, g.proc, 40)
	waitSocket(t, g.proc, g.Socket, 30*time.Second)
	return g
}

// Stop sends SIGTERM and waits (SIGKILL after 10s); it fails the test when
// criguard did not drain and exit in time.
func (g *Criguard) Stop(t T) {
	t.Helper()
	if !g.proc.stop(10 * time.Second) {
		t.Fatalf("harness: criguard did not exit within 10s of SIGTERM")
	}
}

// Kill sends SIGKILL and waits: a crash, with no drain and the socket file left behind.
func (g *Criguard) Kill(t T) {
	t.Helper()
	if g.proc.exited() {
		return
	}
	g.proc.signal(syscall.SIGKILL)
	if !g.proc.wait(10 * time.Second) {
		t.Fatalf("harness: criguard survived SIGKILL for 10s")
	}
}

// Restart stops criguard (SIGTERM) and starts it again with the same arguments.
func (g *Criguard) Restart(t T) {
	t.Helper()
	g.Stop(t)
	if err := g.proc.restart(); err != nil {
		t.Fatalf("harness: restarting criguard: %v", err)
	}
	waitSocket(t, g.proc, g.Socket, 30*time.Second)
}

// ExitCode waits up to timeout for criguard to exit and returns its exit code
// (-1 if it is still running).
func (g *Criguard) ExitCode(timeout time.Duration) int {
	if !g.proc.wait(timeout) {
		return -1
	}
	var ee *exec.ExitError
	if err := g.proc.waitErr(); errors.As(err, &ee) {
		return ee.ExitCode()
	} else if err != nil {
		return -1
	}
	return 0
}

// RunCriguard runs a one-shot criguard subcommand (verify, policy, version,
// serve that should fail...) with a 2-minute limit and returns its output and
// exit code.
func RunCriguard(t T, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	return RunCriguardEnv(t, nil, args...)
}

// RunCriguardEnv is RunCriguard with extra environment variables ("K=V").
func RunCriguardEnv(t T, env []string, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	bin := CriguardBinary(t)
	cmd := exec.CommandContext(t.Context(), bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	timer := time.AfterFunc(2*time.Minute, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return o.String(), e.String(), 0
	case errors.As(err, &ee):
		return o.String(), e.String(), ee.ExitCode()
	default:
		t.Fatalf("harness: running criguard %s: %v", strings.Join(args, " "), err)
		return "", "", -1
	}
}

// BareForwarder is the benchmark floor: a separate process whose gRPC
// unknown-service handler forwards raw unary calls and does nothing else
// (e2e/harness/bareforwarder).
type BareForwarder struct {
	Socket string
	proc   *process
}

// Endpoint is "unix://<Socket>".
func (f *BareForwarder) Endpoint() string { return "unix://" + f.Socket }

// StartBareForwarder runs the bare forwarder in front of upstream. impl is
// "plain" (an independent []byte handler) or "criproxy"
// (criproxy.NewBareForwarder).
func StartBareForwarder(t T, upstream, impl string) *BareForwarder {
	t.Helper()
	bin := buildBinary(t, "./e2e/harness/bareforwarder", "bareforwarder")
	dir := TempDir(t, "fwd")
	f := &BareForwarder{Socket: filepath.Join(dir, "fwd.sock")}
	f.proc = startProcess(t, "bareforwarder "+impl, filepath.Join(dir, "fwd.log"), os.Environ(), bin,
		"-listen", f.Socket, "-upstream", socketPath(upstream), "-impl", impl)
	t.Cleanup(func() { f.proc.stop(5 * time.Second) })
	dumpOnFailure(t, f.proc, 20)
	waitSocket(t, f.proc, f.Socket, 30*time.Second)
	return f
}
