package criproxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHTTPHandler(t *testing.T) {
	m := NewMetrics()
	m.decision(OpPullImage, ResultDeny, false, 30*time.Millisecond)
	m.decision(OpCreateContainer, ResultAllow, true, time.Microsecond)
	m.PolicyReloaded(nil)
	m.PolicyReloaded(errors.New("bad"))
	m.PolicyReloaded(errors.New("bad"))
	m.upstreamError(opImageStatus)
	m.WatchCacheSize(func() int { return 7 })
	var readyErr error
	srv := httptest.NewServer(HTTPHandler(m, func(context.Context) error { return readyErr }))
	defer srv.Close()

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`criguard_decisions_total{operation="PullImage",result="deny"} 1`,
		`criguard_decisions_total{operation="CreateContainer",result="allow"} 1`,
		`criguard_decisions_total{operation="CreateContainer",result="audit"} 0`,
		`criguard_verdict_cache_hits_total{operation="CreateContainer"} 1`,
		`criguard_verification_duration_seconds_count{operation="PullImage"} 1`,
		`criguard_policy_reloads_total{result="ok"} 1`,
		`criguard_policy_reloads_total{result="failed"} 2`,
		`criguard_upstream_errors_total{operation="ImageStatus"} 1`,
		`criguard_verdict_cache_entries 7`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz when ready: %d", code)
	}
	readyErr = errors.New("no policy loaded")
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "no policy loaded") {
		t.Errorf("/readyz when not ready: %d %q", code, body)
	}
	if code, _ := get("/other"); code != 404 {
		t.Errorf("/other: %d", code)
	}
}

func TestMetricsAreNotGlobal(t *testing.T) {
	// Two instances register the same names without conflict: nothing goes to
	// prometheus' default registry.
	a, b := NewMetrics(), NewMetrics()
	a.PolicyReloaded(nil)
	fa, _ := a.Registry.Gather()
	fb, _ := b.Registry.Gather()
	if len(fa) == 0 || len(fa) != len(fb) {
		t.Errorf("families: %d vs %d", len(fa), len(fb))
	}
	var nilMetrics *Metrics
	nilMetrics.PolicyReloaded(nil) // no panic
	nilMetrics.decision(OpPullImage, ResultAllow, false, 0)
}
