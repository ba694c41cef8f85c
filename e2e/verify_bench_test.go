//go:build e2e

package e2e

import (
	"context"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/criguard/criguard/e2e/harness"
	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/imageref"
	"github.com/criguard/criguard/verifier/keys"
)

// verifyCounter counts registry round trips.
type verifyCounter struct {
	n  atomic.Int64
	rt http.RoundTripper
}

func (c *verifyCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.rt.RoundTrip(r)
}

func verifyP50(d []time.Duration) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[len(s)/2]) / float64(time.Millisecond)
}

// BenchmarkVerifyVsCosign verifies an image signed by the real cosign CLI
// (a Sigstore bundle found through the referrers API, and a legacy .sig) from a
// loopback registry, in the same run and in random interleaved order:
//   - criguard-cold: a new Verifier per verification (no connection, no cache);
//   - criguard-warm: one Verifier reused (connections kept alive; verdicts are
//     never cached by the verifier);
//   - criguard-cli: the `criguard verify` binary, process start included;
//   - cosign: `cosign verify --key K --insecure-ignore-tlog`, process start included.
//
// Each b.N iteration takes CRIGUARD_BENCH_VERIFY_ROUNDS samples (default 30)
// of each; p50 wall times are reported in ms, with ratios to cosign (target:
// criguard cold <= 0.5) and registry round trips of one cold verification
// (targets: <= 5 bundle, <= 4 legacy).
func BenchmarkVerifyVsCosign(b *testing.B) {
	rounds := benchEnvInt("CRIGUARD_BENCH_VERIFY_ROUNDS", 30)
	cs := harness.Cosign(b)
	key, pub := cs.GenerateKeyPair(b, harness.TempDir(b, "benchkey"))
	r := harness.StartRegistry(b, true)
	refs := map[string]imageref.Ref{}
	for _, format := range []string{"bundle", "legacy"} {
		repo := "bench/verify-" + format
		d := r.PushImage(b, repo, "v1")
		cs.Sign(b, key, r.Ref(repo, d), format == "legacy")
		ref, err := imageref.Parse(r.Ref(repo, "v1"))
		if err != nil {
			b.Fatal(err)
		}
		refs[format] = ref
	}
	k, err := keys.LoadFile(pub, "")
	if err != nil {
		b.Fatal(err)
	}
	bin := harness.CriguardBinary(b)
	req := func(format string) cosign.Request {
		return cosign.Request{Image: refs[format], Keys: []*keys.Key{k}}
	}
	mustAllow := func(res cosign.Result, err error) {
		if err != nil || !res.Allowed {
			b.Fatalf("verification failed: %+v %v", res, err)
		}
	}
	ctx := context.Background()

	// Round trips of one cold verification by tag (reported after the timed
	// part: ResetTimer drops metrics reported before it).
	trips := map[string]int64{}
	for _, format := range []string{"bundle", "legacy"} {
		cnt := &verifyCounter{rt: http.DefaultTransport.(*http.Transport).Clone()}
		res, err := cosign.New(cosign.Options{Transport: cnt}).Verify(ctx, req(format))
		mustAllow(res, err)
		trips[format] = cnt.n.Load()
	}

	warm := cosign.New(cosign.Options{})
	for _, format := range []string{"bundle", "legacy"} {
		mustAllow(warm.Verify(ctx, req(format)))
	}
	kinds := []string{"criguard-cold", "criguard-warm", "criguard-cli", "cosign"}
	samples := map[string][]time.Duration{}
	b.ResetTimer()
	for range b.N {
		for range rounds {
			for _, format := range []string{"bundle", "legacy"} {
				order := slices.Clone(kinds)
				rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
				for _, kind := range order {
					start := time.Now()
					switch kind {
					case "criguard-cold":
						mustAllow(cosign.New(cosign.Options{}).Verify(ctx, req(format)))
					case "criguard-warm":
						mustAllow(warm.Verify(ctx, req(format)))
					case "criguard-cli":
						if out, err := exec.CommandContext(ctx, bin, "verify", "--key", pub, refs[format].String()).CombinedOutput(); err != nil {
							b.Fatalf("criguard verify: %v: %s", err, out)
						}
					case "cosign":
						if _, err := cs.Verify(b, pub, refs[format].String()); err != nil {
							b.Fatal(err)
						}
					}
					samples[kind+"-"+format] = append(samples[kind+"-"+format], time.Since(start))
				}
			}
		}
	}
	b.StopTimer()
	for _, format := range []string{"bundle", "legacy"} {
		b.ReportMetric(float64(trips[format]), "roundtrips-"+format)
		cosign := verifyP50(samples["cosign-"+format])
		for _, kind := range kinds {
			p50 := verifyP50(samples[kind+"-"+format])
			b.ReportMetric(p50, kind+"-"+format+"-p50-ms")
			if kind != "cosign" {
				b.ReportMetric(p50/cosign, kind+"-"+format+"/cosign")
			}
		}
	}
	// The release binary (`make build`), if built: target < 50 MB.
	if fi, err := os.Stat(filepath.Join(harness.RepoRoot(b), "bin", "criguard")); err == nil {
		b.ReportMetric(float64(fi.Size())/1e6, "bin-criguard-MB")
	}
}
