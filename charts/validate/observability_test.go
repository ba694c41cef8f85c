package validate

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

const (
	alertsFile    = "../criguard/files/alerts.yaml"
	dashboardFile = "../criguard/files/dashboard.json"
)

// Names a query may use besides criguard's own: Prometheus' synthetic up, and
// the process collector criguard registers.
var foreignNames = []string{"up", "process_resident_memory_bytes"}

func promParser() parser.Parser { return parser.NewParser(parser.Options{}) }

// metricNames returns the metric names expr selects; every selector must name one.
func metricNames(t *testing.T, expr string) []string {
	t.Helper()
	e, err := promParser().ParseExpr(expr)
	if err != nil {
		t.Fatalf("PromQL %q: %v", expr, err)
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			if vs.Name == "" {
				t.Errorf("PromQL %q: a selector without a metric name", expr)
			}
			names = append(names, vs.Name)
		}
		return nil
	})
	if len(names) == 0 {
		t.Errorf("PromQL %q selects no metric", expr)
	}
	return names
}

func checkName(t *testing.T, where, name string) {
	t.Helper()
	if !strings.HasPrefix(name, "criguard_") && !slices.Contains(foreignNames, name) {
		t.Errorf("%s uses %s: neither criguard's nor one of %v", where, name, foreignNames)
	}
}

func TestAlertRules(t *testing.T) {
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, promParser(), slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatalf("promtool-equivalent check: %v", errs)
	}
	want := []string{"CriguardDenialsSpike", "CriguardFailedOpen", "CriguardGuardDown", "CriguardPolicyReloadFailing", "CriguardUpstreamErrors", "CriguardVerificationSlow"}
	var got []string
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			got = append(got, r.Alert)
			for _, n := range metricNames(t, r.Expr) {
				checkName(t, "alert "+r.Alert, n)
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s needs a severity, a summary and a description", r.Alert)
			}
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("alerts %v, want %v", got, want)
	}
}

// The dashboard as far as this test reads it; unknown fields are refused so
// a typo in a field that matters (expr, targets) cannot slip through.
type dashboard struct {
	Title, UID, Timezone, Refresh, Description string
	Tags                                       []string
	SchemaVersion, Version, GraphTooltip       int
	Editable                                   bool
	Time                                       struct{ From, To string }
	Annotations                                struct{ List []any }
	Templating                                 struct {
		List []struct {
			Name, Type, Label, Definition, AllValue string
			Query                                   json.RawMessage
			Datasource                              *datasource
			IncludeAll, Multi                       bool
			Refresh                                 int
			Current                                 map[string]any
		}
	}
	Panels []struct {
		ID                       int
		Type, Title, Description string
		Datasource               datasource
		GridPos                  struct{ X, Y, W, H int }
		FieldConfig              struct {
			Defaults  struct{ Unit string }
			Overrides []any
		}
		Options map[string]any
		Targets []struct {
			RefID        string `json:"refId"`
			Expr         string
			LegendFormat string
			Datasource   datasource
		}
	}
}

type datasource struct{ Type, UID string }

// Grafana variables, replaced by what Grafana would put there.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__range", "1h", "$node", ".*")

func TestDashboard(t *testing.T) {
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var d dashboard
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type == "query" {
			var q struct{ Query string }
			if err := json.Unmarshal(v.Query, &q); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(q.Query, "label_values(criguard_") {
				t.Errorf("variable %s query %q", v.Name, q.Query)
			}
		}
	}
	if !vars["datasource"] || !vars["node"] {
		t.Errorf("variables %v: want datasource and node", vars)
	}
	ids := map[int]bool{}
	titles := map[string]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		titles[p.Title] = true
		if p.GridPos.X+p.GridPos.W > 24 || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %q grid %+v", p.Title, p.GridPos)
		}
		if p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %+v, %d queries", p.Title, p.Datasource, len(p.Targets))
		}
		for _, tg := range p.Targets {
			if !strings.Contains(tg.Expr, `node=~"$node"`) {
				t.Errorf("panel %q query %q ignores the node variable", p.Title, tg.Expr)
			}
			for _, n := range metricNames(t, grafanaVars.Replace(tg.Expr)) {
				checkName(t, "panel "+p.Title, n)
			}
		}
	}
	// What the issue asks the dashboard to show.
	for _, want := range []string{"Decisions by result", "Decisions by operation and result", "Verification latency (cache misses)", "Verdict cache hit ratio", "Policy reloads"} {
		if !titles[want] {
			t.Errorf("no panel %q", want)
		}
	}
}
