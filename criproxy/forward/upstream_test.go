package forward

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	versionapi "github.com/containerd/containerd/api/services/version/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

type fakeContainerdVersion struct {
	versionapi.UnimplementedVersionServer
}

func (fakeContainerdVersion) Version(context.Context, *emptypb.Empty) (*versionapi.VersionResponse, error) {
	return &versionapi.VersionResponse{Version: "v2.fake", Revision: "r1"}, nil
}

// The Dial'ed connection carries no codec of its own: containerd's client and
// typed CRI clients work on it while the proxy forwards raw bytes over it.
func TestDialConnSharedByTypedClients(t *testing.T) {
	dir := shortTempDir(t)
	up := filepath.Join(dir, "up.sock")
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, newFakeRuntime())
	versionapi.RegisterVersionServer(srv, fakeContainerdVersion{})
	lis, err := net.Listen("unix", up)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	conn, err := Dial(context.Background(), "unix://"+up)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	proxy, err := NewServer(Options{Upstream: conn})
	if err != nil {
		t.Fatal(err)
	}
	psock := filepath.Join(dir, "p.sock")
	plis, err := ListenUnix(context.Background(), psock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	served := make(chan error, 1)
	go func() { served <- proxy.Serve(ctx, plis) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	client, err := containerd.NewWithConn(conn)
	if err != nil {
		t.Fatal(err)
	}
	through := runtimeapi.NewRuntimeServiceClient(clientConn(t, psock))
	for range 3 {
		v, err := client.Version(ctx)
		if err != nil || v.Version != "v2.fake" {
			t.Fatalf("containerd client on the Dial conn: %v, %v", v, err)
		}
		if _, err := through.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
			t.Fatalf("proxy on the same conn: %v", err)
		}
		if _, err := runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
			t.Fatalf("typed CRI client on the Dial conn: %v", err)
		}
	}
}

func TestDialRejectsNonUnix(t *testing.T) {
	if c, err := Dial(context.Background(), "dns:///containerd:1234"); err == nil {
		c.Close()
		t.Fatal("Dial accepted a non-unix target")
	}
}
