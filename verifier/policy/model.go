// Package policy loads criguard's image policies (criguard.dev/v1alpha1
// ImagePolicy, and Kyverno kyverno.io/v1 ClusterPolicy and Policy with
// verifyImages rules) into one internal model, evaluates images against it with
// a verdict cache, and reloads it when the files change.
//
// Loading is strict: an unknown field, an unknown enum value, a key that cannot
// be read or a Kyverno feature criguard cannot honour makes the whole policy set
// invalid, with an error that names the file, the document and the field. A
// policy is never silently weakened.
package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sigstore/sigstore-go/pkg/root"

	"github.com/criguard/criguard/verifier/attest"
	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/wildcard"
)

// Mode says what a failed rule does.
type Mode string

// Modes.
const (
	Enforce Mode = "Enforce" // deny
	Audit   Mode = "Audit"   // log and count as "would deny", allow
)

// FailurePolicy says what a verification that could not complete does.
type FailurePolicy string

// Failure policies.
const (
	Fail   FailurePolicy = "Fail"   // deny (under Enforce) like a failed verification
	Ignore FailurePolicy = "Ignore" // allow, recorded as failed open
)

// Action is what a rule does with an image it matches.
type Action string

// Actions.
const (
	Verify Action = "Verify" // the image digest must carry enough valid signatures
	Allow  Action = "Allow"  // the rule passes without verification
	Deny   Action = "Deny"   // the rule fails
)

// Defaults for an ImagePolicy (and, where Kyverno has no equivalent, for Kyverno
// policies).
const (
	DefaultTimeout    = 10 * time.Second
	DefaultCacheTTL   = 10 * time.Minute
	DefaultCacheMax   = 10000
	MaxDenyCacheTTL   = 30 * time.Second
	MaxTimeout        = 5 * time.Minute
	maxKyvernoTimeout = 30 * time.Second
)

// Source says which kind a policy was written as.
type Source string

// Sources.
const (
	SourceImagePolicy   Source = "ImagePolicy"   // criguard.dev/v1alpha1
	SourceClusterPolicy Source = "ClusterPolicy" // kyverno.io
	SourcePolicy        Source = "Policy"        // kyverno.io, namespaced
)

// Set is one compiled, valid policy set: everything loaded from one path.
type Set struct {
	// Generation numbers the sets a Store has held (1 for the first); the
	// verdict cache is keyed on it, so a reload never serves an old verdict.
	Generation uint64
	Policies   []*Policy
	// Warnings are things skipped on purpose (non-verifyImages rules, other
	// kinds); they do not make the set invalid.
	Warnings []Warning
	// Digest identifies the loaded bytes; a reload with the same digest keeps
	// the generation (and the cache).
	Digest string
}

// Warning is something the loader skipped, with where it was.
type Warning struct {
	File     string
	Document int // 1-based
	Path     string
	Message  string
}

func (w Warning) String() string {
	return fmt.Sprintf("%s: %s", location(w.File, w.Document, w.Path), w.Message)
}

// Policy is one ImagePolicy, ClusterPolicy or Policy.
type Policy struct {
	Name   string
	Source Source
	File   string
	// Document is the 1-based index of the YAML document in File.
	Document int
	// Namespace restricts a namespaced Kyverno Policy to its own namespace; empty
	// for cluster-wide policies.
	Namespace string
	Mode      Mode
	// ModeOverrides (Kyverno validationFailureActionOverrides) set the mode per
	// namespace; the first override whose namespaces match wins.
	ModeOverrides []ModeOverride
	FailurePolicy FailurePolicy
	Timeout       time.Duration
	CacheTTL      time.Duration
	CacheMax      int
	// Unmatched is what this policy says of images no Enforce-mode rule of the
	// whole set matches: Deny or Allow. Kyverno policies say nothing ("").
	Unmatched Action
	Rules     []*Rule

	// Kyverno's semantics, recorded when the policy is loaded so that
	// evaluation never asks which kind a policy was written as.

	// OnlyNetworkErrorsIncomplete: only a network error or a timeout leaves a
	// verification incomplete (failurePolicy decides); any other registry
	// failure fails the rule (Kyverno's handleRegistryErrors). Otherwise every
	// verification that could not complete is incomplete.
	OnlyNetworkErrorsIncomplete bool
	// IncompleteBlocksAnyMode: an incomplete verification under failurePolicy
	// Fail denies whatever the mode (Kyverno's engineutils.BlockRequest);
	// otherwise it denies only under Enforce.
	IncompleteBlocksAnyMode bool

	// Trust is the Sigstore trusted root this policy's verifications use (the
	// node's: --trusted-root, else the embedded public-good root). The Store
	// sets it when it installs a set; nil trusts no log or CA, so only key
	// attestors that waive the transparency log can verify.
	Trust root.TrustedMaterial
}

// ModeOverride sets Mode for pods in Namespaces (globs), or in every
// namespace when AllNamespaces is set (a Kyverno override without namespaces:
// since Kyverno 1.18 it applies to all). An empty, non-nil namespaces list
// matches none.
type ModeOverride struct {
	Mode          Mode
	Namespaces    []string
	AllNamespaces bool
}

// Rule is one rule; for Kyverno, one verifyImages entry of a rule.
type Rule struct {
	Name   string
	Policy *Policy
	// Images and ExcludeImages are Kyverno-style wildcards ('*' any run, '?' one
	// character) on the image reference; see imageSpellings for the spellings.
	Images        []string
	ExcludeImages []string
	// Match and Exclude say which pod namespaces the rule applies to.
	Match   NamespaceMatch
	Exclude NamespaceMatch
	Action  Action
	// Mode, when set, is this rule's own mode (Kyverno's verifyImages
	// failureAction), overriding the policy's.
	Mode Mode
	// Attestors must each pass (logical AND).
	Attestors []AttestorSet
	// Attestations must each pass too: a rule with attestations allows only
	// when its signatures and every attestation's conditions pass.
	Attestations []Attestation
	// RequireDigestReference denies images not referenced by digest (Kyverno
	// verifyDigest: true with mutateDigest: false).
	RequireDigestReference bool
	// NoCache disables the verdict cache for decisions this rule takes part in
	// (Kyverno useCache: false).
	NoCache bool
}

// ID names the rule uniquely within a set. Each part is quoted: names may
// contain "/", and the ID keys the verdict cache.
func (r *Rule) ID() string {
	return strconv.Quote(string(r.Policy.Source)) + "/" + strconv.Quote(r.Policy.Namespace) + "/" +
		strconv.Quote(r.Policy.Name) + "/" + strconv.Quote(r.Name)
}

// AttestorSet is a set of attestors (keys, with or without a
// transparency-log entry, or keyless identities) of which Count distinct
// signers must verify a signature.
type AttestorSet struct {
	Attestors  []cosign.Attestor
	Count      int // 1..len(Attestors)
	Repository string
}

// Attestation requires in-toto attestations of PredicateType whose predicate
// meets Conditions (nil: any), signed by each of Sets (all must pass).
type Attestation struct {
	// Name is how verdicts name it (Kyverno's name, else the predicate type).
	Name          string
	PredicateType string
	Conditions    *attest.Conditions
	Sets          []AttestorSet
}

// NamespaceMatch is a disjunction of filters (Any) or a conjunction (All); a
// zero NamespaceMatch with Empty set matches nothing (for Exclude) and the
// rule's default for Match is "all namespaces".
type NamespaceMatch struct {
	// Filters each hold namespace globs; an empty glob list matches every
	// namespace. Filters with Never set never match (e.g. operations that are not
	// pod creation).
	Filters []NamespaceFilter
	// All requires every filter to match, else any.
	All bool
}

// NamespaceFilter is one namespace condition.
type NamespaceFilter struct {
	Namespaces []string
	Never      bool
}

// matchesNamespace reports whether m matches ns. An unknown namespace ("")
// matches every filter when including (more rules apply: fail closed) and no
// filter when excluding.
func (m NamespaceMatch) matches(ns string, excluding bool) bool {
	if len(m.Filters) == 0 {
		return !excluding
	}
	hit := func(f NamespaceFilter) bool {
		if f.Never {
			return false
		}
		if len(f.Namespaces) == 0 {
			return true
		}
		if ns == "" {
			return !excluding
		}
		for _, g := range f.Namespaces {
			if wildcard.Match(g, ns) {
				return true
			}
		}
		return false
	}
	if m.All {
		for _, f := range m.Filters {
			if !hit(f) {
				return false
			}
		}
		return true
	}
	for _, f := range m.Filters {
		if hit(f) {
			return true
		}
	}
	return false
}

// modeFor returns the rule's effective mode for a pod namespace. Kyverno's
// order: the rule's own failureAction, then the first matching override, then
// the policy's action.
func (r *Rule) modeFor(ns string) Mode {
	if r.Mode != "" {
		return r.Mode
	}
	for _, o := range r.Policy.ModeOverrides {
		if ns == "" {
			// The pod's namespace is unknown: the strictest mode an override
			// could give it applies, up to the first that covers them all.
			if o.Mode == Enforce && (o.AllNamespaces || len(o.Namespaces) > 0) {
				return Enforce
			}
			if o.AllNamespaces {
				return o.Mode
			}
			continue
		}
		if o.AllNamespaces {
			return o.Mode
		}
		for _, g := range o.Namespaces {
			if wildcard.Match(g, ns) {
				return o.Mode
			}
		}
	}
	return r.Policy.Mode
}

// appliesTo reports whether the rule applies to a pod in namespace ns.
func (r *Rule) appliesToNamespace(ns string) bool {
	if r.Policy.Namespace != "" && ns != "" && ns != r.Policy.Namespace {
		return false
	}
	return r.Match.matches(ns, false) && !r.Exclude.matches(ns, true)
}

func location(file string, doc int, path string) string {
	var b strings.Builder
	b.WriteString(file)
	if doc > 0 {
		fmt.Fprintf(&b, ": document %d", doc)
	}
	if path != "" {
		b.WriteString(": ")
		b.WriteString(path)
	}
	return b.String()
}
