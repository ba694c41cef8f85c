package enforce

import (
	"context"
	"io"
	"log/slog"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/criguard/criguard/verifier/policy"
)

// BenchmarkEnforcerCreateContainerCached is the CPU cost of judging a
// CreateContainer for an already-verified image, without I/O: the real policy
// engine answering from its verdict cache, an in-memory ImageStatus, the
// decision log line (JSON, discarded) and metrics. It is what criguard adds on
// top of the one ImageStatus call it makes to containerd (target <= 50 µs).
func BenchmarkEnforcerCreateContainerCached(b *testing.B) {
	reg, engine := fixtureEngine(b)
	ctx := context.Background()
	ref := reg.Ref("demo/signed-bundle", "1.0")
	d := engine.Evaluate(ctx, policy.Input{Image: ref})
	if !d.Allowed {
		b.Fatalf("fixture not allowed: %s", d.Reason)
	}
	images := &fakeImages{images: map[string]*runtimeapi.Image{imID: {Id: imID, RepoTags: []string{ref},
		RepoDigests: []string{reg.Host + "/demo/signed-bundle@" + d.Digest}}}}
	enf, err := New(Options{Judge: engine, Images: images, Sandboxes: newFakeSandboxes(), Metrics: NewMetrics(prometheus.NewRegistry()),
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	req := createReq(imID, ref)
	next := okCreate(nil)
	b.ReportAllocs()
	for b.Loop() {
		images.asked = images.asked[:0]
		if _, err := enf.CreateContainer(ctx, req, next); err != nil {
			b.Fatal(err)
		}
	}
}
