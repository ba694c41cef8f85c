package criproxy

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// BenchmarkHop measures one unary CRI call made straight at the in-process fake
// runtime, through the bare forwarder (the floor of any proxy hop) and through
// criguard. criguard's added latency is criguard-direct; its target is at most
// 1.15x bare-direct. The real-containerd figures come from the e2e benchmark.
func BenchmarkHop(b *testing.B) {
	e := startProxy(b, Options{}, true)
	bareSock := filepath.Join(e.dir, "bare.sock")
	lis, err := net.Listen("unix", bareSock)
	if err != nil {
		b.Fatal(err)
	}
	bare := NewBareForwarder(e.upConn)
	go bare.Serve(lis)
	b.Cleanup(bare.Stop)
	guarded := startProxy(b, Options{Guard: funcGuard{
		pull: func(ctx context.Context, r *runtimeapi.PullImageRequest, next PullFunc) (*runtimeapi.PullImageResponse, error) {
			return next(ctx, r)
		},
	}}, true)

	paths := []struct {
		name string
		conn *grpc.ClientConn
	}{
		{"direct", e.direct},
		{"bare", clientConn(b, bareSock)},
		{"criguard", e.proxy},
	}
	ctx := context.Background()
	for _, p := range paths {
		b.Run("Version/"+p.name, func(b *testing.B) {
			c := runtimeapi.NewRuntimeServiceClient(p.conn)
			req := &runtimeapi.VersionRequest{Version: "v1"}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Version(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// ListContainers with 50 containers' worth of answer: the label echo makes
	// the response about as big as containerd's for 50 containers (~25 KiB).
	listReq := &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		LabelSelector: map[string]string{"echo": string(make([]byte, 25<<10))}}}
	for _, p := range paths {
		b.Run("ListContainers25KiB/"+p.name, func(b *testing.B) {
			c := runtimeapi.NewRuntimeServiceClient(p.conn)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.ListContainers(ctx, listReq); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// PullImage through a Guard that only calls next: the cost of decoding.
	pullPaths := []struct {
		name string
		conn *grpc.ClientConn
	}{{"direct", guarded.direct}, {"criguard-guard-next", guarded.proxy}}
	for _, p := range pullPaths {
		b.Run("PullImage/"+p.name, func(b *testing.B) {
			c := runtimeapi.NewImageServiceClient(p.conn)
			req := &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "reg.example/app:1"}}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.PullImage(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
