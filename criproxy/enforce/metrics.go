package enforce

import (
	"time"

	"github.com/criguard/criguard/verifier/policy"
	"github.com/prometheus/client_golang/prometheus"
)

// Operations judged, as passed to the policy engine and used in metric labels.
const (
	OpPullImage       = "PullImage"
	OpCreateContainer = "CreateContainer"

	opImageStatus   = "ImageStatus"
	opSandboxStatus = "PodSandboxStatus"
	opTag           = "Tag"
)

// Decision results as they appear in the result label of
// criguard_decisions_total: the policy's verdicts, one word each.
const (
	ResultAllow      = string(policy.VerdictAllow)
	ResultDeny       = string(policy.VerdictDeny)
	ResultAudit      = string(policy.VerdictAudit)      // would be denied; Audit mode let it through
	ResultFailedOpen = string(policy.VerdictFailedOpen) // could not verify; failurePolicy Ignore let it through
)

// Metrics count enforcement: decisions, verification latency, verdict cache
// hits, policy reloads and upstream errors. Labels carry only operations and
// outcomes: image names would make the series count unbounded, and secrets
// never go here.
type Metrics struct {
	reg prometheus.Registerer

	decisions      *prometheus.CounterVec   // operation, result
	verifyDuration *prometheus.HistogramVec // operation
	cacheHits      *prometheus.CounterVec   // operation
	reloads        *prometheus.CounterVec   // result: ok|failed
	upstreamErrors *prometheus.CounterVec   // operation
}

// NewMetrics registers the enforcement layer's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reg: reg,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "criguard_decisions_total",
			Help: "Image policy decisions by CRI operation (PullImage, CreateContainer) and result (allow, deny, audit = would be denied, let through by Audit mode, failed_open = verification incomplete, let through by failurePolicy Ignore).",
		}, []string{"operation", "result"}),
		verifyDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "criguard_verification_duration_seconds",
			Help:    "Time to judge an image that was not in the verdict cache (tag resolution and signature verification).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"operation"}),
		cacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "criguard_verdict_cache_hits_total",
			Help: "Decisions answered from the verdict cache.",
		}, []string{"operation"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "criguard_policy_reloads_total",
			Help: "Policy (re)loads by result (ok, failed: the previous policy stays in force).",
		}, []string{"result"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "criguard_upstream_errors_total",
			Help: "Errors from containerd on calls criguard makes or forwards while enforcing (PullImage, CreateContainer, ImageStatus, Tag).",
		}, []string{"operation"}),
	}
	for _, op := range []string{OpPullImage, OpCreateContainer} {
		for _, r := range []string{ResultAllow, ResultDeny, ResultAudit, ResultFailedOpen} {
			m.decisions.WithLabelValues(op, r)
		}
		m.cacheHits.WithLabelValues(op)
		m.upstreamErrors.WithLabelValues(op)
	}
	m.upstreamErrors.WithLabelValues(opImageStatus)
	m.upstreamErrors.WithLabelValues(opSandboxStatus)
	m.upstreamErrors.WithLabelValues(opTag)
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("failed")
	reg.MustRegister(m.decisions, m.verifyDuration, m.cacheHits, m.reloads, m.upstreamErrors)
	return m
}

// WatchSlots exports the policy engine's verification-slot saturation (a
// verification that got no slot within its timeout) as
// criguard_verification_saturated_total{result}: denied, or failed_open where a
// failurePolicy: Ignore rule let the image through. Call it once.
func (m *Metrics) WatchSlots(stats func() policy.SlotStats) {
	if m == nil || stats == nil {
		return
	}
	const name, help = "criguard_verification_saturated_total", "Verifications that got no verification slot within their timeout (a slow or hostile registry holding the slots), by result: denied, or failed_open where failurePolicy Ignore let the image through."
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: prometheus.Labels{"result": "denied"}},
			func() float64 { s := stats(); return float64(s.Saturated - s.SaturatedFailedOpen) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: prometheus.Labels{"result": "failed_open"}},
			func() float64 { return float64(stats().SaturatedFailedOpen) }),
	)
}

// WatchCacheSize exports size (the policy engine's verdict count) as
// criguard_verdict_cache_entries, read at each scrape. Call it once.
func (m *Metrics) WatchCacheSize(size func() int) {
	if m == nil || size == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "criguard_verdict_cache_entries",
		Help: "Verdicts held in the policy engine's cache (bounded by the policy's cache.maxEntries).",
	}, func() float64 { return float64(size()) }))
}

// PolicyReloaded counts one policy load or reload attempt.
func (m *Metrics) PolicyReloaded(err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.reloads.WithLabelValues("failed").Inc()
		return
	}
	m.reloads.WithLabelValues("ok").Inc()
}

func (m *Metrics) decision(op, result string, cached bool, d time.Duration) {
	if m == nil {
		return
	}
	m.decisions.WithLabelValues(op, result).Inc()
	if cached {
		m.cacheHits.WithLabelValues(op).Inc()
	} else {
		m.verifyDuration.WithLabelValues(op).Observe(d.Seconds())
	}
}

func (m *Metrics) upstreamError(op string) {
	if m == nil {
		return
	}
	m.upstreamErrors.WithLabelValues(op).Inc()
}
