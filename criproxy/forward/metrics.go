package forward

import "github.com/prometheus/client_golang/prometheus"

// Reasons for criguard_refused_requests_total.
const (
	RefusedUnknownField  = "unknown_field"
	RefusedUnknownMethod = "unknown_method"
	RefusedNotCRIv1      = "not_cri_v1"
)

// Metrics count the calls the server refuses before any policy decision, with
// or without a Guard. Labels carry only the reason.
type Metrics struct {
	refusals *prometheus.CounterVec // reason
}

// NewMetrics registers the forwarding layer's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "criguard_refused_requests_total",
		Help: "CRI calls refused before any policy decision, by reason (unknown_field: a PullImage or CreateContainer carrying a field unknown to criguard's cri-api; unknown_method: a runtime.v1 method unknown to it; not_cri_v1: any other service).",
	}, []string{"reason"})}
	for _, r := range []string{RefusedUnknownField, RefusedUnknownMethod, RefusedNotCRIv1} {
		m.refusals.WithLabelValues(r)
	}
	reg.MustRegister(m.refusals)
	return m
}

// refused counts one refusal; a nil Metrics counts nothing.
func (m *Metrics) refused(reason string) {
	if m == nil {
		return
	}
	m.refusals.WithLabelValues(reason).Inc()
}
