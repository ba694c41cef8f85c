package policy

import (
	"fmt"
	"path/filepath"
	"regexp"
	"time"

	"github.com/criguard/criguard/verifier/attest"
	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/imageref"
	"github.com/criguard/criguard/verifier/keys"
	"github.com/criguard/criguard/verifier/sigverify"
)

// APIVersion and kind of criguard's own policy.
const (
	NativeAPIVersion = "criguard.dev/v1alpha1"
	NativeKind       = "ImagePolicy"
)

type nativeDoc struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   nativeMetadata `json:"metadata"`
	Spec       nativeSpec     `json:"spec"`
}

type nativeMetadata struct {
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type nativeSpec struct {
	Mode                string       `json:"mode"`
	UnmatchedImages     string       `json:"unmatchedImages"`
	FailurePolicy       string       `json:"failurePolicy"`
	VerificationTimeout string       `json:"verificationTimeout"`
	Cache               *nativeCache `json:"cache"`
	Rules               []nativeRule `json:"rules"`
}

type nativeCache struct {
	TTL        string `json:"ttl"`
	MaxEntries *int   `json:"maxEntries"`
}

type nativeRule struct {
	Name                string              `json:"name"`
	Images              []string            `json:"images"`
	ExcludeImages       []string            `json:"excludeImages"`
	Namespaces          []string            `json:"namespaces"`
	Action              string              `json:"action"`
	SignatureRepository string              `json:"signatureRepository"`
	Attestors           *nativeAttestors    `json:"attestors"`
	Attestations        []nativeAttestation `json:"attestations"`
}

// nativeAttestation requires attestations of predicateType (a URI or one of
// cosign's --type names) meeting conditions (Kyverno's syntax), signed by
// attestors (default: the rule's).
type nativeAttestation struct {
	Name          string                    `json:"name"`
	PredicateType string                    `json:"predicateType"`
	Conditions    []attest.AnyAllConditions `json:"conditions"`
	Attestors     *nativeAttestors          `json:"attestors"`
}

type nativeAttestors struct {
	Count   *int          `json:"count"`
	Entries []nativeEntry `json:"entries"`
}

type nativeEntry struct {
	Key     *nativeKey     `json:"key"`
	Keyless *nativeKeyless `json:"keyless"`
}

// Transparency-log choices of an attestor entry.
const (
	tlogRequire = "Require"
	tlogIgnore  = "Ignore"
)

type nativeKey struct {
	File               string `json:"file"`
	Data               string `json:"data"`
	SignatureAlgorithm string `json:"signatureAlgorithm"`
	// TransparencyLog: Require (a Rekor entry must prove the signature, as
	// cosign and Kyverno default to) or Ignore (the key alone; the default
	// for a key entry, as ImagePolicy has always meant).
	TransparencyLog string `json:"transparencyLog"`
}

// nativeKeyless is modelled on sigstore policy-controller's keyless
// authority: identities (any one must match) and the checks it waives.
type nativeKeyless struct {
	Identities []nativeIdentity `json:"identities"`
	// TransparencyLog: Require (default) or Ignore (then an RFC 3161
	// timestamp must prove the signing time).
	TransparencyLog   string `json:"transparencyLog"`
	InsecureIgnoreSCT bool   `json:"insecureIgnoreSCT"`
}

type nativeIdentity struct {
	Issuer         string          `json:"issuer"`
	IssuerRegExp   string          `json:"issuerRegExp"`
	Subject        string          `json:"subject"`
	SubjectRegExp  string          `json:"subjectRegExp"`
	GitHubWorkflow *nativeWorkflow `json:"githubWorkflow"`
}

type nativeWorkflow struct {
	Trigger    string `json:"trigger"`
	SHA        string `json:"sha"`
	Name       string `json:"name"`
	Repository string `json:"repository"`
	Ref        string `json:"ref"`
}

func enumOf[T ~string](path, v string, def T, allowed ...T) (T, error) {
	if v == "" {
		return def, nil
	}
	for _, a := range allowed {
		if string(a) == v {
			return a, nil
		}
	}
	return "", errAt(path, "unknown value %q (want one of %v)", v, allowed)
}

func parseDuration(path, v string, def, max time.Duration, zeroOK bool) (time.Duration, error) {
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, errAt(path, "%q is not a duration (e.g. 10s, 5m): %v", v, err)
	}
	if d < 0 || (d == 0 && !zeroOK) || d > max {
		return 0, errAt(path, "%s is out of range (0 < d <= %s)", d, max)
	}
	return d, nil
}

// compileNative turns an ImagePolicy document into a Policy, or refuses it
// with every reason found. baseDir resolves relative key file paths (the
// policy file's directory).
func compileNative(data []byte, file string, doc int, baseDir string) (*Policy, error) {
	var d nativeDoc
	var errs errList
	if err := decodeStrict(data, &d, &errs); err != nil {
		return nil, err
	}
	if d.Metadata.Name == "" {
		errs.add(errAt("metadata.name", "required"))
	}
	p := &Policy{Name: d.Metadata.Name, Source: SourceImagePolicy, File: file, Document: doc}
	compileNativeSpec(p, d.Spec, &errs)
	seen := map[string]bool{}
	for i, nr := range d.Spec.Rules {
		path := fmt.Sprintf("spec.rules[%d]", i)
		if nr.Name != "" && seen[nr.Name] {
			errs.add(errAt(path+".name", "duplicate rule name %q", nr.Name))
			continue
		}
		seen[nr.Name] = true
		r, err := compileNativeRule(p, nr, path, baseDir)
		if errs.add(err) {
			continue
		}
		p.Rules = append(p.Rules, r)
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return p, nil
}

func compileNativeSpec(p *Policy, s nativeSpec, errs *errList) {
	var err error
	p.Mode, err = enumOf("spec.mode", s.Mode, Enforce, Enforce, Audit)
	errs.add(err)
	p.Unmatched, err = enumOf("spec.unmatchedImages", s.UnmatchedImages, Deny, Deny, Allow)
	errs.add(err)
	p.FailurePolicy, err = enumOf("spec.failurePolicy", s.FailurePolicy, Fail, Fail, Ignore)
	errs.add(err)
	p.Timeout, err = parseDuration("spec.verificationTimeout", s.VerificationTimeout, DefaultTimeout, MaxTimeout, false)
	errs.add(err)
	p.CacheTTL, p.CacheMax = DefaultCacheTTL, DefaultCacheMax
	if s.Cache != nil {
		p.CacheTTL, err = parseDuration("spec.cache.ttl", s.Cache.TTL, DefaultCacheTTL, 24*time.Hour, true)
		errs.add(err)
		if m := s.Cache.MaxEntries; m != nil {
			if *m < 0 || *m > 1_000_000 {
				errs.add(errAt("spec.cache.maxEntries", "%d is out of range (0 disables the cache; at most 1000000)", *m))
			} else {
				p.CacheMax = *m
			}
		}
	}
}

func compileNativeRule(p *Policy, nr nativeRule, path, baseDir string) (*Rule, error) {
	var errs errList
	if nr.Name == "" {
		errs.add(errAt(path+".name", "required"))
	}
	r := &Rule{Name: nr.Name, Policy: p}
	var err error
	if len(nr.Images) == 0 {
		errs.add(errAt(path+".images", "required: at least one image pattern (\"*\" matches every image)"))
	}
	r.Images, err = imagePatterns(path+".images", nr.Images)
	errs.add(err)
	r.ExcludeImages, err = imagePatterns(path+".excludeImages", nr.ExcludeImages)
	errs.add(err)
	errs.add(checkPatterns(path+".namespaces", nr.Namespaces))
	if len(nr.Namespaces) > 0 {
		r.Match = NamespaceMatch{Filters: []NamespaceFilter{{Namespaces: nr.Namespaces}}}
	}
	r.Action, err = enumOf(path+".action", nr.Action, Verify, Verify, Allow, Deny)
	errs.add(err)
	if err == nil {
		errs.add(nativeVerifyOf(r, nr, path, baseDir))
	}
	return r, errs.err()
}

func nativeKeyOf(path string, k *nativeKey, baseDir, dataName string) (*keys.Key, error) {
	switch {
	case k.File != "" && k.Data != "":
		return nil, errAt(path, "set either file or data, not both")
	case k.File != "":
		f := k.File
		if !filepath.IsAbs(f) {
			f = filepath.Join(baseDir, f)
		}
		key, err := keys.LoadFile(f, k.SignatureAlgorithm)
		if err != nil {
			return nil, errAt(path+".file", "%v", err)
		}
		return key, nil
	case k.Data != "":
		key, err := keys.Parse(dataName, []byte(k.Data), k.SignatureAlgorithm)
		if err != nil {
			return nil, errAt(path+".data", "%v", err)
		}
		return key, nil
	}
	return nil, errAt(path, "set file or data")
}

func checkPatterns(path string, ps []string) error {
	for i, p := range ps {
		if err := checkPattern(p); err != nil {
			return errAt(fmt.Sprintf("%s[%d]", path, i), "%v", err)
		}
	}
	return nil
}

// imagePatterns checks image patterns and makes their registry part canonical
// (imageref.CanonicalPattern), so that a pattern matches however the pod
// spells the registry.
func imagePatterns(path string, ps []string) ([]string, error) {
	if ps == nil {
		return nil, nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		if err := checkPattern(p); err != nil {
			return nil, errAt(fmt.Sprintf("%s[%d]", path, i), "%v", err)
		}
		c, err := imageref.CanonicalPattern(p)
		if err != nil {
			return nil, errAt(fmt.Sprintf("%s[%d]", path, i), "pattern %q: %v", p, err)
		}
		out[i] = c
	}
	return out, nil
}

// nativeVerifyOf compiles a rule's attestors and attestations.
func nativeVerifyOf(r *Rule, nr nativeRule, path, baseDir string) error {
	if r.Action != Verify {
		if nr.Attestors != nil || nr.SignatureRepository != "" || len(nr.Attestations) > 0 {
			return errAt(path+".attestors", "attestors, attestations and signatureRepository only apply to action Verify (this rule is %s)", r.Action)
		}
		return nil
	}
	if nr.SignatureRepository != "" {
		if err := checkRepository(path+".signatureRepository", nr.SignatureRepository); err != nil {
			return err
		}
	}
	if nr.Attestors == nil && len(nr.Attestations) == 0 {
		return errAt(path+".attestors.entries", "action Verify needs at least one key or keyless entry (or attestations)")
	}
	if nr.Attestors != nil {
		set, err := nativeSetOf(r, nr.Attestors, path+".attestors", "", nr.SignatureRepository, baseDir)
		if err != nil {
			return err
		}
		r.Attestors = []AttestorSet{set}
	}
	for i, na := range nr.Attestations {
		ap := fmt.Sprintf("%s.attestations[%d]", path, i)
		uri, err := attest.PredicateType(na.PredicateType)
		if err != nil {
			return errAt(ap+".predicateType", "%v", err)
		}
		at := Attestation{Name: na.Name, PredicateType: uri}
		if at.Name == "" {
			at.Name = uri
		}
		if len(na.Conditions) > 0 {
			if at.Conditions, err = attest.Compile(na.Conditions); err != nil {
				return errAt(ap+".conditions", "%v", err)
			}
		}
		switch {
		case na.Attestors != nil:
			set, err := nativeSetOf(r, na.Attestors, ap+".attestors", fmt.Sprintf("attestations[%d]/", i), nr.SignatureRepository, baseDir)
			if err != nil {
				return err
			}
			at.Sets = []AttestorSet{set}
		case len(r.Attestors) > 0:
			at.Sets = r.Attestors
		default:
			return errAt(ap+".attestors", "required when the rule has no attestors: who must have signed the attestation")
		}
		r.Attestations = append(r.Attestations, at)
	}
	return nil
}

// nativeSetOf compiles an attestors block; key data entries are named
// POLICY/RULE/<prefix>entries[N].
func nativeSetOf(r *Rule, na *nativeAttestors, path, prefix, repo, baseDir string) (AttestorSet, error) {
	if len(na.Entries) == 0 {
		return AttestorSet{}, errAt(path+".entries", "at least one key or keyless entry is needed")
	}
	set := AttestorSet{Repository: repo}
	for j, e := range na.Entries {
		ep := fmt.Sprintf("%s.entries[%d]", path, j)
		var a cosign.Attestor
		switch {
		case e.Key != nil && e.Keyless != nil:
			return AttestorSet{}, errAt(ep, "set key or keyless, not both")
		case e.Key != nil:
			k, err := nativeKeyOf(ep+".key", e.Key, baseDir, fmt.Sprintf("%s/%s/%sentries[%d]", r.Policy.Name, r.Name, prefix, j))
			if err != nil {
				return AttestorSet{}, err
			}
			a.Key = k
			tl, err := enumOf(ep+".key.transparencyLog", e.Key.TransparencyLog, tlogIgnore, tlogRequire, tlogIgnore)
			if err != nil {
				return AttestorSet{}, err
			}
			a.IgnoreTlog = tl == tlogIgnore
		case e.Keyless != nil:
			var err error
			if a, err = nativeKeylessOf(ep+".keyless", e.Keyless); err != nil {
				return AttestorSet{}, err
			}
		default:
			return AttestorSet{}, errAt(ep, "set key or keyless")
		}
		set.Attestors = append(set.Attestors, a)
	}
	set.Count = len(set.Attestors)
	if c := na.Count; c != nil {
		if *c < 1 || *c > len(set.Attestors) {
			return AttestorSet{}, errAt(path+".count", "%d is out of range: between 1 and the number of entries (%d)", *c, len(set.Attestors))
		}
		set.Count = *c
	}
	return set, nil
}

func nativeKeylessOf(path string, kl *nativeKeyless) (cosign.Attestor, error) {
	var a cosign.Attestor
	tl, err := enumOf(path+".transparencyLog", kl.TransparencyLog, tlogRequire, tlogRequire, tlogIgnore)
	if err != nil {
		return a, err
	}
	a.IgnoreTlog, a.IgnoreSCT = tl == tlogIgnore, kl.InsecureIgnoreSCT
	if len(kl.Identities) == 0 {
		return a, errAt(path+".identities", "required: at least one identity (issuer and subject)")
	}
	for i, ni := range kl.Identities {
		ip := fmt.Sprintf("%s.identities[%d]", path, i)
		id := sigverify.Identity{Subject: ni.Subject, SubjectRegExp: ni.SubjectRegExp, Issuer: ni.Issuer, IssuerRegExp: ni.IssuerRegExp}
		if err := checkIdentity(ip, id); err != nil {
			return a, err
		}
		if w := ni.GitHubWorkflow; w != nil {
			id.Extensions.GithubWorkflowTrigger, id.Extensions.GithubWorkflowSHA = w.Trigger, w.SHA
			id.Extensions.GithubWorkflowName, id.Extensions.GithubWorkflowRepository, id.Extensions.GithubWorkflowRef = w.Name, w.Repository, w.Ref
		}
		a.Identities = append(a.Identities, id)
	}
	return a, nil
}

// checkIdentity requires exactly one of subject/subjectRegExp and of
// issuer/issuerRegExp, and valid regular expressions, as cosign does.
func checkIdentity(path string, id sigverify.Identity) error {
	switch {
	case (id.Subject == "") == (id.SubjectRegExp == ""):
		return errAt(path+".subject", "set exactly one of subject and subjectRegExp")
	case (id.Issuer == "") == (id.IssuerRegExp == ""):
		return errAt(path+".issuer", "set exactly one of issuer and issuerRegExp")
	}
	for _, re := range []struct{ path, expr string }{{path + ".subjectRegExp", id.SubjectRegExp}, {path + ".issuerRegExp", id.IssuerRegExp}} {
		if _, err := regexp.Compile(re.expr); err != nil {
			return errAt(re.path, "not a regular expression: %v", err)
		}
	}
	return nil
}
