package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The chart's alert rules and dashboard (charts/criguard/files) may name only
// metrics criguard serve really exports: each name is looked up in a live
// /metrics scrape. (charts/validate checks that every selector there names a
// criguard_ or process_ metric, or Prometheus' own up, so the names found here
// are all of them.)
func TestDashboardAndAlertMetricsExist(t *testing.T) {
	dir := tempDir(t)
	up := filepath.Join(dir, "up.sock")
	startUpstream(t, up, true)
	pol := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pol, []byte(denyAllPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	listen := filepath.Join(dir, "criguard.sock")
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	exit := make(chan int, 1)
	go func() {
		exit <- runServe(ctx, []string{"--listen", listen, "--upstream", up, "--policy", pol, "--metrics-address", addr}, &bytes.Buffer{}, &syncBuffer{})
	}()
	defer func() {
		cancel()
		select {
		case <-exit:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	}()
	base := "http://" + addr
	waitFor(t, "/readyz", func() bool { code, _ := httpGetBody(t, base+"/readyz"); return code == 200 })

	// One judged pull, so that the latency histogram has its series.
	conn, err := grpc.NewClient("unix://"+listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	if _, err := runtimeapi.NewImageServiceClient(conn).PullImage(cctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "127.0.0.1:1/team/app:1.0"}}); err == nil {
		t.Fatal("a pull under a deny-all policy passed")
	}

	code, body := httpGetBody(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics %d", code)
	}
	tp := expfmt.NewTextParser(model.UTF8Validation)
	families, err := tp.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	exported := func(name string) bool {
		if f, ok := families[name]; ok && len(f.GetMetric()) > 0 {
			return true
		}
		for _, sfx := range []string{"_bucket", "_sum", "_count"} {
			if f, ok := families[strings.TrimSuffix(name, sfx)]; ok && strings.HasSuffix(name, sfx) && f.GetType() == dto.MetricType_HISTOGRAM && len(f.GetMetric()) > 0 {
				return true
			}
		}
		return false
	}

	names := regexp.MustCompile(`\b(?:criguard|process|go)_[a-zA-Z0-9_]+`)
	for _, f := range []string{"alerts.yaml", "dashboard.json"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "charts", "criguard", "files", f))
		if err != nil {
			t.Fatal(err)
		}
		used := map[string]bool{}
		for _, n := range names.FindAllString(string(data), -1) {
			used[n] = true
		}
		if len(used) < 4 { // a broken regexp or an emptied file
			t.Fatalf("%s names only %v", f, used)
		}
		for n := range used {
			if !exported(n) {
				t.Errorf("%s uses %s, which criguard serve does not export", f, n)
			}
		}
	}
}
