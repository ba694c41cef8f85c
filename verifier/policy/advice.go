package policy

import (
	"fmt"
	"strings"

	"github.com/criguard/criguard/verifier/wildcard"
)

// advise returns warnings about a valid set that does less than its author
// may think (docs/threat-model.md): unmatched images admitted beside rules
// that deny or verify, and include patterns that match tags but not the same
// image referenced by digest.
func advise(set *Set, path string) []Warning {
	var out []Warning
	if w, ok := unmatchedAllowedAdvice(set, path); ok {
		out = append(out, w)
	}
	for _, p := range set.Policies {
		for _, r := range p.Rules {
			for _, pat := range r.Images {
				if tagOnlyPattern(pat) {
					out = append(out, Warning{File: p.File, Document: p.Document, Path: "rule " + r.Name,
						Message: fmt.Sprintf("pattern %q matches tags only: the same image referenced by digest (…@sha256:…) does not match it, as in Kyverno; write %q to cover both", pat, tagBase(pat)+"*")})
				}
			}
		}
	}
	return out
}

// unmatchedAllowedAdvice warns when images no rule matches are admitted while
// rules deny or verify others: a name no pattern foresees (another spelling
// only DNS makes equal, localhost for 127.0.0.1, a mirror, a new registry)
// then runs unverified.
func unmatchedAllowedAdvice(set *Set, path string) (Warning, bool) {
	var strict []string
	for _, p := range set.Policies {
		if p.Unmatched == Deny && p.Mode == Enforce {
			return Warning{}, false
		}
		for _, r := range p.Rules {
			if r.Action != Allow {
				strict = append(strict, p.Name+"/"+r.Name)
			}
		}
	}
	if len(strict) == 0 {
		return Warning{}, false
	}
	why := "unmatchedImages: Allow"
	if !hasImagePolicy(set) {
		why = "a set of only Kyverno policies (Kyverno admits images no rule matches)"
	}
	if len(strict) > 5 {
		strict = append(strict[:5], "…")
	}
	return Warning{File: path, Message: fmt.Sprintf("images no rule matches are allowed (%s) beside rules that deny or verify (%s): an image named in a way no pattern foresees (a host only DNS makes equal, such as localhost for 127.0.0.1, a mirror, a new registry) runs unverified. Add an ImagePolicy with unmatchedImages: Deny and Allow rules for what may run unsigned (docs/threat-model.md)",
		why, strings.Join(strict, ", "))}, true
}

func hasImagePolicy(set *Set) bool {
	for _, p := range set.Policies {
		if p.Source == SourceImagePolicy {
			return true
		}
	}
	return false
}

// tagOnlyPattern reports an include pattern with a tag part (a ':' after the
// last '/') that cannot match a digest reference of the repository it names.
func tagOnlyPattern(p string) bool {
	base := tagBase(p)
	if base == p {
		return false
	}
	concrete := strings.NewReplacer("*", "x", "?", "x").Replace(base)
	return !wildcard.Match(p, concrete+"@sha256:"+strings.Repeat("0", 64))
}

// tagBase is the pattern without its tag part ("ghcr.io/a/b:*" -> "ghcr.io/a/b").
func tagBase(p string) string {
	if i := strings.LastIndexByte(p, ':'); i > strings.LastIndexByte(p, '/') {
		return p[:i]
	}
	return p
}
