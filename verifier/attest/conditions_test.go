package attest

import (
	"strings"
	"testing"
)

// vulnPredicate is the shape of cosign's vuln predicate (fx/key-attest's).
const vulnPredicate = `{"invocation":{"uri":""},"metadata":{"scanStartedOn":"2026-11-30T00:00:00Z","scanFinishedOn":"2026-11-30T00:01:00Z"},
 "scanner":{"uri":"pkg:example/scanner@1.0","version":"1.0","result":{"summary":{"critical":0,"high":2},"ids":["CVE-1","CVE-2"]}}}`

func TestOperators(t *testing.T) {
	cases := []struct {
		key, value any
		op         string
		want       bool
	}{
		{"{{ scanner.result.summary.critical }}", 0, "Equals", true},
		{"{{ scanner.result.summary.critical }}", "0", "Equals", true},
		{"{{ scanner.result.summary.high }}", 0, "Equals", false},
		{"{{ scanner.result.summary.high }}", 0, "NotEquals", true},
		{"{{ scanner.uri }}", "pkg:example/*", "Equals", true},
		{"{{ scanner.uri }}", "pkg:other/*", "Equals", false},
		{"{{ scanner.version }}", "1.?", "Equals", true},
		{"{{ scanner.uri }}", 1, "Equals", false}, // a string key compares with strings only
		{"{{ scanner.result.summary }}", map[string]any{"critical": 0, "high": 2}, "Equals", true},
		{"{{ scanner.result.ids }}", []any{"CVE-1", "CVE-2"}, "Equals", true},
		{"{{ scanner.result.summary.high }}", 1, "GreaterThan", true},
		{"{{ scanner.result.summary.high }}", 2, "GreaterThan", false},
		{"{{ scanner.result.summary.high }}", 2, "GreaterThanOrEquals", true},
		{"{{ scanner.result.summary.high }}", "3", "LessThan", true},
		{"{{ scanner.result.summary.high }}", 2, "LessThanOrEquals", true},
		{"{{ scanner.version }}", "0.9.1", "GreaterThan", false}, // "1.0" is a number, and "0.9.1" is not
		{"1.10.0", "1.9.0", "GreaterThan", true},                 // semantic versions
		{"90s", "1m", "GreaterThan", true},                       // durations
		{"{{ scanner.result.ids }}", []any{"CVE-1", "CVE-2", "CVE-3"}, "AllIn", true},
		{"{{ scanner.result.ids }}", []any{"CVE-1"}, "AllIn", false},
		{"{{ scanner.result.ids }}", []any{"CVE-1"}, "AnyIn", true},
		{"{{ scanner.result.ids }}", []any{"CVE-9"}, "AnyIn", false},
		{"{{ scanner.result.ids }}", []any{"CVE-1"}, "AnyNotIn", true},
		{"{{ scanner.result.ids }}", []any{"CVE-*"}, "AnyNotIn", false},
		{"{{ scanner.result.ids }}", []any{"CVE-9"}, "AllNotIn", true},
		{"{{ scanner.result.ids }}", []any{"CVE-2"}, "AllNotIn", false},
		{"{{ scanner.version }}", []any{"1.0", "2.0"}, "In", true},
		{"{{ scanner.version }}", `["1.0","2.0"]`, "In", true},
		{"{{ scanner.version }}", []any{"2.0"}, "NotIn", true},
		{"{{ scanner.version }}", []any{"1.0"}, "NotIn", false},
		{"{{ metadata.scanStartedOn }}", "x", "DurationGreaterThan", false},
		{120, "1m", "DurationGreaterThan", true},
		{"2h", "90m", "DurationGreaterThanOrEquals", true},
		{"30s", 30, "DurationLessThanOrEquals", true},
		{"30s", 29, "DurationLessThan", false},
		{"scanner {{ scanner.version }}", "scanner 1.0", "Equals", true}, // text around a variable
		{true, true, "equals", true},                                     // operators are case-insensitive
	}
	for _, c := range cases {
		name := strings.Join([]string{show(c.key), c.op, show(c.value)}, " ")
		t.Run(name, func(t *testing.T) {
			cs, err := Compile([]AnyAllConditions{{All: []Condition{{Key: c.key, Operator: c.op, Value: c.value}}}})
			if err != nil {
				t.Fatal(err)
			}
			err = cs.Evaluate([]byte(vulnPredicate))
			if got := err == nil; got != c.want {
				t.Fatalf("got %v (%v), want %v", got, err, c.want)
			}
		})
	}
}

func TestAnyAll(t *testing.T) {
	critical0 := Condition{Key: "{{ scanner.result.summary.critical }}", Operator: "Equals", Value: 0}
	high0 := Condition{Key: "{{ scanner.result.summary.high }}", Operator: "Equals", Value: 0, Message: "high findings are not allowed"}
	cases := []struct {
		name   string
		blocks []AnyAllConditions
		want   string // "" = holds
	}{
		{"no blocks", nil, ""},
		{"empty block", []AnyAllConditions{{}}, ""},
		{"all hold", []AnyAllConditions{{All: []Condition{critical0}}}, ""},
		{"one of all fails, with its message", []AnyAllConditions{{All: []Condition{critical0, high0}}}, "high findings are not allowed"},
		{"any: one holds", []AnyAllConditions{{Any: []Condition{high0, critical0}}}, ""},
		{"any: none holds", []AnyAllConditions{{Any: []Condition{high0}}}, "none of its `any` conditions holds"},
		{"any and all both required", []AnyAllConditions{{Any: []Condition{critical0}, All: []Condition{high0}}}, "high findings"},
		{"every block must hold", []AnyAllConditions{{All: []Condition{critical0}}, {All: []Condition{high0}}}, "block 2"},
		{"Kyverno's time_since", []AnyAllConditions{{All: []Condition{{Key: "{{ time_since('', metadata.scanStartedOn, metadata.scanFinishedOn) }}", Operator: "Equals", Value: "1m"}}}}, ""},
		{"a Kyverno function's error denies", []AnyAllConditions{{All: []Condition{{Key: "{{ time_since('', scanner.uri, '') }}", Operator: "NotEquals", Value: "1m"}}}}, "cannot parse"},
		{"an unparsable semver denies", []AnyAllConditions{{All: []Condition{{Key: "{{ semver_compare(scanner.uri, '<2.0.0') }}", Operator: "Equals", Value: true}}}}, "semver_compare: version"},
		{"missing key denies", []AnyAllConditions{{All: []Condition{{Key: "{{ nosuch.field }}", Operator: "NotEquals", Value: 1}}}}, "finds nothing in the predicate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cs, err := Compile(c.blocks)
			if err != nil {
				t.Fatal(err)
			}
			err = cs.Evaluate([]byte(vulnPredicate))
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("does not hold: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestCompileRefuses(t *testing.T) {
	cases := map[string]Condition{
		"unknown operator":     {Key: "{{ a }}", Operator: "Matches", Value: 1},
		"bad JMESPath":         {Key: "{{ a[ }}", Operator: "Equals", Value: 1},
		"unclosed variable":    {Key: "{{ a", Operator: "Equals", Value: 1},
		"bad JMESPath in list": {Key: "x", Operator: "In", Value: []any{"{{ ]] }}"}},
		"huge expression":      {Key: "{{ " + strings.Repeat("a.", MaxExpressionLen) + "a }}", Operator: "Equals", Value: 1},
		"unknown function":     {Key: "{{ lookup(a, 'b') }}", Operator: "Equals", Value: 1},
		"unknown nested":       {Key: "{{ to_upper('{{ x509_decode(a) }}') }}", Operator: "Equals", Value: 1},
		"bare nested variable": {Key: "{{ a.{{ b }} }}", Operator: "Equals", Value: 1},
		"bad nested JMESPath":  {Key: "{{ to_upper('{{ a[ }}') }}", Operator: "Equals", Value: 1},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Compile([]AnyAllConditions{{All: []Condition{c}}}); err == nil {
				t.Fatal("compiled")
			}
		})
	}
	many := make([]Condition, MaxConditions+1)
	for i := range many {
		many[i] = Condition{Key: 1, Operator: "Equals", Value: 1}
	}
	if _, err := Compile([]AnyAllConditions{{All: many}}); err == nil {
		t.Fatal("compiled more than MaxConditions")
	}
}

func TestEvaluateRefusesBadPredicates(t *testing.T) {
	cs, err := Compile([]AnyAllConditions{{All: []Condition{{Key: 1, Operator: "Equals", Value: 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string][]byte{
		"not JSON":  []byte("{"),
		"too large": append([]byte(`"`), append([]byte(strings.Repeat("a", MaxPredicateSize)), '"')...),
	} {
		if err := cs.Evaluate(p); err == nil {
			t.Errorf("%s: evaluated", name)
		}
	}
}

func TestPredicateType(t *testing.T) {
	for in, want := range map[string]string{
		"slsaprovenance1":           "https://slsa.dev/provenance/v1",
		"vuln":                      "https://cosign.sigstore.dev/attestation/vuln/v1",
		"https://example.test/p/v1": "https://example.test/p/v1",
	} {
		if got, err := PredicateType(in); err != nil || got != want {
			t.Errorf("PredicateType(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := PredicateType("sbom"); err == nil {
		t.Error("unknown name accepted")
	}
}
