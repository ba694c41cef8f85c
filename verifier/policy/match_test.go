package policy

import (
	"strings"
	"testing"

	"github.com/criguard/criguard/verifier/imageref"
)

func TestMatchWildcard(t *testing.T) {
	cases := []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true},
		{"*", "anything/at:all", true},
		{"", "", true},
		{"", "a", false},
		{"ghcr.io/kyverno/test-verify-image*", "ghcr.io/kyverno/test-verify-image:signed", true},
		{"ghcr.io/kyverno/*", "ghcr.io/kyverno/a/b/c:1", true}, // '*' crosses '/'
		{"ghcr.io/kyverno/*", "ghcr.io/kyverno", false},
		{"ghcr.io/kyverno/*", "ghcr.io/kyvernox/a:1", false},
		{"ghcr.io/?yverno/*", "ghcr.io/kyverno/a:1", true},
		{"ghcr.io/?yverno/*", "ghcr.io/yverno/a:1", false}, // '?' is exactly one
		{"*:v1", "registry.example.com/a:v1", true},
		{"*:v1", "registry.example.com/a:v10", false},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"prod-*", "prod-", true},
		{"prod-*", "prod", false},
		{"**a", "a", true},
		{"a?", "aé", true},
		{strings.Repeat("*a", 30), strings.Repeat("a", 29), false}, // no exponential blow-up
	}
	for _, c := range cases {
		if got := matchWildcard(c.pattern, c.s); got != c.want {
			t.Errorf("matchWildcard(%q, %q) = %v, want %v", c.pattern, c.s, got, c.want)
		}
	}
}

func TestIncludeExcludeSpellings(t *testing.T) {
	r, err := imageref.Parse("nginx")
	if err != nil {
		t.Fatal(err)
	}
	// Includes match any spelling: both Kyverno's and Docker's forms select it.
	for _, p := range []string{"docker.io/nginx*", "docker.io/library/nginx*", "*nginx*"} {
		if !matchesAny(r, []string{p}) {
			t.Errorf("include %q does not match nginx", p)
		}
	}
	if matchesAny(r, []string{"index.docker.io/*", "ghcr.io/*"}) {
		t.Error("unexpected include match (patterns are made canonical at load, not here)")
	}
	// Excludes must match every spelling: an exclusion never applies because of
	// how one pod happened to spell the name.
	if excludedBy(r, []string{"docker.io/nginx*"}) || excludedBy(r, []string{"docker.io/library/*"}) {
		t.Error("partial-spelling exclude applied")
	}
	if !excludedBy(r, []string{"docker.io/*nginx*"}) || !excludedBy(r, []string{"*"}) {
		t.Error("full exclude did not apply")
	}
}

func TestNamespaceMatch(t *testing.T) {
	any2 := NamespaceMatch{Filters: []NamespaceFilter{{Namespaces: []string{"prod-*"}}, {Namespaces: []string{"default"}}}}
	all2 := NamespaceMatch{All: true, Filters: []NamespaceFilter{{Namespaces: []string{"prod-*"}}, {Namespaces: []string{"*-web"}}}}
	never := NamespaceMatch{Filters: []NamespaceFilter{{Never: true}}}
	cases := []struct {
		m         NamespaceMatch
		ns        string
		excluding bool
		want      bool
	}{
		{NamespaceMatch{}, "x", false, true},
		{NamespaceMatch{}, "x", true, false},
		{any2, "prod-a", false, true},
		{any2, "default", false, true},
		{any2, "dev", false, false},
		{any2, "", false, true}, // unknown namespace: included (fail closed)
		{any2, "", true, false}, // ... and never excluded
		{all2, "prod-web", false, true},
		{all2, "prod-db", false, false},
		{never, "x", false, false},
	}
	for i, c := range cases {
		if got := c.m.matches(c.ns, c.excluding); got != c.want {
			t.Errorf("case %d: matches(%q, %v) = %v", i, c.ns, c.excluding, got)
		}
	}
}

func TestKindCoversPods(t *testing.T) {
	for k, want := range map[string]bool{
		"Pod": true, "v1/Pod": true, "*/Pod": true, "Pod/ephemeralcontainers": true, "*": true, "*/*": true,
		"apps/v1/Deployment": true, "CronJob": true, "ConfigMap": false, "Service": false, "P*": true, "Secret*": false,
		"Pod/status": false, "v1/Pod/exec": false, "Pod.ephemeralcontainers": true,
	} {
		if got := kindCoversPods(k, false); got != want {
			t.Errorf("match %s: %v", k, got)
		}
	}
	for k, want := range map[string]bool{
		"Pod": true, "v1/Pod": true, "*": true, "P*": true, "Deployment": false, "apps/v1/DaemonSet": false,
		"*/*": true, "Pod/*": true,
		// Kyverno (pkg/utils/match/kind.go CheckKind): a kinds entry with a
		// subresource matches only requests for that subresource, "if
		// wildcard.Match(sub, subresource) { return true }"; an ordinary pod
		// has none. So excluding Pod/ephemeralcontainers excludes only
		// ephemeral containers, which the node cannot tell apart: nothing.
		"Pod/ephemeralcontainers": false, "v1/Pod/ephemeralcontainers": false, "*/ephemeralcontainers": false,
	} {
		if got := kindCoversPods(k, true); got != want {
			t.Errorf("exclude %s: %v", k, got)
		}
	}
}
