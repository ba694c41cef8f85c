//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criguard/criguard/e2e/harness"
)

// These benchmarks measure percentiles, not ns/op: each b.N iteration takes a
// fixed number of interleaved samples (CRIGUARD_BENCH_ROUNDS, default 2000 for
// unary calls; CRIGUARD_BENCH_POD_ROUNDS, default 60 for pod starts) and the
// figures come out through b.ReportMetric. `make bench` runs them with
// -benchtime 1x.

// benchTarget is one way of reaching the same containerd.
type benchTarget struct {
	name string
	conn *grpc.ClientConn
	rt   runtimeapi.RuntimeServiceClient
	img  runtimeapi.ImageServiceClient
}

func benchEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func benchTargets(b *testing.B, sockets map[string]string, order ...string) []*benchTarget {
	var ts []*benchTarget
	for _, n := range order {
		conn := harness.DialCRI(b, sockets[n])
		ts = append(ts, &benchTarget{name: n, conn: conn,
			rt: runtimeapi.NewRuntimeServiceClient(conn), img: runtimeapi.NewImageServiceClient(conn)})
	}
	return ts
}

// BenchmarkProxyUnary: p50/p99 latency of Version, ListContainers (50
// containers) and ImageStatus against a real containerd 2.x, straight, through
// criguard, and through two bare forwarders (a plain []byte unknown-service
// handler, and criproxy.NewBareForwarder), samples interleaved in random order.
// ratio-p50 is criguard's added latency over the plain bare forwarder's
// (target <= 1.15).
func BenchmarkProxyUnary(b *testing.B) {
	harness.RequireRoot(b)
	r := harness.StartRegistry(b, true)
	r.PushImage(b, "bench/app", "1")
	image := r.Ref("bench/app", "1")
	c := harness.StartContainerd(b, harness.ContainerdOptions{Version: "2", Registry: r})
	// CRIGUARD_BENCH_CRIGUARD_ARGS adds serve flags, e.g. "--metrics-address=" to
	// see what metrics cost.
	g := harness.StartCriguard(b, c.Socket, strings.Fields(os.Getenv("CRIGUARD_BENCH_CRIGUARD_ARGS"))...)
	plain := harness.StartBareForwarder(b, c.Socket, "plain")
	cp := harness.StartBareForwarder(b, c.Socket, "criproxy")
	ts := benchTargets(b, map[string]string{"direct": c.Socket, "criguard": g.Socket, "bare": plain.Socket, "bare-criproxy": cp.Socket},
		"direct", "criguard", "bare", "bare-criproxy")
	direct := ts[0]
	ctx := b.Context()

	if _, err := direct.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		b.Fatalf("pull: %v", err)
	}
	podCfg := benchPodConfig("list", "bench-list")
	pod, err := direct.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podCfg})
	if err != nil {
		b.Fatalf("RunPodSandbox: %v", err)
	}
	for i := range 50 {
		_, err := direct.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
			PodSandboxId:  pod.PodSandboxId,
			SandboxConfig: podCfg,
			Config: &runtimeapi.ContainerConfig{
				Metadata: &runtimeapi.ContainerMetadata{Name: fmt.Sprintf("c%02d", i)},
				Image:    &runtimeapi.ImageSpec{Image: image},
				Command:  []string{"sleep", "3600"},
			},
		})
		if err != nil {
			b.Fatalf("CreateContainer %d: %v", i, err)
		}
	}

	calls := []struct {
		name string
		call func(context.Context, *benchTarget) error
	}{
		{"Version", func(ctx context.Context, t *benchTarget) error {
			_, err := t.rt.Version(ctx, &runtimeapi.VersionRequest{})
			return err
		}},
		{"ListContainers50", func(ctx context.Context, t *benchTarget) error {
			resp, err := t.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
			if err == nil && len(resp.Containers) != 50 {
				return fmt.Errorf("ListContainers through %s: %d containers, want 50", t.name, len(resp.Containers))
			}
			return err
		}},
		{"ImageStatus", func(ctx context.Context, t *benchTarget) error {
			resp, err := t.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: image}})
			if err == nil && resp.Image == nil {
				return fmt.Errorf("ImageStatus through %s: image not found", t.name)
			}
			return err
		}},
	}
	rounds := benchEnvInt("CRIGUARD_BENCH_ROUNDS", 2000)
	for _, cl := range calls {
		b.Run(cl.name, func(b *testing.B) {
			samples := map[string][]time.Duration{}
			// Warm every connection and the runtime's caches first.
			for range 100 {
				for _, t := range ts {
					if err := cl.call(ctx, t); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ResetTimer()
			for range b.N {
				for range rounds {
					order := rand.Perm(len(ts))
					for _, i := range order {
						t := ts[i]
						start := time.Now()
						err := cl.call(ctx, t)
						d := time.Since(start)
						if err != nil {
							b.Fatal(err)
						}
						samples[t.name] = append(samples[t.name], d)
					}
				}
			}
			b.StopTimer()
			benchReportUnary(b, cl.name, samples)
		})
	}
}

func benchReportUnary(b *testing.B, call string, samples map[string][]time.Duration) {
	p := map[string][2]float64{}
	for name, s := range samples {
		p[name] = [2]float64{benchPercentile(s, 50), benchPercentile(s, 99)}
		b.ReportMetric(p[name][0], name+"-p50-µs")
		b.ReportMetric(p[name][1], name+"-p99-µs")
	}
	d := p["direct"]
	ratio := func(proxy, floor string, i int) float64 {
		added := p[proxy][i] - d[i]
		base := p[floor][i] - d[i]
		if base <= 0 {
			return 0
		}
		return added / base
	}
	b.ReportMetric(ratio("criguard", "bare", 0), "ratio-p50")
	b.ReportMetric(ratio("criguard", "bare", 1), "ratio-p99")
	b.ReportMetric(ratio("criguard", "bare-criproxy", 0), "ratio-vs-criproxy-bare-p50")
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s, %d samples each (µs):\n  %-14s %8s %8s %12s\n", call, len(samples["direct"]), "path", "p50", "p99", "added p50")
	for _, n := range []string{"direct", "criguard", "bare", "bare-criproxy"} {
		fmt.Fprintf(&sb, "  %-14s %8.1f %8.1f %12.1f\n", n, p[n][0], p[n][1], p[n][0]-d[0])
	}
	fmt.Fprintf(&sb, "  criguard added / bare added: p50 %.2f, p99 %.2f (target <= 1.15)", ratio("criguard", "bare", 0), ratio("criguard", "bare", 1))
	b.Log(sb.String())
}

// benchPercentile returns the q-th percentile of s in microseconds.
func benchPercentile(s []time.Duration, q float64) float64 {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	i := int(q / 100 * float64(len(c)-1))
	return float64(c[i].Nanoseconds()) / 1e3
}

func benchPodConfig(name, uid string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "bench", Uid: uid},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
			},
		},
	}
}

// BenchmarkProxyPodStart: RunPodSandbox + CreateContainer + StartContainer
// straight at containerd 2.x, through criguard and through the plain bare
// forwarder (the floor of any process hop), interleaved in random order; ratio-p50 is criguard/direct (target <= 1.05), ratio-paired-median
// the median of criguard/direct within each round (adjacent samples share the
// machine's noise). Pods are removed between samples, outside the timing.
func BenchmarkProxyPodStart(b *testing.B) {
	harness.RequireRoot(b)
	r := harness.StartRegistry(b, true)
	r.PushImage(b, "bench/app", "1")
	image := r.Ref("bench/app", "1")
	c := harness.StartContainerd(b, harness.ContainerdOptions{Version: "2", Registry: r})
	g := harness.StartCriguard(b, c.Socket)
	// The bare forwarder shows what any extra process hop costs a pod start on
	// this machine (the hop waits for CPU while runc and the shim start).
	bare := harness.StartBareForwarder(b, c.Socket, "plain")
	ts := benchTargets(b, map[string]string{"direct": c.Socket, "criguard": g.Socket, "bare": bare.Socket}, "direct", "criguard", "bare")
	ctx := b.Context()
	if _, err := ts[0].img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		b.Fatalf("pull: %v", err)
	}
	seq := 0
	phases := map[string][]time.Duration{} // "<target>/<call>" -> samples, to see where a difference comes from
	start := func(t *benchTarget) (time.Duration, string, error) {
		seq++
		cfg := benchPodConfig(fmt.Sprintf("start-%d", seq), fmt.Sprintf("uid-start-%d", seq))
		t0 := time.Now()
		pod, err := t.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			return 0, "", fmt.Errorf("RunPodSandbox through %s: %w", t.name, err)
		}
		t1 := time.Now()
		ctr, err := t.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
			PodSandboxId: pod.PodSandboxId, SandboxConfig: cfg,
			Config: &runtimeapi.ContainerConfig{
				Metadata: &runtimeapi.ContainerMetadata{Name: "main"},
				Image:    &runtimeapi.ImageSpec{Image: image},
				Command:  []string{"sleep", "3600"},
			},
		})
		if err != nil {
			return 0, pod.PodSandboxId, fmt.Errorf("CreateContainer through %s: %w", t.name, err)
		}
		t2 := time.Now()
		if _, err := t.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctr.ContainerId}); err != nil {
			return 0, pod.PodSandboxId, fmt.Errorf("StartContainer through %s: %w", t.name, err)
		}
		t3 := time.Now()
		phases[t.name+"/RunPodSandbox"] = append(phases[t.name+"/RunPodSandbox"], t1.Sub(t0))
		phases[t.name+"/CreateContainer"] = append(phases[t.name+"/CreateContainer"], t2.Sub(t1))
		phases[t.name+"/StartContainer"] = append(phases[t.name+"/StartContainer"], t3.Sub(t2))
		return t3.Sub(t0), pod.PodSandboxId, nil
	}
	remove := func(podID string) {
		if podID == "" {
			return
		}
		if _, err := ts[0].rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
			b.Fatalf("StopPodSandbox: %v", err)
		}
		if _, err := ts[0].rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
			b.Fatalf("RemovePodSandbox: %v", err)
		}
	}
	// One unmeasured start each warms the snapshotter, shim binary and connections.
	for _, t := range ts {
		_, id, err := start(t)
		remove(id)
		if err != nil {
			b.Fatal(err)
		}
	}
	rounds := benchEnvInt("CRIGUARD_BENCH_POD_ROUNDS", 60)
	samples := map[string][]time.Duration{}
	var paired []float64 // criguard/direct within one round: adjacent samples share the machine's noise
	b.ResetTimer()
	for range b.N {
		for range rounds {
			var pair [3]time.Duration
			for _, i := range rand.Perm(len(ts)) {
				d, id, err := start(ts[i])
				b.StopTimer()
				remove(id)
				b.StartTimer()
				if err != nil {
					b.Fatal(err)
				}
				samples[ts[i].name] = append(samples[ts[i].name], d)
				pair[i] = d
			}
			paired = append(paired, float64(pair[1])/float64(pair[0]))
		}
	}
	b.StopTimer()
	slices.Sort(paired)
	pairedMedian := paired[len(paired)/2]
	mean := func(s []time.Duration) float64 {
		var sum time.Duration
		for _, d := range s {
			sum += d
		}
		return float64(sum.Microseconds()) / float64(len(s)) / 1e3
	}
	dp50, gp50 := benchPercentile(samples["direct"], 50)/1e3, benchPercentile(samples["criguard"], 50)/1e3
	b.ReportMetric(dp50, "direct-p50-ms")
	b.ReportMetric(gp50, "criguard-p50-ms")
	b.ReportMetric(mean(samples["direct"]), "direct-mean-ms")
	b.ReportMetric(mean(samples["criguard"]), "criguard-mean-ms")
	b.ReportMetric(gp50/dp50, "ratio-p50")
	b.ReportMetric(mean(samples["criguard"])/mean(samples["direct"]), "ratio-mean")
	b.ReportMetric(pairedMedian, "ratio-paired-median")
	for _, call := range []string{"RunPodSandbox", "CreateContainer", "StartContainer"} {
		d, g := benchPercentile(phases["direct/"+call], 50)/1e3, benchPercentile(phases["criguard/"+call], 50)/1e3
		f := benchPercentile(phases["bare/"+call], 50) / 1e3
		b.Logf("  %-16s p50 direct %7.2f ms, criguard %7.2f ms (%+.2f ms), bare forwarder %7.2f ms (%+.2f ms)", call, d, g, g-d, f, f-d)
	}
	fp50 := benchPercentile(samples["bare"], 50) / 1e3
	b.ReportMetric(fp50, "bare-p50-ms")
	b.ReportMetric(fp50/dp50, "bare-ratio-p50")
	b.Logf("bare forwarder: pod start p50 %.1f ms, ratio to direct %.3f (the floor of any proxy hop here)", fp50, fp50/dp50)
	b.Logf("pod start (RunPodSandbox+CreateContainer+StartContainer), %d samples each: direct p50 %.1f ms, criguard p50 %.1f ms, ratio %.3f (target <= 1.05); means %.1f / %.1f ms; median of per-round ratios %.3f",
		len(samples["direct"]), dp50, gp50, gp50/dp50, mean(samples["direct"]), mean(samples["criguard"]), pairedMedian)
}
