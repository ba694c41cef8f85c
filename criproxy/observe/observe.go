// Package observe serves criguard's operational HTTP endpoints: /metrics from
// a Prometheus registry of criguard's own (never the global default one),
// /healthz and /readyz. The metrics themselves belong to the layers that count
// them (criproxy/forward: refused calls; criproxy/enforce: decisions).
package observe

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// readyTimeout bounds one /readyz check.
const readyTimeout = 2 * time.Second

// NewRegistry returns a registry holding the Go runtime and process collectors;
// each layer registers its own metrics on it.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// ReadyFunc reports whether criguard can serve: upstream reachable and a policy
// loaded. Its error text is shown on /readyz.
type ReadyFunc func(ctx context.Context) error

// Handler serves /metrics (g), /healthz (the process answers) and /readyz
// (ready returns nil within 2 s).
func Handler(g prometheus.Gatherer, ready ReadyFunc) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if ready == nil {
			http.Error(w, "not ready: no readiness check configured", http.StatusServiceUnavailable)
			return
		}
		if err := ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}
