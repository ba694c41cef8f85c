package nodeinstall

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestKubeletReadyFromConfig(t *testing.T) {
	healthy := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || !healthy {
			http.Error(w, "[-]syncloop failed", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))

	root := t.TempDir()
	cfg := "/var/lib/kubelet/config.yaml"
	write := func(s string) { writeFile(t, filepath.Join(root, cfg), s) }
	r := &DefaultReadiness{HostRoot: root}
	ctx := context.Background()

	write("kind: KubeletConfiguration\nhealthzBindAddress: 0.0.0.0\nhealthzPort: " + port + "\n")
	if err := r.KubeletReady(ctx); err != nil {
		t.Fatalf("healthy kubelet: %v", err)
	}
	healthy = false
	if err := r.KubeletReady(ctx); err == nil || !strings.Contains(err.Error(), "syncloop") {
		t.Errorf("unhealthy kubelet: %v", err)
	}
	write("kind: KubeletConfiguration\nhealthzPort: 0\n")
	if err := r.KubeletReady(ctx); err != nil {
		t.Errorf("healthz disabled: %v", err)
	}
	write("kind: KubeletConfiguration\n")
	if u, err := r.healthzURL(); err != nil || u != "http://127.0.0.1:10248/healthz" {
		t.Errorf("default healthz URL = %q, %v", u, err)
	}
}

type fakeRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	ready bool
}

func (f *fakeRuntime) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{RuntimeName: "containerd", RuntimeVersion: "v2.4.2"}, nil
}

func (f *fakeRuntime) Status(context.Context, *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	return &runtimeapi.StatusResponse{Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
		{Type: runtimeapi.RuntimeReady, Status: f.ready, Reason: "NotYet"},
	}}}, nil
}

func TestCRIReady(t *testing.T) {
	dir, err := os.MkdirTemp("", "cg-ready-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "cri.sock")
	ctx := context.Background()
	if err := CRIReady(ctx, sock); err == nil {
		t.Fatal("CRIReady on a missing socket succeeded")
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	rt := &fakeRuntime{}
	s := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(s, rt)
	go s.Serve(l)
	defer s.Stop()
	if err := CRIReady(ctx, sock); err == nil || !strings.Contains(err.Error(), "runtime not ready") {
		t.Errorf("runtime not ready: %v", err)
	}
	rt.ready = true
	if err := CRIReady(ctx, sock); err != nil {
		t.Errorf("ready runtime: %v", err)
	}
}
