package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// T is what the harness needs from a test: *testing.T and *testing.B satisfy it,
// and Standalone returns one for programs such as the demo.
type T interface {
	Helper()
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
	Failed() bool
	Name() string
	Context() context.Context
}

// RequireRoot fails the test unless it runs as root: the harness starts
// containerd, runc and kubelet, which need it.
func RequireRoot(t T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("e2e tests need root (containerd, runc and kubelet run for real); run them with `sudo make e2e`")
	}
}

// RepoRoot returns the directory holding criguard's go.mod, found from the
// working directory upwards.
func RepoRoot(t T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("harness: working directory: %v", err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/criguard/criguard\n") {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("harness: no criguard go.mod above the working directory; run from inside the repository")
		}
		dir = parent
	}
}

// CacheDir is where `make tools` installs the real components:
// $CRIGUARD_E2E_CACHE, else <repo>/.cache/e2e.
func CacheDir(t T) string {
	t.Helper()
	if d := os.Getenv("CRIGUARD_E2E_CACHE"); d != "" {
		return d
	}
	return filepath.Join(RepoRoot(t), ".cache", "e2e")
}

// Tool returns the path of an installed tool: the e2e cache's bin directory
// first, then PATH. A missing tool fails the test with the command that installs it.
func Tool(t T, name string) string {
	t.Helper()
	return tool(t, name, true)
}

// tool is Tool; usePath=false insists on the cache (containerd 2.x and its
// shim, whose names Debian's 1.6 packages also put on PATH).
func tool(t T, name string, usePath bool) string {
	t.Helper()
	p := filepath.Join(CacheDir(t), "bin", name)
	if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
		return p
	}
	if p, err := exec.LookPath(name); err == nil && usePath {
		return p
	}
	t.Fatalf("harness: tool %q is not installed (looked in %s and PATH); run `make tools` (e2e/tools/install.sh) first",
		name, filepath.Join(CacheDir(t), "bin"))
	return ""
}

// TempDir creates a short directory under /tmp (unix socket paths must stay
// under 108 bytes, which t.TempDir's long names can exceed) and removes it at
// cleanup. Mounts left below it are detached first.
func TempDir(t T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cg-"+prefix+"-")
	if err != nil {
		t.Fatalf("harness: temp dir: %v", err)
	}
	t.Cleanup(func() {
		unmountUnder(t, dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("harness: removing %s: %v", dir, err)
		}
	})
	return dir
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("harness: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Eventually calls f until it returns nil or timeout passes, then fails the
// test with what was awaited and f's last error.
func Eventually(t T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	if err := poll(t.Context(), timeout, f); err != nil {
		t.Fatalf("harness: timed out after %s waiting for %s: %v", timeout, what, err)
	}
}

// poll calls f every 100ms until it returns nil, ctx ends or timeout passes.
func poll(ctx context.Context, timeout time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-tick.C:
		}
	}
}

// endpoint turns a socket path into a unix:// endpoint; endpoints pass unchanged.
func endpoint(s string) string {
	if strings.Contains(s, "://") {
		return s
	}
	return "unix://" + s
}

// socketPath strips unix:// from an endpoint.
func socketPath(s string) string {
	return strings.TrimPrefix(s, "unix://")
}

// waitSocket waits until something accepts connections on a unix socket, or
// the process p exits (then its logs explain why).
func waitSocket(t T, p *process, sock string, timeout time.Duration) {
	t.Helper()
	err := poll(t.Context(), timeout, func() error {
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited: %v", p.name, p.waitErr())
		}
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		logs := ""
		if p != nil {
			logs = tail(p.logs(), 40)
		}
		t.Fatalf("harness: %s did not serve %s: %v\n--- last log lines ---\n%s", p.name, sock, err, logs)
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WriteFile writes content to path (mode 0644) or fails the test.
func WriteFile(t T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatalf("harness: %v", err)
	}
}
