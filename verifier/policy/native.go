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

// compileNative turns an ImagePolicy document into a Policy. baseDir resolves
// relative key file paths (the policy file's directory).
func compileNative(data []byte, file string, doc int, baseDir string) (*Policy, error) {
	var d nativeDoc
	if err := decodeStrict(data, &d); err != nil {
		return nil, err
	}
	if d.Metadata.Name == "" {
		return nil, errAt("metadata.name", "required")
	}
	p := &Policy{Name: d.Metadata.Name, Source: SourceImagePolicy, File: file, Document: doc}
	var err error
	s := d.Spec
	if p.Mode, err = enumOf("spec.mode", s.Mode, Enforce, Enforce, Audit); err != nil {
		return nil, err
	}
	if p.Unmatched, err = enumOf("spec.unmatchedImages", s.UnmatchedImages, Deny, Deny, Allow); err != nil {
		return nil, err
	}
	if p.FailurePolicy, err = enumOf("spec.failurePolicy", s.FailurePolicy, Fail, Fail, Ignore); err != nil {
		return nil, err
	}
	if p.Timeout, err = parseDuration("spec.verificationTimeout", s.VerificationTimeout, DefaultTimeout, MaxTimeout, false); err != nil {
		return nil, err
	}
	p.CacheTTL, p.CacheMax = DefaultCacheTTL, DefaultCacheMax
	if s.Cache != nil {
		if p.CacheTTL, err = parseDuration("spec.cache.ttl", s.Cache.TTL, DefaultCacheTTL, 24*time.Hour, true); err != nil {
			return nil, err
		}
		if s.Cache.MaxEntries != nil {
			if *s.Cache.MaxEntries < 0 || *s.Cache.MaxEntries > 1_000_000 {
				return nil, errAt("spec.cache.maxEntries", "%d is out of range (0 disables the cache; at most 1000000)", *s.Cache.MaxEntries)
			}
			p.CacheMax = *s.Cache.MaxEntries
		}
	}
	seen := map[string]bool{}
	for i, nr := range s.Rules {
		path := fmt.Sprintf("spec.rules[%d]", i)
		if nr.Name == "" {
			return nil, errAt(path+".name", "required")
		}
		if seen[nr.Name] {
			return nil, errAt(path+".name", "duplicate rule name %q", nr.Name)
		}
		seen[nr.Name] = true
		r := &Rule{Name: nr.Name, Policy: p}
		if len(nr.Images) == 0 {
			return nil, errAt(path+".images", "required: at least one image pattern (\"*\" matches every image)")
		}
		if r.Images, err = imagePatterns(path+".images", nr.Images); err != nil {
			return nil, err
		}
		if r.ExcludeImages, err = imagePatterns(path+".excludeImages", nr.ExcludeImages); err != nil {
			return nil, err
		}
		if err := checkPatterns(path+".namespaces", nr.Namespaces); err != nil {
			return nil, err
		}
		if len(nr.Namespaces) > 0 {
			r.Match = NamespaceMatch{Filters: []NamespaceFilter{{Namespaces: nr.Namespaces}}}
		}
		if r.Action, err = enumOf(path+".action", nr.Action, Verify, Verify, Allow, Deny); err != nil {
			return nil, err
		}
		if r.Action != Verify {
			if nr.Attestors != nil || nr.SignatureRepository != "" {
				return nil, errAt(path+".attestors", "attestors and signatureRepository only apply to action Verify (this rule is %s)", r.Action)
			}
		} else {
			if nr.Attestors == nil || len(nr.Attestors.Entries) == 0 {
				return nil, errAt(path+".attestors.entries", "action Verify needs at least one key")
			}
			set := AttestorSet{Repository: nr.SignatureRepository}
			if set.Repository != "" {
				if err := checkRepository(path+".signatureRepository", set.Repository); err != nil {
					return nil, err
				}
			}
			for j, e := range nr.Attestors.Entries {
				ep := fmt.Sprintf("%s.attestors.entries[%d].key", path, j)
				if e.Key == nil {
					return nil, errAt(ep, "required")
				}
				k, err := nativeKeyOf(ep, e.Key, baseDir, fmt.Sprintf("%s/%s/%s", p.Name, r.Name, fmt.Sprintf("entries[%d]", j)))
				if err != nil {
					return nil, err
				}
				set.Keys = append(set.Keys, k)
			}
			set.Count = len(set.Keys)
			if c := nr.Attestors.Count; c != nil {
				if *c < 1 || *c > len(set.Keys) {
					return nil, errAt(path+".attestors.count", "%d is out of range: between 1 and the number of entries (%d)", *c, len(set.Keys))
				}
				set.Count = *c
			}
			r.Attestors = []AttestorSet{set}
		}
		p.Rules = append(p.Rules, r)
	}
	return p, nil
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
