package policy

import (
	"testing"

	"github.com/criguard/criguard/verifier/imageref"
)

func TestIncludeExcludeSpellings(t *testing.T) {
	r, err := imageref.Parse("nginx")
	if err != nil {
		t.Fatal(err)
	}
	// Includes match any spelling: both Kyverno's and Docker's forms select it.
	for _, p := range []string{"docker.io/nginx*", "docker.io/library/nginx*", "*nginx*"} {
		if !matchesAny(r.Spellings(), []string{p}) {
			t.Errorf("include %q does not match nginx", p)
		}
	}
	if matchesAny(r.Spellings(), []string{"index.docker.io/*", "ghcr.io/*"}) {
		t.Error("unexpected include match (patterns are made canonical at load, not here)")
	}
	// Excludes must match every spelling: an exclusion never applies because of
	// how one pod happened to spell the name.
	if excludedBy(r.Spellings(), []string{"docker.io/nginx*"}) || excludedBy(r.Spellings(), []string{"docker.io/library/*"}) {
		t.Error("partial-spelling exclude applied")
	}
	if !excludedBy(r.Spellings(), []string{"docker.io/*nginx*"}) || !excludedBy(r.Spellings(), []string{"*"}) {
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
