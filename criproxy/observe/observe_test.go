package observe

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestHandler(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "criguard_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	c.Add(3)
	var readyErr error
	srv := httptest.NewServer(Handler(reg, func(context.Context) error { return readyErr }))
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
	for _, want := range []string{"criguard_test_total 3", "go_goroutines", "process_"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics: %d, lacks %q", code, want)
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
	srvNil := httptest.NewServer(Handler(reg, nil))
	defer srvNil.Close()
	resp, err := http.Get(srvNil.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("/readyz with no check: %d, want 503 (fail closed)", resp.StatusCode)
	}
}
