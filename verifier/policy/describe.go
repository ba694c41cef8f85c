package policy

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/criguard/criguard/verifier/cosign"
)

// Describe writes what a loaded set enforces, policy by policy, then the
// combined effect on images no rule decides and the warnings: the text of
// `criguard policy check`. The combined effect is computed by the engine's own
// rules (unmatchedFor), never re-derived here.
func Describe(w io.Writer, set *Set) {
	rules := 0
	for _, p := range set.Policies {
		rules += len(p.Rules)
		describePolicy(w, p)
	}
	describeUnmatched(w, set)
	if len(set.Warnings) > 0 {
		fmt.Fprintln(w, "warnings and skipped parts:")
		for _, x := range set.Warnings {
			fmt.Fprintf(w, "  %s\n", x)
		}
	}
	fmt.Fprintf(w, "OK: %d policies, %d rules\n", len(set.Policies), rules)
}

func describePolicy(w io.Writer, p *Policy) {
	ns := "all namespaces"
	if p.Namespace != "" {
		ns = "namespace " + p.Namespace + " only"
	}
	fmt.Fprintf(w, "%s %q (%s: document %d)\n", p.Source, p.Name, p.File, p.Document)
	fmt.Fprintf(w, "  applies to: %s\n", ns)
	fmt.Fprintf(w, "  mode: %s", p.Mode)
	for _, o := range p.ModeOverrides {
		where := "no namespace (an empty namespaces list)"
		switch {
		case o.AllNamespaces:
			where = "every namespace"
		case len(o.Namespaces) > 0:
			where = "namespaces [" + strings.Join(o.Namespaces, ", ") + "]"
		}
		fmt.Fprintf(w, "; %s in %s", o.Mode, where)
	}
	fmt.Fprintln(w)
	if p.Source != SourceImagePolicy && p.Mode == Audit {
		fmt.Fprintln(w, "    note: Audit is Kyverno's default when validationFailureAction/failureAction is not set: failures are only reported")
	}
	fmt.Fprintf(w, "  failurePolicy: %s, verification timeout: %s, cache: ttl %s, max %d entries\n", p.FailurePolicy, p.Timeout, p.CacheTTL, p.CacheMax)
	if p.IncompleteBlocksAnyMode {
		fmt.Fprintln(w, "    a verification that could not complete (network error or timeout) is denied under failurePolicy Fail even in Audit mode; other registry errors fail the rule (as in Kyverno)")
	}
	switch p.Unmatched {
	case Deny:
		fmt.Fprintf(w, "  unmatchedImages: Deny (images no Enforce-mode rule of any policy matches are %s)\n", map[Mode]string{Enforce: "denied", Audit: "reported"}[p.Mode])
	case Allow:
		fmt.Fprintln(w, "  unmatchedImages: Allow")
	}
	for _, r := range p.Rules {
		describeRule(w, r)
	}
}

func describeRule(w io.Writer, r *Rule) {
	fmt.Fprintf(w, "  rule %q: %s\n", r.Name, r.Action)
	if r.Mode != "" {
		fmt.Fprintf(w, "    mode: %s (the rule's own failureAction)\n", r.Mode)
	}
	fmt.Fprintf(w, "    images: %s\n", strings.Join(r.Images, ", "))
	if len(r.ExcludeImages) > 0 {
		fmt.Fprintf(w, "    except: %s\n", strings.Join(r.ExcludeImages, ", "))
	}
	fmt.Fprintf(w, "    namespaces: %s\n", describeNamespaces(r))
	if r.RequireDigestReference {
		fmt.Fprintln(w, "    images must be referenced by digest (verifyDigest: true, mutateDigest: false)")
	}
	if r.NoCache {
		fmt.Fprintln(w, "    verdicts are not cached (useCache: false)")
	}
	if r.Action == Verify && len(r.Attestors) == 0 && len(r.Attestations) == 0 {
		fmt.Fprintln(w, "    no attestors: every image this rule matches fails (as in Kyverno: an unverified image)")
	}
	for i, a := range r.Attestors {
		label := "attestors"
		if len(r.Attestors) > 1 {
			label = fmt.Sprintf("attestor set %d", i+1)
		}
		describeSetTo(w, "    ", label, a)
	}
	for _, at := range r.Attestations {
		if at.Name != at.PredicateType {
			fmt.Fprintf(w, "    attestation %s: predicate type %s", at.Name, at.PredicateType)
		} else {
			fmt.Fprintf(w, "    attestation of predicate type %s", at.PredicateType)
		}
		if at.Conditions != nil {
			fmt.Fprint(w, ", with conditions")
		}
		fmt.Fprintln(w)
		for i, a := range at.Sets {
			describeSetTo(w, "      ", fmt.Sprintf("attestor set %d", i+1), a)
		}
	}
}

func describeSetTo(w io.Writer, indent, label string, a AttestorSet) {
	names := make([]string, len(a.Attestors))
	for j, at := range a.Attestors {
		names[j] = describeAttestor(at)
	}
	fmt.Fprintf(w, "%s%s: %d of %d must verify: %s\n", indent, label, a.Count, len(a.Attestors), strings.Join(names, ", "))
	if a.Repository != "" {
		fmt.Fprintf(w, "%s  signatures looked up in %s\n", indent, a.Repository)
	}
}

// describeAttestor names an attestor with what it requires.
func describeAttestor(a cosign.Attestor) string {
	var req []string
	if a.Key != nil {
		req = append(req, a.Key.Algorithm)
	}
	if a.IgnoreTlog {
		req = append(req, "no transparency log")
	} else {
		req = append(req, "transparency-log entry required")
	}
	if a.Key == nil && a.IgnoreSCT {
		req = append(req, "SCT not checked")
	}
	if !a.Overrides.Empty() {
		req = append(req, "own trust overrides")
	}
	return fmt.Sprintf("%s (%s)", a.Label(), strings.Join(req, ", "))
}

// describeUnmatched states, through the engine's own decisions, what happens
// to an image no rule matches and to one only Audit-mode rules match.
func describeUnmatched(w io.Writer, set *Set) {
	u := unmatchedFor(set, "")
	none := u.apply(Decision{}, nil, nil)
	fmt.Fprintf(w, "images no rule matches: %s\n", none.Outcome())
	var audit []matchedRule
	for _, p := range set.Policies {
		for _, r := range p.Rules {
			if r.auditSomewhere() {
				audit = append(audit, matchedRule{r: r, mode: Audit})
			}
		}
	}
	if len(audit) == 0 {
		return
	}
	if !u.denies() && !u.audits() {
		fmt.Fprintln(w, "images only Audit-mode rules match: allowed: an Audit rule reports what it finds, it denies nothing")
		return
	}
	only := u.apply(Decision{Allowed: true, Reason: "each Audit rule reports what it finds"}, audit, nil)
	fmt.Fprintf(w, "images only Audit-mode rules match: %s\n", only.Outcome())
}

// auditSomewhere reports whether the rule is in Audit mode in some namespace.
func (r *Rule) auditSomewhere() bool {
	if r.Mode != "" {
		return r.Mode == Audit
	}
	if r.Policy.Mode == Audit {
		return true
	}
	for _, o := range r.Policy.ModeOverrides {
		if o.Mode == Audit {
			return true
		}
	}
	return false
}

func describeNamespaces(r *Rule) string {
	inc := filterText(r.Match)
	if inc == "" {
		inc = "all"
	}
	if r.Policy.Namespace != "" {
		inc = r.Policy.Namespace + " (the Policy's namespace)"
	}
	if exc := filterText(r.Exclude); exc != "" {
		inc += "; excluding " + exc
	}
	return inc
}

func filterText(m NamespaceMatch) string {
	var parts []string
	for _, f := range m.Filters {
		switch {
		case f.Never:
			parts = append(parts, "(a filter that selects no pod creation)")
		case len(f.Namespaces) == 0:
			parts = append(parts, "all")
		default:
			ns := append([]string(nil), f.Namespaces...)
			sort.Strings(ns)
			parts = append(parts, "["+strings.Join(ns, ", ")+"]")
		}
	}
	if len(parts) == 0 {
		return ""
	}
	sep := " or "
	if m.All {
		sep = " and "
	}
	return strings.Join(parts, sep)
}
