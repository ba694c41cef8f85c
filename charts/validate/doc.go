// Package validate checks the chart's observability files strictly: the
// alert rules with Prometheus' own rule file parser (as `promtool check
// rules` does), and every PromQL query of the Grafana dashboard with
// Prometheus' parser. cmd/criguard's TestDashboardAndAlertMetricsExist checks
// the metric names against a live /metrics of criguard serve.
package validate
