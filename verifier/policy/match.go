package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode"

	"github.com/criguard/criguard/verifier/wildcard"
)

// checkPattern refuses patterns that cannot mean what their author expects:
// empty ones, whitespace, and glob syntax Kyverno's wildcards do not have.
func checkPattern(p string) error {
	if p == "" {
		return fmt.Errorf("empty pattern (use \"*\" to match everything)")
	}
	rest := p
	if host, tail, ok := strings.Cut(p, "]"); ok && strings.HasPrefix(host, "[") {
		// A registry written as an IPv6 literal: the brackets are not a class.
		if _, err := netip.ParseAddr(host[1:]); err == nil {
			rest = tail
		}
	}
	for _, r := range rest {
		switch {
		case unicode.IsSpace(r) || unicode.IsControl(r):
			return fmt.Errorf("pattern %q contains whitespace or a control character", p)
		case strings.ContainsRune("[]{}\\", r):
			return fmt.Errorf("pattern %q uses %q: only '*' and '?' are wildcards (no character classes, alternatives or escapes)", p, r)
		}
	}
	return nil
}

// matchesAny: an include pattern list matches when any pattern matches any
// spelling of the reference (imageref.Ref.Spellings; more rules apply).
func matchesAny(spellings, patterns []string) bool {
	for _, p := range patterns {
		for _, s := range spellings {
			if wildcard.Match(p, s) {
				return true
			}
		}
	}
	return false
}

// excludedBy: an exclude list matches only when one pattern matches every
// spelling (an exclusion never applies on a technicality of how the pod
// spelled the name).
func excludedBy(spellings, patterns []string) bool {
	for _, p := range patterns {
		all := true
		for _, s := range spellings {
			if !wildcard.Match(p, s) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}
