package policysync

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// maxMetricsBytes bounds one relayed scrape (criguard's /metrics is a few KiB).
const maxMetricsBytes = 16 << 20

// Relay serves /metrics (fetched from criguard's loopback endpoint at each
// scrape), /healthz and /readyz (ready(): with policies from the API server,
// once the node's directory holds them).
type Relay struct {
	// Upstream is criguard's metrics URL; "" serves no /metrics.
	Upstream string
	Ready    func() bool
	Client   *http.Client
}

// Handler returns the relay's HTTP handler.
func (r Relay) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if r.Ready != nil && !r.Ready() {
			http.Error(w, "no policy on this node yet: waiting for the first list of policy objects", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	if r.Upstream != "" {
		mux.HandleFunc("GET /metrics", r.metrics)
	}
	return mux
}

// metrics answers 503 when criguard does not answer, so the scrape fails and
// Prometheus' up{} shows the node's guard down.
func (r Relay) metrics(w http.ResponseWriter, req *http.Request) {
	client := r.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	ctx, cancel := context.WithTimeout(req.Context(), 10*time.Second)
	defer cancel()
	up, err := http.NewRequestWithContext(ctx, http.MethodGet, r.Upstream, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if a := req.Header.Get("Accept"); a != "" {
		up.Header.Set("Accept", a)
	}
	resp, err := client.Do(up)
	if err != nil {
		http.Error(w, fmt.Sprintf("criguard on this node does not answer at %s: %v", r.Upstream, err), http.StatusServiceUnavailable)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		http.Error(w, fmt.Sprintf("criguard's %s answered %s", r.Upstream, resp.Status), http.StatusServiceUnavailable)
		return
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetricsBytes+1))
	if err != nil || len(body) > maxMetricsBytes {
		http.Error(w, fmt.Sprintf("reading criguard's %s: %v (limit %d bytes)", r.Upstream, err, maxMetricsBytes), http.StatusServiceUnavailable)
		return
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.Write(body)
}
