package forward

import (
	"context"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// BenchmarkHop measures one unary CRI call made straight at the in-process fake
// runtime, through the bare forwarder (the floor of any proxy hop) and through
// criguard. criguard's added latency is criguard-direct; its target is at most
// 1.15x bare-direct. The real-containerd figures come from the e2e benchmark.
func BenchmarkHop(b *testing.B) {
	e := startProxy(b, Options{}, true)
	bare := startBare(b, e)
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
		{"bare", bare},
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

// startBare serves the bare forwarder (no decoding, no Guard) in front of e's
// upstream connection until the benchmark ends, and returns a client of it.
func startBare(b *testing.B, e *proxyEnv) *grpc.ClientConn {
	b.Helper()
	sock := filepath.Join(e.dir, "bare.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	bare := NewBareForwarder(e.upConn)
	go bare.Serve(lis)
	b.Cleanup(bare.Stop)
	return clientConn(b, sock)
}

// BenchmarkHopInterleaved makes each Version call on direct, bare and criguard in
// turn, so the three share the same machine noise (these machines are shared),
// and reports each path's median latency and criguard's added latency over the
// bare forwarder's (target <= 1.15).
func BenchmarkHopInterleaved(b *testing.B) {
	e := startProxy(b, Options{}, true)
	bare := startBare(b, e)
	clients := []runtimeapi.RuntimeServiceClient{
		runtimeapi.NewRuntimeServiceClient(e.direct),
		runtimeapi.NewRuntimeServiceClient(bare),
		runtimeapi.NewRuntimeServiceClient(e.proxy),
	}
	ctx := context.Background()
	req := &runtimeapi.VersionRequest{Version: "v1"}
	var samples [3][]time.Duration
	order := []int{0, 1, 2}
	for i := 0; b.Loop(); i++ {
		// Rotate who goes first, so no path always runs on a warm (or cold) cache.
		for j := range order {
			order[j] = (i + j) % 3
		}
		for _, p := range order {
			start := time.Now()
			if _, err := clients[p].Version(ctx, req); err != nil {
				b.Fatal(err)
			}
			samples[p] = append(samples[p], time.Since(start))
		}
	}
	var p50 [3]float64
	for p := range samples {
		s := samples[p]
		slices.Sort(s)
		p50[p] = float64(s[len(s)/2].Microseconds())
	}
	b.ReportMetric(p50[0], "direct-p50-µs")
	b.ReportMetric(p50[1], "bare-p50-µs")
	b.ReportMetric(p50[2], "criguard-p50-µs")
	if added := p50[1] - p50[0]; added > 0 {
		b.ReportMetric((p50[2]-p50[0])/added, "criguard/bare-added")
	}
}
