package wildcard

import (
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{"*", "", true}, {"*", "a/b", true}, {"a*c", "abbbc", true}, {"a?c", "abc", true}, {"a?c", "ac", false},
		{"*b*", "abc", true}, {"a*", "b", false}, {"", "", true}, {"", "a", false}, {"ab", "abc", false},
		{"a*b*c", "axxbyyc", true}, {"a*b*c", "axxbyy", false}, {"é?", "éa", true},
		{"*", "*0", true}, {"*?0", "*0", true}, {"a*", "a*b", true}, // a pattern star facing a star in s
	} {
		if got := Match(c.p, c.s); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.p, c.s, got, c.want)
		}
	}
}

// TestImagePatterns: the image patterns policies write.
func TestImagePatterns(t *testing.T) {
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
		if got := Match(c.pattern, c.s); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.s, got, c.want)
		}
	}
}

func FuzzMatch(f *testing.F) {
	f.Add("a*b?c", "axxbyc")
	f.Fuzz(func(t *testing.T, p, s string) {
		if Match(p, s) && p == "" && s != "" {
			t.Fatalf("empty pattern matched %q", s)
		}
		if !Match("*", s) || !Match(s+"*", s) && !containsMeta(s) {
			t.Fatalf("%q does not match * or itself followed by *", s)
		}
	})
}

func containsMeta(s string) bool {
	for _, r := range s {
		if r == '*' || r == '?' {
			return true
		}
	}
	return false
}
