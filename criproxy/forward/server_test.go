package forward

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestListenUnix(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string) // what is at path beforehand
		wantErr string                          // "" = must listen
		check   func(t *testing.T, path string) // after a failed listen
	}{
		{name: "fresh, parent created 0750", prepare: func(*testing.T, string) {}},
		{name: "stale socket replaced", prepare: func(t *testing.T, path string) {
			mustMkdir(t, filepath.Dir(path))
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			l.SetUnlinkOnClose(false) // what a crashed server leaves behind
			l.Close()
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("stale socket not left behind: %v", err)
			}
		}},
		{name: "live socket refused", prepare: func(t *testing.T, path string) {
			mustMkdir(t, filepath.Dir(path))
			l, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
		}, wantErr: "another process is serving on it", check: func(t *testing.T, path string) {
			if c, err := net.Dial("unix", path); err != nil {
				t.Errorf("live server's socket was disturbed: %v", err)
			} else {
				c.Close()
			}
		}},
		{name: "regular file kept", prepare: func(t *testing.T, path string) {
			mustMkdir(t, filepath.Dir(path))
			if err := os.WriteFile(path, []byte("keep"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "not a socket is in the way", check: func(t *testing.T, path string) {
			if b, err := os.ReadFile(path); err != nil || string(b) != "keep" {
				t.Errorf("file at listen path changed: %q, %v", b, err)
			}
		}},
		{name: "parent is a file", prepare: func(t *testing.T, path string) {
			if err := os.WriteFile(filepath.Dir(path), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "cannot create its directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(shortTempDir(t), "run", "c.sock")
			tc.prepare(t, path)
			lis, err := ListenUnix(context.Background(), path)
			if tc.wantErr != "" {
				if err == nil {
					lis.Close()
					t.Fatalf("listened; want error containing %q", tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path) {
					t.Errorf("error %q should contain %q and the path", err, tc.wantErr)
				}
				if tc.check != nil {
					tc.check(t, path)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o660 {
				t.Errorf("socket mode %v, want socket 0660", fi.Mode())
			}
			if di, err := os.Stat(filepath.Dir(path)); err != nil || (tc.name == "fresh, parent created 0750" && di.Mode().Perm() != 0o750) {
				t.Errorf("parent dir: %v %v, want 0750", di.Mode(), err)
			}
			lis.Close()
			if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("socket left behind after Close: %v", err)
			}
		})
	}
}

func mustMkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
}

// An unwritable directory is named in the error. Root writes anywhere, so this
// runs as an unprivileged process only where the test is not root.
func TestListenUnixUnwritableDir(t *testing.T) {
	dir := filepath.Join(shortTempDir(t), "ro")
	mustMkdir(t, dir)
	if os.Geteuid() == 0 {
		// Root ignores mode bits; a directory that cannot hold entries still
		// fails: a path under a socket-less /proc entry is refused by the kernel.
		_, err := ListenUnix(context.Background(), "/proc/self/criguard-test.sock")
		if err == nil || !strings.Contains(err.Error(), "/proc/self/criguard-test.sock") {
			t.Fatalf("listen under /proc: %v, want an error naming the path", err)
		}
		return
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	_, err := ListenUnix(context.Background(), filepath.Join(dir, "c.sock"))
	if err == nil || !strings.Contains(err.Error(), "not writable") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("err = %v, want 'not writable' naming %s", err, dir)
	}
}

// Shutdown drains: a call in flight when Serve's context ends completes, a
// watch is ended with Unavailable so it does not hold the drain, and Serve
// returns nil.
func TestGracefulDrain(t *testing.T) {
	e := startProxy(t, Options{}, true)
	watch, err := e.rt().GetContainerEvents(context.Background(), &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	slow := make(chan error, 1)
	var resp *runtimeapi.ExecSyncResponse
	go func() {
		var err error
		resp, err = e.rt().ExecSync(context.Background(), &runtimeapi.ExecSyncRequest{ContainerId: "c9"})
		slow <- err
	}()
	for range 2 { // the watch and the slow call are both upstream
		select {
		case <-e.fake.started:
		case <-time.After(20 * time.Second):
			t.Fatal("calls never reached the upstream")
		}
	}
	served := make(chan error, 1)
	go func() { served <- e.stopProxy(t) }()

	// The watch ends promptly, telling kubelet to reconnect.
	for {
		_, err := watch.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "shutting down") {
			t.Errorf("watch ended with %v, want Unavailable 'shutting down'", err)
		}
		break
	}
	select {
	case err := <-served:
		t.Fatalf("Serve returned (%v) while a call was in flight", err)
	case err := <-slow:
		t.Fatalf("in-flight call ended (%v) before it was answered", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(e.fake.release)
	if err := <-slow; err != nil || string(resp.GetStdout()) != "done c9" {
		t.Fatalf("in-flight call: %v, %v", resp, err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := os.Lstat(e.proxySock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("listen socket left behind: %v", err)
	}
}

// A call that outlives the drain timeout is cut, and Serve still returns.
func TestDrainTimeout(t *testing.T) {
	e := startProxy(t, Options{DrainTimeout: 200 * time.Millisecond}, true)
	slow := make(chan error, 1)
	go func() {
		_, err := e.rt().ExecSync(context.Background(), &runtimeapi.ExecSyncRequest{ContainerId: "c"})
		slow <- err
	}()
	<-e.fake.started
	if err := e.stopProxy(t); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if err := <-slow; err == nil {
		t.Fatal("call past the drain timeout succeeded; it should have been cut")
	}
}

// With the runtime down, calls fail with Unavailable naming its socket (no
// hang: the caller's deadline is far away); once it is back, the same proxy
// serves again.
func TestUpstreamDownAndRestart(t *testing.T) {
	e := startProxy(t, Options{}, false)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := e.rt().Version(ctx, &runtimeapi.VersionRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), e.upSock) {
		t.Fatalf("runtime never started: %v, want Unavailable naming %s", err, e.upSock)
	}

	stop := serveFake(t, e.fake, e.upSock)
	waitVersion(t, e, codes.OK)
	stop()
	waitVersion(t, e, codes.Unavailable)
	serveFake(t, e.fake, e.upSock) // a restarted containerd, same socket
	waitVersion(t, e, codes.OK)
}

// waitVersion calls Version through the proxy until it returns want. The proxy
// needs a moment (its reconnect backoff is at most a second) to notice.
func waitVersion(t *testing.T, e *proxyEnv, want codes.Code) {
	t.Helper()
	var err error
	for range 200 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = e.rt().Version(ctx, &runtimeapi.VersionRequest{})
		cancel()
		if status.Code(err) == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("Version kept returning %v, want %v", err, want)
}

func TestProbe(t *testing.T) {
	dir := shortTempDir(t)
	up := filepath.Join(dir, "up.sock")
	serveFake(t, newFakeRuntime(), up)
	// A gRPC server without CRI: a wrong --upstream.
	wrong := filepath.Join(dir, "wrong.sock")
	lis, err := net.Listen("unix", wrong)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	tests := []struct {
		name     string
		target   string
		wantCode codes.Code
		wantMsg  string
	}{
		{"runtime", up, codes.OK, ""},
		{"runtime, unix URL", "unix://" + up, codes.OK, ""},
		{"no such socket", filepath.Join(dir, "missing.sock"), codes.Unavailable, "does not answer CRI Version"},
		{"not a CRI runtime", wrong, codes.Unimplemented, "does not serve CRI v1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := Dial(context.Background(), tc.target)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			v, err := Probe(ctx, conn)
			if status.Code(err) != tc.wantCode || (tc.wantMsg != "" && !strings.Contains(err.Error(), tc.wantMsg)) {
				t.Fatalf("Probe: %v, want %v %q", err, tc.wantCode, tc.wantMsg)
			}
			if err == nil && v.GetRuntimeName() != "fake" {
				t.Errorf("version %v", v)
			}
		})
	}
}

func TestSocketPath(t *testing.T) {
	cwd, _ := os.Getwd()
	tests := []struct{ in, want, wantErr string }{
		{"unix:///run/containerd/containerd.sock", "/run/containerd/containerd.sock", ""},
		{"/run/containerd/containerd.sock", "/run/containerd/containerd.sock", ""},
		{"unix:/run/x.sock", "/run/x.sock", ""},
		{"rel.sock", filepath.Join(cwd, "rel.sock"), ""},
		{"tcp://127.0.0.1:1234", "", "only unix sockets"},
		{"unix://", "", "empty socket path"},
		{"", "", "empty socket path"},
	}
	for _, tc := range tests {
		got, err := SocketPath(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("SocketPath(%q) = %q, %v; want error %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("SocketPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestNewServerNeedsUpstream(t *testing.T) {
	if _, err := NewServer(Options{}); err == nil {
		t.Fatal("NewServer without an upstream succeeded")
	}
}
