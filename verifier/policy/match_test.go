package policy

import (
	"slices"
	"strings"
	"testing"
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

func TestParseImage(t *testing.T) {
	d := digestOf('a')
	cases := []struct {
		in         string
		normalized string
		repo       string
		digest     string
		spellings  []string
	}{
		{"nginx", "index.docker.io/library/nginx:latest", "index.docker.io/library/nginx", "", []string{"docker.io/library/nginx:latest", "docker.io/nginx:latest"}},
		{"library/nginx:1.25", "index.docker.io/library/nginx:1.25", "index.docker.io/library/nginx", "", []string{"docker.io/library/nginx:1.25"}},
		{"docker.io/team/app:v1", "index.docker.io/team/app:v1", "index.docker.io/team/app", "", []string{"docker.io/team/app:v1"}},
		{"ghcr.io/kyverno/test-verify-image:signed", "ghcr.io/kyverno/test-verify-image:signed", "ghcr.io/kyverno/test-verify-image", "", []string{"ghcr.io/kyverno/test-verify-image:signed"}},
		{"ghcr.io/a/b@" + d, "ghcr.io/a/b@" + d, "ghcr.io/a/b", d, []string{"ghcr.io/a/b@" + d}},
		{"ghcr.io/a/b:1.0@" + d, "ghcr.io/a/b:1.0@" + d, "ghcr.io/a/b", d, []string{"ghcr.io/a/b@" + d}},
		{"localhost:5000/x:y", "localhost:5000/x:y", "localhost:5000/x", "", []string{"localhost:5000/x:y"}},
		{"127.0.0.1:5000/team/app", "127.0.0.1:5000/team/app:latest", "127.0.0.1:5000/team/app", "", []string{"127.0.0.1:5000/team/app:latest"}},
		{"nginx@" + d, "index.docker.io/library/nginx@" + d, "index.docker.io/library/nginx", d, []string{"docker.io/library/nginx@" + d, "docker.io/nginx@" + d}},
	}
	for _, c := range cases {
		r, err := parseImage(c.in)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if r.normalized != c.normalized || r.repository != c.repo || r.digest != c.digest || !slices.Equal(r.spellings, c.spellings) {
			t.Errorf("%s: got %q %q %q %q", c.in, r.normalized, r.repository, r.digest, r.spellings)
		}
	}
	for _, bad := range []string{"", "UPPER/case", "a b", "ghcr.io/a@sha256:short", strings.Repeat("a", 5000), "sha256:" + strings.Repeat("a", 64), strings.Repeat("b", 64)} {
		if _, err := parseImage(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestIncludeExcludeSpellings(t *testing.T) {
	r, err := parseImage("nginx")
	if err != nil {
		t.Fatal(err)
	}
	// Includes match any spelling: both Kyverno's and Docker's forms select it.
	for _, p := range []string{"docker.io/nginx*", "docker.io/library/nginx*", "*nginx*"} {
		if !r.matchesAny([]string{p}) {
			t.Errorf("include %q does not match nginx", p)
		}
	}
	if r.matchesAny([]string{"index.docker.io/*", "ghcr.io/*"}) {
		t.Error("unexpected include match")
	}
	// Excludes must match every spelling: an exclusion never applies because of
	// how one pod happened to spell the name.
	if r.excludedBy([]string{"docker.io/nginx*"}) || r.excludedBy([]string{"docker.io/library/*"}) {
		t.Error("partial-spelling exclude applied")
	}
	if !r.excludedBy([]string{"docker.io/*nginx*"}) || !r.excludedBy([]string{"*"}) {
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
		"Pod": true, "v1/Pod": true, "*/Pod": true, "Pod/ephemeralcontainers": true, "*": true,
		"apps/v1/Deployment": true, "CronJob": true, "ConfigMap": false, "Service": false, "P*": true, "Secret*": false,
	} {
		if got := kindCoversPods(k, true); got != want {
			t.Errorf("%s: %v", k, got)
		}
	}
	for k, want := range map[string]bool{"Pod": true, "v1/Pod": true, "*": true, "P*": true, "Deployment": false, "apps/v1/DaemonSet": false} {
		if got := kindCoversPods(k, false); got != want {
			t.Errorf("exclude %s: %v", k, got)
		}
	}
}
