package policy

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/criguard/criguard/verifier/imageref"
	"github.com/criguard/criguard/verifier/keys"
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
	Name                string           `json:"name"`
	Images              []string         `json:"images"`
	ExcludeImages       []string         `json:"excludeImages"`
	Namespaces          []string         `json:"namespaces"`
	Action              string           `json:"action"`
	SignatureRepository string           `json:"signatureRepository"`
	Attestors           *nativeAttestors `json:"attestors"`
}

type nativeAttestors struct {
	Count   *int          `json:"count"`
	Entries []nativeEntry `json:"entries"`
}

type nativeEntry struct {
	Key *nativeKey `json:"key"`
}

type nativeKey struct {
	File               string `json:"file"`
	Data               string `json:"data"`
	SignatureAlgorithm string `json:"signatureAlgorithm"`
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
	switch {
	case err != nil:
	case r.Action != Verify:
		if nr.Attestors != nil || nr.SignatureRepository != "" {
			errs.add(errAt(path+".attestors", "attestors and signatureRepository only apply to action Verify (this rule is %s)", r.Action))
		}
	default:
		set, err := nativeAttestorSet(p, r, nr, path, baseDir)
		if !errs.add(err) {
			r.Attestors = []AttestorSet{set}
		}
	}
	return r, errs.err()
}

func nativeAttestorSet(p *Policy, r *Rule, nr nativeRule, path, baseDir string) (AttestorSet, error) {
	if nr.Attestors == nil || len(nr.Attestors.Entries) == 0 {
		return AttestorSet{}, errAt(path+".attestors.entries", "action Verify needs at least one key")
	}
	var errs errList
	set := AttestorSet{Repository: nr.SignatureRepository}
	if set.Repository != "" {
		errs.add(checkRepository(path+".signatureRepository", set.Repository))
	}
	for j, e := range nr.Attestors.Entries {
		ep := fmt.Sprintf("%s.attestors.entries[%d].key", path, j)
		if e.Key == nil {
			errs.add(errAt(ep, "required"))
			continue
		}
		k, err := nativeKeyOf(ep, e.Key, baseDir, fmt.Sprintf("%s/%s/entries[%d]", p.Name, r.Name, j))
		if !errs.add(err) {
			set.Keys = append(set.Keys, k)
		}
	}
	set.Count = len(nr.Attestors.Entries)
	if c := nr.Attestors.Count; c != nil {
		if *c < 1 || *c > len(nr.Attestors.Entries) {
			errs.add(errAt(path+".attestors.count", "%d is out of range: between 1 and the number of entries (%d)", *c, len(nr.Attestors.Entries)))
		}
		set.Count = *c
	}
	return set, errs.err()
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
