package enforce

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/criguard/criguard/verifier/policy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsExported(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.decision(OpPullImage, ResultDeny, false, 30*time.Millisecond)
	m.decision(OpCreateContainer, ResultAllow, true, time.Microsecond)
	m.PolicyReloaded(nil)
	m.PolicyReloaded(errors.New("bad"))
	m.PolicyReloaded(errors.New("bad"))
	m.upstreamError(opImageStatus)
	m.WatchCacheSize(func() int { return 7 })
	m.WatchSlots(func() policy.SlotStats { return policy.SlotStats{Saturated: 5, SaturatedFailedOpen: 2} })
	want := `
# HELP criguard_verdict_cache_entries Verdicts held in the policy engine's cache (bounded by the policy's cache.maxEntries).
# TYPE criguard_verdict_cache_entries gauge
criguard_verdict_cache_entries 7
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "criguard_verdict_cache_entries"); err != nil {
		t.Error(err)
	}
	saturated := `
# HELP criguard_verification_saturated_total Verifications that got no verification slot within their timeout (a slow or hostile registry holding the slots), by result: denied, or failed_open where failurePolicy Ignore let the image through.
# TYPE criguard_verification_saturated_total counter
criguard_verification_saturated_total{result="denied"} 3
criguard_verification_saturated_total{result="failed_open"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(saturated), "criguard_verification_saturated_total"); err != nil {
		t.Error(err)
	}
	for _, tc := range []struct {
		c    prometheus.Collector
		want float64
	}{
		{m.decisions.WithLabelValues(OpPullImage, ResultDeny), 1},
		{m.decisions.WithLabelValues(OpCreateContainer, ResultAllow), 1},
		{m.decisions.WithLabelValues(OpCreateContainer, ResultAudit), 0},
		{m.cacheHits.WithLabelValues(OpCreateContainer), 1},
		{m.reloads.WithLabelValues("ok"), 1},
		{m.reloads.WithLabelValues("failed"), 2},
		{m.upstreamErrors.WithLabelValues(opImageStatus), 1},
	} {
		if got := testutil.ToFloat64(tc.c); got != tc.want {
			t.Errorf("%v = %v, want %v", tc.c, got, tc.want)
		}
	}
	if n := testutil.CollectAndCount(m.verifyDuration); n != 1 {
		t.Errorf("verification duration series = %d, want 1 (cache hits are not timed)", n)
	}
}

func TestMetricsAreNotGlobal(t *testing.T) {
	// Two instances register the same names without conflict: nothing goes to
	// prometheus' default registry.
	ra, rb := prometheus.NewRegistry(), prometheus.NewRegistry()
	a := NewMetrics(ra)
	NewMetrics(rb)
	a.PolicyReloaded(nil)
	fa, _ := ra.Gather()
	fb, _ := rb.Gather()
	if len(fa) == 0 || len(fa) != len(fb) {
		t.Errorf("families: %d vs %d", len(fa), len(fb))
	}
	var nilMetrics *Metrics
	nilMetrics.PolicyReloaded(nil) // no panic
	nilMetrics.decision(OpPullImage, ResultAllow, false, 0)
}
