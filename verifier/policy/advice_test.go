package policy

import (
	"bytes"
	"strings"
	"testing"
)

// TestAdvice: policy check warns where a valid set does less than it seems to
// (issue 11 §1 and §6).
func TestAdvice(t *testing.T) {
	const allowed = "images no rule matches are allowed"
	tests := []struct {
		name, doc string
		want      []string // substrings of the advice, in order
		not       []string
	}{
		{"unmatchedImages Allow beside Verify", native("  unmatchedImages: Allow\n", verifyA), []string{allowed + " (unmatchedImages: Allow) beside rules that deny or verify (p/team)", "localhost for 127.0.0.1"}, nil},
		{"unmatchedImages Deny", native("", verifyA), nil, []string{allowed}},
		{"Audit-mode Deny does not close the node", native("  mode: Audit\n", verifyA), []string{allowed}, nil},
		{"only Allow rules", native("  unmatchedImages: Allow\n", "  - name: any\n    images: [\"*\"]\n    action: Allow\n"), nil, []string{allowed}},
		{"Kyverno-only set", enforceDoc(`{any: [{resources: {kinds: [Pod]}}]}`, ""), []string{allowed + " (a set of only Kyverno policies"}, nil},
		{"tag-only pattern", native("", strings.Replace(verifyA, `"registry.example.com/team/*"`, `"registry.example.com/team/app:*", "registry.example.com/team/db:v1"`, 1)),
			[]string{`pattern "registry.example.com/team/app:*" matches tags only`, `write "registry.example.com/team/app*"`, `pattern "registry.example.com/team/db:v1" matches tags only`}, nil},
		{"patterns that cover digests", native("", strings.Replace(verifyA, `"registry.example.com/team/*"`, `"registry.example.com/team/app*", "127.0.0.1:5199/team/*", "ghcr.io/*:*"`, 1)), nil, []string{"matches tags only"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			var out bytes.Buffer
			Describe(&out, mustLoad(t, e.expand(tt.doc)))
			text := out.String()
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("policy check lacks %q:\n%s", w, text)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(text, w) {
					t.Errorf("policy check says %q:\n%s", w, text)
				}
			}
		})
	}
}
