package attest

import (
	"encoding/json"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// fixedNow is the clock the time-function tests read.
var fixedNow = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func fixedClock() time.Time { return fixedNow }

// search evaluates one {{ }} body on the vuln predicate.
func searchExpr(t *testing.T, expr string) (any, error) {
	t.Helper()
	v, err := compileVariable(expr, newEnv(fixedClock))
	if err != nil {
		t.Fatalf("compile %s: %v", expr, err)
	}
	var data any
	if err := json.Unmarshal([]byte(vulnPredicate), &data); err != nil {
		t.Fatal(err)
	}
	return v.search(data)
}

// checkResult: an error containing wantErr, or no error and want.
func checkResult(t *testing.T, got any, err error, want any, wantErr string) {
	t.Helper()
	switch {
	case wantErr != "":
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("got %v, %v; want an error containing %q", got, err, wantErr)
		}
	case err != nil:
		t.Fatal(err)
	case !reflect.DeepEqual(got, want):
		t.Fatalf("got %#v, want %#v", got, want)
	}
}

// TestKyvernoFunctions: Kyverno v1.19's results (its docs' and its own
// tests' examples, pkg/engine/jmespath/*_test.go), and its errors.
func TestKyvernoFunctions(t *testing.T) {
	cases := []struct {
		expr    string
		want    any
		wantErr string
	}{
		// time_since(layout, start, end): end - start; end '' is now.
		{"time_since('', '2021-01-02T15:04:05-07:00', '2021-01-10T03:14:05-07:00')", "180h10m0s", ""},
		{"time_since('Mon Jan _2 15:04:05 MST 2006', 'Mon Jan 02 15:04:05 MST 2021', 'Mon Jan 10 03:14:16 MST 2021')", "180h10m11s", ""},
		{"time_since('', metadata.scanFinishedOn, '')", "35h59m0s", ""}, // fixedNow - 2026-11-30T00:01:00Z
		{"time_since('', 'yesterday', '')", nil, "cannot parse"},
		{"time_since('', `1`, '')", nil, "invalid type"},
		{"time_now()", "2026-12-01T12:00:00Z", ""},
		{"time_now_utc()", "2026-12-01T12:00:00Z", ""},
		{"time_add('2021-01-02T15:04:05-07:00', '3h')", "2021-01-02T18:04:05-07:00", ""},
		{"time_add(time_parse('Mon Jan 02 15:04:05 -0700 2006', 'Sat Jan 02 15:04:05 -0700 2021'), '5h30m40s')", "2021-01-02T20:34:45-07:00", ""},
		{"time_add('2021-01-02T15:04:05Z', '3 days')", nil, "unknown unit"},
		{"time_parse('2006-01-02T15:04:05Z07:00', '2021-01-02T15:04:05-07:00')", "2021-01-02T15:04:05-07:00", ""},
		{"time_parse('1702691171', '1702691171')", "2023-12-16T01:46:11Z", ""}, // an integer layout: Unix seconds
		{"time_to_cron('2023-02-02T15:04:05Z')", "4 15 2 2 4", ""},
		{"time_to_cron(time_utc('2023-02-02T15:04:05-07:00'))", "4 22 2 2 4", ""},
		{"time_diff('2021-01-02T15:04:05-07:00', '2021-01-10T03:14:05-07:00')", "180h10m0s", ""},
		{"time_before('2021-01-02T15:04:05Z', '2021-01-02T15:04:06Z')", true, ""},
		{"time_after('2021-01-02T15:04:05Z', '2021-01-02T15:04:06Z')", false, ""},
		{"time_between('2021-01-02T15:04:05Z', '2021-01-02T15:04:05Z', '2021-01-03T00:00:00Z')", false, ""}, // strictly after the start
		{"time_truncate('2021-01-02T15:04:05Z', '1h')", "2021-01-02T15:00:00Z", ""},
		// regex_match is unanchored Go RE2; the subject may be a number.
		{"regex_match('^pkg:example/', scanner.uri)", true, ""},
		{"regex_match('^[0-9]+$', `123`)", true, ""},
		{"regex_match('scanner', scanner.uri)", true, ""},
		{"regex_match('(', scanner.uri)", nil, "missing closing )"},
		{"regex_replace_all('([Hh]e|G)l', 'Hello, Gophers', '${1}G')", "HeGlo, Gophers", ""},
		{"regex_replace_all_literal('([Hh]e|G)l', 'Hello', '${1}G')", "${1}Glo", ""},
		{"regex_replace_all('0', `10.5`, `1`)", "11.5", ""},
		{"to_upper('abc')", "ABC", ""},
		{"to_lower('ÀBC')", "àbc", ""},
		{"truncate('Lorem ipsum dolor sit amet', `5`)", "Lorem", ""},
		{"truncate('Lorem ipsum', `2.6`)", "Lo", ""},
		{"truncate('Lorem ipsum', `-1`)", "", ""},
		{"truncate('héllo', `2`)", "hé", ""}, // runes, not bytes
		{"truncate('Lorem ipsum', `40`)", "Lorem ipsum", ""},
		{"compare('a', 'b')", -1, ""}, // an integer, as Kyverno's strings.Compare
		{"compare('b', 'a')", 1, ""},
		{"equal_fold('Go', 'GO')", true, ""},
		{"split('Hello, Gophers', ', ')", []any{"Hello", "Gophers"}, ""},
		{"split('', ',')", []any{""}, ""}, // Kyverno's split, not the library's (which gives [])
		{"replace_all('Lorem ipsum ipsum', 'ipsum', 'x')", "Lorem x x", ""},
		{"replace('aaa', 'a', 'b', `2`)", "bba", ""},
		{"trim('--a--', '-')", "a", ""},
		{"trim_prefix('v1.2', 'v')", "1.2", ""},
		{"to_boolean('TruE')", true, ""},
		{"to_boolean('yes')", nil, "must be 'true' or 'false'"},
		{"base64_decode('SGVsbG8=')", "Hello", ""},
		{"base64_decode('not base64!')", nil, "illegal base64"},
		{"base64_encode('Hello')", "SGVsbG8=", ""},
		{"semver_compare('4.1.3', '>=4.1.x')", true, ""},
		{"semver_compare('4.1.3', '!4.x.x')", false, ""},
		{"semver_compare('1.8.6', '>1.0.0 <2.0.0')", true, ""},
		{"semver_compare('2.1.5', '<2.0.0 || >=3.0.0')", false, ""},
		// An unparsable version fails (Kyverno's 0.0.0 would pass '<1.0.0').
		{"semver_compare('junk', '<1.0.0')", nil, `version "junk"`},
		{"semver_compare('', '<2.0.0')", nil, "semver_compare: version"},
		{"semver_compare('1.0.0', 'junk')", nil, "junk"},
		{`parse_json('{"a": [1, "b"]}').a`, []any{1.0, "b"}, ""},
		{"parse_json('{')", nil, "unexpected end"},
		{"items(scanner.result.summary, 'k', 'v')", []any{map[string]any{"k": "critical", "v": 0.0}, map[string]any{"k": "high", "v": 2.0}}, ""},
		{"items(scanner.result.ids, 'i', 'id')[1]", map[string]any{"i": 1.0, "id": "CVE-2"}, ""},
		// library functions stay: JMESPath's and jmespath-community's
		{"length(scanner.result.ids)", 2.0, ""},
	}
	for _, c := range cases {
		t.Run(c.expr, func(t *testing.T) {
			got, err := searchExpr(t, c.expr)
			checkResult(t, got, err, c.want, c.wantErr)
		})
	}
}

// TestNestedVariables: Kyverno substitutes an inner {{ }} (as text) before
// evaluating the outer; a value that would change the outer expression
// beyond its literal is refused.
func TestNestedVariables(t *testing.T) {
	cases := []struct {
		predicate, key string
		want           any
		wantErr        string
	}{
		{`{"t":"2026-11-30T12:00:00Z"}`, "{{ time_since('','{{ t }}','') }}", "24h0m0s", ""},
		{`{"a":"x","b":"y"}`, "{{ to_upper('{{ a }}-{{ b }}') }}", "X-Y", ""},
		{`{"n":3}`, "{{ to_upper('n={{ n }}') }}", "N=3", ""},                 // a number as JSON text
		{`{"o":{"k":1}}`, "{{ parse_json('{{ o }}').k }}", 1.0, ""},           // an object as JSON text
		{`{"o":{"k":1}}`, "{{ `{{ o }}`.k }}", 1.0, ""},                       // inside a JSON literal
		{`{"a":"B"}`, "{{ to_upper('{{ to_lower('{{ a }}') }}') }}", "B", ""}, // nested twice
		{`{"a":"x","b":"y"}`, "prefix {{ to_upper('{{ a }}') }} {{ b }}", "prefix X y", ""},
		{`{"a":"x') || to_upper('y"}`, "{{ to_lower('{{ a }}') }}", nil, "changes the expression"},
		{`{"a":"it's"}`, "{{ to_lower('{{ a }}') }}", nil, "not valid JMESPath"},
		{`{"a":"x\\"}`, "{{ to_lower('{{ a }}') }}", nil, "not valid JMESPath"},
		{`{}`, "{{ to_lower('{{ a }}') }}", nil, "finds nothing"},
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			tmpl, err := compileTemplate(c.key, newEnv(fixedClock))
			if err != nil {
				t.Fatal(err)
			}
			var data any
			if err := json.Unmarshal([]byte(c.predicate), &data); err != nil {
				t.Fatal(err)
			}
			got, err := tmpl.resolve(data)
			checkResult(t, got, err, c.want, c.wantErr)
		})
	}
}

// TestUnknownFunctionNamed: a function criguard does not implement is a
// compile-time refusal naming it.
func TestUnknownFunctionNamed(t *testing.T) {
	for key, name := range map[string]string{
		"{{ lookup(@, 'a') }}":                        "lookup",
		"{{ to_upper('{{ x509_decode(a) }}') }}":      "x509_decode",
		"{{ a | image_normalize(@) }}":                "image_normalize",
		"{{ to_upper('{{ a }}') | random('[0-9]') }}": "random",
	} {
		_, err := Compile([]AnyAllConditions{{All: []Condition{{Key: key, Operator: "Equals", Value: 1}}}})
		if err == nil || !strings.Contains(err.Error(), "unknown JMESPath function "+name+"()") {
			t.Errorf("%s: got %v, want a refusal naming %s()", key, err, name)
		}
	}
}

// TestReplaceLikeRegexp: replaceBounded gives regexp's own results, and
// stops at MaxStringResult.
func TestReplaceLikeRegexp(t *testing.T) {
	cases := []struct{ re, src, repl string }{
		{"a*", "baaacada", "X"},
		{"", "abc", "-"},
		{"(\\w+)@(\\w+)", "x@y, z@w", "$2 at ${1}"},
		{"a|b*", "abbbca", "[$0]"},
		{"x", "", "y"},
	}
	for _, c := range cases {
		re := regexp.MustCompile(c.re)
		for _, literal := range []bool{false, true} {
			want := re.ReplaceAllString(c.src, c.repl)
			if literal {
				want = re.ReplaceAllLiteralString(c.src, c.repl)
			}
			if got, err := replaceBounded(re, c.src, c.repl, literal); err != nil || got != want {
				t.Errorf("%q %q %q literal=%v: got %q, %v; want %q", c.re, c.src, c.repl, literal, got, err, want)
			}
		}
	}
	big := strings.Repeat("a", 1<<20)
	if _, err := replaceBounded(regexp.MustCompile(""), big, "xxxxx", true); err == nil {
		t.Error("a 6 MiB result was built")
	}
	for _, expr := range []string{"replace_all(s, '', t)", "replace(s, 'a', t, `-1`)"} {
		v, err := compileVariable(expr, newEnv(fixedClock))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.search(map[string]any{"s": big, "t": "xxxxx"}); err == nil || !strings.Contains(err.Error(), "limit") {
			t.Errorf("%s: got %v, want the size limit", expr, err)
		}
	}
}
