package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// syncBuffer is a log sink the test reads while serve writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type versionOnly struct {
	runtimeapi.UnimplementedRuntimeServiceServer
}

func (versionOnly) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{RuntimeName: "fake-runtime", RuntimeVersion: "9.9", RuntimeApiVersion: "v1"}, nil
}

// startUpstream serves a gRPC server at path: with CRI when cri is true, with
// nothing at all (a wrong --upstream) otherwise.
func startUpstream(t *testing.T, path string, cri bool) func() {
	t.Helper()
	srv := grpc.NewServer()
	if cri {
		runtimeapi.RegisterRuntimeServiceServer(srv, versionOnly{})
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	var once sync.Once
	stop := func() { once.Do(func() { srv.Stop(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func tempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "cgs") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func TestServeBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--log-format", "xml"}, "--log-format"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--drain-timeout", "0s"}, "--drain-timeout"},
		{[]string{"--upstream", "tcp://127.0.0.1:1"}, "only unix sockets"},
		{[]string{"--listen", ""}, "--listen"},
		{[]string{"extra"}, "unexpected arguments"},
		{[]string{"--no-such-flag"}, "no-such-flag"},
	}
	for _, tc := range tests {
		var stderr bytes.Buffer
		if code := runServe(context.Background(), tc.args, &bytes.Buffer{}, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2", tc.args, code)
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: stderr %q should mention %q", tc.args, stderr.String(), tc.want)
		}
	}
}

// An upstream that answers without CRI v1 is a wrong --upstream: serve exits 1
// naming it, and creates no socket.
func TestServeUpstreamNotCRI(t *testing.T) {
	dir := tempDir(t)
	up := filepath.Join(dir, "up.sock")
	startUpstream(t, up, false)
	listen := filepath.Join(dir, "run", "criguard.sock")
	var stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := runServe(ctx, []string{"--listen", listen, "--upstream", up, "--metrics-address", ""}, &bytes.Buffer{}, &stderr)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "does not serve CRI v1") || !strings.Contains(stderr.String(), up) {
		t.Errorf("stderr should say the upstream %s is not CRI v1:\n%s", up, stderr.String())
	}
	if _, err := os.Lstat(listen); err == nil {
		t.Errorf("listen socket %s created for a broken setup", listen)
	}
}

// serve starts even while the runtime is down (kubelet gets Unavailable), says
// so, notices when the runtime comes up, serves through it, and on SIGTERM
// (ctx) exits 0 and removes its socket.
func TestServeLifecycle(t *testing.T) {
	dir := tempDir(t)
	up := filepath.Join(dir, "up.sock")
	listen := filepath.Join(dir, "run", "criguard.sock")
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exit := make(chan int, 1)
	go func() {
		exit <- runServe(ctx, []string{"--listen", "unix://" + listen, "--upstream", up, "--log-format", "json", "--metrics-address", ""}, &bytes.Buffer{}, logs)
	}()
	waitFor(t, "listen socket", func() bool { _, err := os.Lstat(listen); return err == nil })
	fi, err := os.Lstat(listen)
	if err != nil || fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Fatalf("listen socket: %v %v, want a 0660 socket", fi.Mode(), err)
	}
	conn, err := grpc.NewClient("unix://"+listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	callCtx, callCancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer callCancel()
	if _, err := rt.Version(callCtx, &runtimeapi.VersionRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("Version with the runtime down: %v, want Unavailable", err)
	}

	startUpstream(t, up, true)
	waitFor(t, "Version through criguard", func() bool {
		v, err := rt.Version(callCtx, &runtimeapi.VersionRequest{})
		return err == nil && v.GetRuntimeName() == "fake-runtime"
	})
	waitFor(t, "log of the runtime answering", func() bool { return strings.Contains(logs.String(), "upstream answers") })

	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit %d after SIGTERM, want 0; logs:\n%s", code, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve still running 30s after its context ended")
	}
	if _, err := os.Lstat(listen); err == nil {
		t.Errorf("socket %s left behind", listen)
	}
	// Every log line is JSON, and the startup lines say what the operator needs.
	want := map[string]bool{"upstream not answering; serving anyway, CRI calls fail with Unavailable until it does": false, "criguard serving CRI": false, "criguard stopped": false}
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("log line is not JSON: %q", sc.Text())
		}
		if msg, _ := line["msg"].(string); msg != "" {
			if _, ok := want[msg]; ok {
				want[msg] = true
			}
		}
	}
	for msg, seen := range want {
		if !seen {
			t.Errorf("no log line %q in:\n%s", msg, logs.String())
		}
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for range 300 {
		if ok() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
