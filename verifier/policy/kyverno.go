package policy

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/criguard/criguard/verifier/keys"
)

// present reports whether a raw field holds something other than nothing.
func present(raw json.RawMessage) bool {
	s := string(bytes.TrimSpace(raw))
	return s != "" && s != "null" && s != "[]" && s != "{}"
}

// podKinds are the kinds whose pods a verifyImages rule checks. Kyverno applies
// a rule written for Pod to pod controllers too (auto-gen); a rule written only
// for controllers checks their pod templates. criguard cannot tell which
// controller made a pod, so either way the rule applies to every pod (stricter,
// never weaker: static and bare pods are judged too).
var podKinds = map[string]bool{
	"Pod": true, "Deployment": true, "DaemonSet": true, "StatefulSet": true,
	"ReplicaSet": true, "Job": true, "CronJob": true, "ReplicationController": true,
}

// kindCoversPods reports whether a Kyverno kinds entry ("Pod", "v1/Pod",
// "apps/v1/Deployment", "*", "Pod/ephemeralcontainers") selects containers
// being created on the node. With excluding false (a match) controllers count
// too, and a subresource counts when it is ephemeralcontainers (criguard cannot
// tell an ephemeral container from another, so the rule applies to all:
// stricter). With excluding true only Pod itself counts, and only without a
// subresource: Kyverno excludes Pod/ephemeralcontainers for that subresource
// alone, and an exclusion written for Deployments must not exclude pods on the
// node, where criguard cannot tell which controller made a pod.
func kindCoversPods(k string, excluding bool) bool {
	kind, sub := splitKindSelector(k)
	if excluding && !matchWildcard(sub, "") {
		return false
	}
	if !excluding && !matchWildcard(sub, "") && !matchWildcard(sub, "ephemeralcontainers") {
		return false // Pod/status, Pod/exec...: no container is created
	}
	for pk := range podKinds {
		if pk != "Pod" && excluding {
			continue
		}
		if matchWildcard(kind, pk) {
			return true
		}
	}
	return false
}

// splitKindSelector reads a kinds entry as Kyverno does
// (kubeutils.ParseKindSelector): kind, group/version/kind, version/kind or
// kind/subresource, with "*/*" for everything and "*/sub" for a subresource of
// any kind. Only kind and subresource matter on the node.
func splitKindSelector(k string) (kind, sub string) {
	parts := strings.Split(k, "/")
	last := strings.SplitN(parts[len(parts)-1], ".", 2) // Pod.ephemeralcontainers
	parts = append(parts[:len(parts)-1], last...)
	isVersion := func(s string) bool { return s == "*" || kyvernoVersion.MatchString(s) }
	switch len(parts) {
	case 1:
		return parts[0], ""
	case 2:
		switch {
		case parts[0] == "*" && parts[1] == "*":
			return "*", "*"
		case parts[0] == "*" && strings.ToLower(parts[1]) == parts[1]:
			return "*", parts[1]
		case isVersion(parts[0]):
			return parts[1], ""
		}
		return parts[0], parts[1]
	case 3:
		if isVersion(parts[0]) {
			return parts[1], parts[2]
		}
		return parts[2], ""
	case 4:
		return parts[2], parts[3]
	}
	return "", "-" // unreadable: selects nothing
}

var kyvernoVersion = regexp.MustCompile(`^v\d((alpha|beta)\d)?$`)

func kyvernoMetadata(raw json.RawMessage) (nm, ns string, err error) {
	if !present(raw) {
		return "", "", errAt("metadata.name", "required")
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", "", errAt("metadata", "expected a mapping")
	}
	n, ok := m["name"].(string)
	if !ok || n == "" {
		return "", "", errAt("metadata.name", "required")
	}
	if v, ok := m["namespace"]; ok {
		s, isStr := v.(string)
		if !isStr {
			return "", "", errAt("metadata.namespace", "expected a string")
		}
		ns = s
	}
	return n, ns, nil
}

func kyvernoAction(path, v string) (Mode, error) {
	switch v {
	case "Enforce", "enforce":
		return Enforce, nil
	case "Audit", "audit":
		return Audit, nil
	}
	return "", errAt(path, "unknown value %q (want Enforce or Audit; the old lowercase forms are accepted too)", v)
}

// compileKyverno turns a ClusterPolicy or Policy document into a Policy, or
// refuses it naming the field criguard cannot honour.
func compileKyverno(data []byte, file string, doc int, kind string) (*Policy, []Warning, error) {
	var d kyvernoDoc
	if err := decodeStrict(data, &d); err != nil {
		return nil, nil, err
	}
	nm, ns, err := kyvernoMetadata(d.Metadata)
	if err != nil {
		return nil, nil, err
	}
	p := &Policy{Name: nm, File: file, Document: doc, Timeout: DefaultTimeout, CacheTTL: DefaultCacheTTL, CacheMax: DefaultCacheMax,
		OnlyNetworkErrorsIncomplete: true, IncompleteBlocksAnyMode: true}
	var warns []Warning
	warn := func(path, format string, args ...any) {
		warns = append(warns, Warning{File: file, Document: doc, Path: path, Message: fmt.Sprintf(format, args...)})
	}
	switch kind {
	case "ClusterPolicy":
		p.Source = SourceClusterPolicy
		if ns != "" {
			return nil, nil, errAt("metadata.namespace", "a ClusterPolicy is cluster-wide and has no namespace (use kind Policy for a namespaced policy)")
		}
	case "Policy":
		p.Source = SourcePolicy
		if ns == "" {
			return nil, nil, errAt("metadata.namespace", "required for a namespaced Policy: it applies only to pods of its own namespace")
		}
		if err := checkPattern(ns); err != nil || strings.ContainsAny(ns, "*?") {
			return nil, nil, errAt("metadata.namespace", "%q is not a namespace name", ns)
		}
		p.Namespace = ns
	}
	s := d.Spec
	// Kyverno's default validationFailureAction is Audit; criguard follows it so
	// that the same policy means the same thing (policy check says so).
	p.Mode = Audit
	if s.ValidationFailureAction != "" {
		if p.Mode, err = kyvernoAction("spec.validationFailureAction", s.ValidationFailureAction); err != nil {
			return nil, nil, err
		}
	}
	for i, o := range s.ValidationFailureActionOverrides {
		op := fmt.Sprintf("spec.validationFailureActionOverrides[%d]", i)
		if present(o.NamespaceSelector) {
			return nil, nil, errAt(op+".namespaceSelector", "namespace label selectors cannot be evaluated on the node (criguard does not see namespace labels); list namespaces instead")
		}
		m, err := kyvernoAction(op+".action", o.Action)
		if err != nil {
			return nil, nil, err
		}
		if err := checkPatterns(op+".namespaces", o.Namespaces); err != nil {
			return nil, nil, err
		}
		// Kyverno 1.18+ (engineresponse.go matchOverride): "Both Namespaces and
		// NamespaceSelector nil means the override applies to all namespaces."
		p.ModeOverrides = append(p.ModeOverrides, ModeOverride{Mode: m, Namespaces: o.Namespaces, AllNamespaces: o.Namespaces == nil})
	}
	switch s.ApplyRules {
	case "", "All":
	case "One":
		return nil, nil, errAt("spec.applyRules", "One (stop after the first matching rule) is not supported: criguard requires every matching rule to pass; use All")
	default:
		return nil, nil, errAt("spec.applyRules", "unknown value %q (want All or One)", s.ApplyRules)
	}
	fp, timeout := s.FailurePolicy, s.WebhookTimeoutSeconds
	fpPath, toPath := "spec.failurePolicy", "spec.webhookTimeoutSeconds"
	if wc := s.WebhookConfiguration; wc != nil {
		if present(wc.MatchConditions) {
			return nil, nil, errAt("spec.webhookConfiguration.matchConditions", "CEL match conditions on the admission request cannot be evaluated on the node")
		}
		// Kyverno's GetFailurePolicy/GetWebhookTimeoutSeconds prefer
		// webhookConfiguration over the deprecated spec-level fields.
		if wc.FailurePolicy != "" {
			fp, fpPath = wc.FailurePolicy, "spec.webhookConfiguration.failurePolicy"
		}
		if wc.TimeoutSeconds != nil {
			timeout, toPath = wc.TimeoutSeconds, "spec.webhookConfiguration.timeoutSeconds"
		}
	}
	if p.FailurePolicy, err = enumOf(fpPath, fp, Fail, Fail, Ignore); err != nil {
		return nil, nil, err
	}
	if timeout != nil {
		if *timeout < 1 || *timeout > int(maxKyvernoTimeout/time.Second) {
			return nil, nil, errAt(toPath, "%d is out of range (1 to 30 seconds, as in Kyverno)", *timeout)
		}
		p.Timeout = time.Duration(*timeout) * time.Second
	}
	if s.Admission != nil && !*s.Admission {
		warn("spec.admission", "admission: false: Kyverno does not apply this policy when pods are admitted, so criguard does not apply it either")
		return nil, warns, nil
	}
	seen := map[string]bool{}
	for i := range s.Rules {
		kr := &s.Rules[i]
		path := fmt.Sprintf("spec.rules[%d]", i)
		if kr.Name == "" {
			return nil, nil, errAt(path+".name", "required")
		}
		if seen[kr.Name] {
			return nil, nil, errAt(path+".name", "duplicate rule name %q", kr.Name)
		}
		seen[kr.Name] = true
		others := present(kr.Mutation) || present(kr.Validation) || present(kr.Generation)
		if len(kr.VerifyImages) == 0 {
			what := "no verifyImages"
			switch {
			case present(kr.Mutation):
				what = "a mutate rule"
			case present(kr.Validation):
				what = "a validate rule"
			case present(kr.Generation):
				what = "a generate rule"
			}
			warn(path, "rule %q is %s: skipped (criguard enforces verifyImages rules only)", kr.Name, what)
			continue
		}
		if others {
			return nil, nil, errAt(path, "a rule with verifyImages must not also mutate, validate or generate")
		}
		rules, rw, err := compileKyvernoRule(p, kr, path)
		if err != nil {
			return nil, nil, err
		}
		for _, r := range rules {
			// A rule with several verifyImages entries is split into rules
			// named name[0], name[1]...: none may take another rule's name, since
			// names identify rules in the verdict cache.
			if r.Name != kr.Name {
				if seen[r.Name] {
					return nil, nil, errAt(path+".name", "rule name %q collides with a verifyImages entry of rule %q (criguard names it %q): rename one", r.Name, kr.Name, r.Name)
				}
				seen[r.Name] = true
			}
		}
		warns = append(warns, rw...)
		p.Rules = append(p.Rules, rules...)
	}
	if len(p.Rules) == 0 {
		warn("spec.rules", "policy %q has no verifyImages rules: nothing to enforce", p.Name)
	}
	return p, warns, nil
}

func compileKyvernoRule(p *Policy, kr *kyvernoRule, path string) ([]*Rule, []Warning, error) {
	var warns []Warning
	warn := func(fpath, format string, args ...any) {
		warns = append(warns, Warning{File: p.File, Document: p.Document, Path: fpath, Message: fmt.Sprintf(format, args...)})
	}
	for _, f := range []struct {
		raw  json.RawMessage
		name string
		why  string
	}{
		{kr.Context, "context", "context variables (ConfigMaps, API calls, variables) are not resolved on the node; put keys inline"},
		{kr.ImageExtractors, "imageExtractors", "custom image extractors are not supported: criguard judges every image a container runs"},
		{kr.Preconditions, "preconditions", "preconditions on the admission request cannot be evaluated on the node"},
		{kr.CELPreconditions, "celPreconditions", "CEL preconditions on the admission request cannot be evaluated on the node"},
	} {
		if present(f.raw) {
			return nil, nil, errAt(path+"."+f.name, "%s", f.why)
		}
	}
	if kr.MatchResources == nil {
		return nil, nil, errAt(path+".match", "required")
	}
	match, applies, err := kyvernoMatchOf(path+".match", kr.MatchResources, p.Source == SourcePolicy, false)
	if err != nil {
		return nil, nil, err
	}
	if !applies {
		warn(path+".match", "rule %q selects no pods (kinds) or no pod creation (operations): skipped", kr.Name)
		return nil, warns, nil
	}
	var exclude NamespaceMatch
	if kr.ExcludeResources != nil {
		if exclude, _, err = kyvernoMatchOf(path+".exclude", kr.ExcludeResources, p.Source == SourcePolicy, true); err != nil {
			return nil, nil, err
		}
	}
	// Kyverno's rule action: the first verifyImages entry that enforces, else
	// the first that sets failureAction, else the policy's.
	var ruleMode Mode
	for j, vi := range kr.VerifyImages {
		if vi.FailureAction == "" {
			continue
		}
		m, err := kyvernoAction(fmt.Sprintf("%s.verifyImages[%d].failureAction", path, j), vi.FailureAction)
		if err != nil {
			return nil, nil, err
		}
		if ruleMode == "" || m == Enforce {
			ruleMode = m
		}
	}
	var out []*Rule
	// As Kyverno's policy validation reads it: the spec's action, then each
	// entry's failureAction, carried on to the entries after it.
	audit := p.Mode == Audit
	for j := range kr.VerifyImages {
		vi := &kr.VerifyImages[j]
		vp := fmt.Sprintf("%s.verifyImages[%d]", path, j)
		if vi.FailureAction != "" {
			audit = strings.EqualFold(vi.FailureAction, "audit")
		}
		nm := kr.Name
		if len(kr.VerifyImages) > 1 {
			nm = fmt.Sprintf("%s[%d]", kr.Name, j)
		}
		r := &Rule{Name: nm, Policy: p, Match: match, Exclude: exclude, Action: Verify, Mode: ruleMode}
		if err := compileVerifyImages(r, vi, vp, audit, warn); err != nil {
			return nil, nil, err
		}
		out = append(out, r)
	}
	return out, warns, nil
}

// kyvernoMatchOf compiles match or exclude into namespace filters. applies is
// false when no filter can select a pod being created.
func kyvernoMatchOf(path string, m *kyvernoMatch, namespaced, excluding bool) (NamespaceMatch, bool, error) {
	if len(m.Any) > 0 && len(m.All) > 0 {
		return NamespaceMatch{}, false, errAt(path, "any and all cannot be used together")
	}
	type item struct {
		path string
		ui   kyvernoUserInfo
		res  *kyvernoResources
	}
	var items []item
	all := false
	switch {
	case len(m.Any) > 0:
		for i, f := range m.Any {
			items = append(items, item{fmt.Sprintf("%s.any[%d]", path, i), f.kyvernoUserInfo, f.Resources})
		}
	case len(m.All) > 0:
		all = true
		for i, f := range m.All {
			items = append(items, item{fmt.Sprintf("%s.all[%d]", path, i), f.kyvernoUserInfo, f.Resources})
		}
	}
	// The legacy top-level resources/userInfo form.
	if m.Resources != nil || len(m.Roles) > 0 || len(m.ClusterRoles) > 0 || present(m.Subjects) {
		if len(items) > 0 {
			return NamespaceMatch{}, false, errAt(path+".resources", "cannot be combined with any/all")
		}
		items = append(items, item{path, m.kyvernoUserInfo, m.Resources})
	}
	if len(items) == 0 {
		if excluding {
			return NamespaceMatch{}, false, nil
		}
		return NamespaceMatch{}, false, errAt(path, "needs resources (any, all or resources)")
	}
	nm := NamespaceMatch{All: all}
	for _, it := range items {
		if len(it.ui.Roles) > 0 || len(it.ui.ClusterRoles) > 0 || present(it.ui.Subjects) {
			f := "roles"
			if len(it.ui.Roles) == 0 {
				f = "clusterRoles"
				if len(it.ui.ClusterRoles) == 0 {
					f = "subjects"
				}
			}
			return NamespaceMatch{}, false, errAt(join(it.path, f), "the requesting user is not known on the node (kubelet creates every container)")
		}
		r := it.res
		if r == nil {
			return NamespaceMatch{}, false, errAt(join(it.path, "resources"), "required")
		}
		rp := join(it.path, "resources")
		switch {
		case r.Name != "" || len(r.Names) > 0:
			return NamespaceMatch{}, false, errAt(rp+".names", "matching by resource name is not supported on the node (pod names are generated by controllers)")
		case len(r.Annotations) > 0:
			return NamespaceMatch{}, false, errAt(rp+".annotations", "matching by annotations is not supported on the node")
		case present(r.Selector):
			return NamespaceMatch{}, false, errAt(rp+".selector", "label selectors are not supported on the node")
		case present(r.NamespaceSelector):
			return NamespaceMatch{}, false, errAt(rp+".namespaceSelector", "namespace label selectors cannot be evaluated on the node (criguard does not see namespace labels); list namespaces instead")
		}
		if namespaced && len(r.Namespaces) > 0 {
			return NamespaceMatch{}, false, errAt(rp+".namespaces", "a namespaced Policy cannot filter namespaces (Kyverno forbids it too)")
		}
		if err := checkPatterns(rp+".namespaces", r.Namespaces); err != nil {
			return NamespaceMatch{}, false, err
		}
		if slices.Contains(r.Kinds, "*") {
			// Kyverno's validateWildcard refuses it for verifyImages rules:
			// "wildcard policy does not support rule type".
			return NamespaceMatch{}, false, errAt(rp+".kinds", "\"*\" (every kind) is refused by Kyverno for verifyImages rules (\"wildcard policy does not support rule type\"); list Pod")
		}
		never := false
		if len(r.Kinds) > 0 {
			pods := false
			for _, k := range r.Kinds {
				if kindCoversPods(k, excluding) {
					pods = true
				}
			}
			never = !pods
		}
		if len(r.Operations) > 0 {
			ops, err := operationsOf(rp, r.Operations)
			if err != nil {
				return NamespaceMatch{}, false, err
			}
			// Containers reach the node from pod creations and from updates
			// (Kyverno verifies images on UPDATE too, and an updated image is
			// a new pull and create). A match on either applies; the node
			// cannot tell which one a container came from, so an exclusion
			// applies only when it covers both.
			if excluding {
				never = !(ops["CREATE"] && ops["UPDATE"])
			} else if !ops["CREATE"] && !ops["UPDATE"] {
				never = true
			}
		}
		nm.Filters = append(nm.Filters, NamespaceFilter{Namespaces: r.Namespaces, Never: never})
	}
	applies := false
	for _, f := range nm.Filters {
		if !f.Never {
			applies = true
		} else if all {
			applies = false
			break
		}
	}
	return nm, applies, nil
}

func operationsOf(rp string, list []string) (map[string]bool, error) {
	ops := map[string]bool{}
	for i, op := range list {
		switch op {
		case "CREATE", "UPDATE", "DELETE", "CONNECT":
			ops[op] = true
		default:
			return nil, errAt(fmt.Sprintf("%s.operations[%d]", rp, i), "unknown operation %q", op)
		}
	}
	return ops, nil
}

func compileVerifyImages(r *Rule, vi *kyvernoVerifyImages, vp string, entryAudit bool, warn func(string, string, ...any)) error {
	switch vi.Type {
	case "", "Cosign":
	default:
		return errAt(vp+".type", "%s verification is not supported: criguard verifies Cosign signatures with public keys", vi.Type)
	}
	for _, f := range []struct {
		set  bool
		name string
		why  string
	}{
		{vi.Key != "", "key", "the deprecated key field verifies through the Rekor transparency log, which criguard cannot reach; use attestors[].entries[].keys.publicKeys with rekor.ignoreTlog: true"},
		{vi.Roots != "" || vi.Subject != "" || vi.Issuer != "" || len(vi.AdditionalExtensions) > 0, "roots/subject/issuer/additionalExtensions", "keyless verification is not supported"},
		{present(vi.Attestations), "attestations", "attestation checks are not supported: criguard verifies image signatures only"},
		{len(vi.Annotations) > 0, "annotations", "signature annotation checks are not supported"},
		{present(vi.Validation), "validate", "validate checks across attestations are not supported"},
	} {
		if f.set {
			return errAt(vp+"."+f.name, "%s", f.why)
		}
	}
	refs := vi.ImageReferences
	if vi.Image != "" {
		refs = append([]string{vi.Image}, refs...)
	}
	if len(refs) == 0 {
		return errAt(vp+".imageReferences", "required: at least one image pattern")
	}
	images, err := imagePatterns(vp+".imageReferences", vi.ImageReferences)
	if err != nil {
		return err
	}
	if vi.Image != "" {
		img, err := imagePatterns(vp+".image", []string{vi.Image})
		if err != nil {
			return err
		}
		images = append(img, images...)
	}
	if r.ExcludeImages, err = imagePatterns(vp+".skipImageReferences", vi.SkipImageReferences); err != nil {
		return err
	}
	r.Images = images
	if vi.Repository != "" {
		if err := checkRepository(vp+".repository", vi.Repository); err != nil {
			return err
		}
	}
	// Kyverno defaults mutateDigest, verifyDigest, required and useCache to true.
	mutate := vi.MutateDigest == nil || *vi.MutateDigest
	verifyDigest := vi.VerifyDigest == nil || *vi.VerifyDigest
	if mutate && entryAudit {
		// Kyverno's ImageVerification.Validate: "mutateDigest must be set to
		// false for 'Audit' failure action" (mutateDigest defaults to true).
		return errAt(vp+".mutateDigest", "must be false under Audit (this entry's failureAction, else spec.validationFailureAction, whose default is Audit): Kyverno refuses the policy otherwise (\"mutateDigest must be set to false for 'Audit' failure action\")")
	}
	r.RequireDigestReference = verifyDigest && !mutate
	r.NoCache = vi.UseCache != nil && !*vi.UseCache
	if rc := vi.ImageRegistryCredentials; rc != nil {
		if len(rc.Secrets) > 0 || len(rc.Providers) > 0 {
			warn(vp+".imageRegistryCredentials", "criguard uses the credentials kubelet sends (else the node's docker config), not these; trust is unchanged")
		}
		if rc.AllowInsecureRegistry != nil && *rc.AllowInsecureRegistry {
			warn(vp+".imageRegistryCredentials.allowInsecureRegistry", "ignored: criguard's verifier decides how registries are reached")
		}
	}
	if len(vi.Attestors) == 0 {
		// Kyverno verifies nothing for such an entry and then fails every
		// image it matches as unverified (validate_image.go: "unverified image
		// %s"); the rule is kept and fails them too (see judgeCheap).
		warn(vp+".attestors", "no attestors: every image this entry matches fails verification, as in Kyverno")
		return nil
	}
	for k, as := range vi.Attestors {
		ap := fmt.Sprintf("%s.attestors[%d]", vp, k)
		set, err := kyvernoAttestorSetOf(r, as, ap, vi.Repository)
		if err != nil {
			return err
		}
		r.Attestors = append(r.Attestors, set)
	}
	return nil
}

func kyvernoAttestorSetOf(r *Rule, as kyvernoAttestorSet, ap, repo string) (AttestorSet, error) {
	if len(as.Entries) == 0 {
		return AttestorSet{}, errAt(ap+".entries", "required: at least one entry")
	}
	set := AttestorSet{Repository: repo}
	entryRepo := ""
	for e, en := range as.Entries {
		ep := fmt.Sprintf("%s.entries[%d]", ap, e)
		switch {
		case present(en.Certificates):
			return AttestorSet{}, errAt(ep+".certificates", "certificate attestors are not supported: use keys.publicKeys")
		case present(en.Keyless):
			return AttestorSet{}, errAt(ep+".keyless", "keyless verification (Fulcio certificates, Rekor) is not supported")
		case present(en.Attestor):
			return AttestorSet{}, errAt(ep+".attestor", "nested attestor sets are not supported: list the keys in entries")
		case len(en.Annotations) > 0:
			return AttestorSet{}, errAt(ep+".annotations", "signature annotation checks are not supported")
		case en.Keys == nil:
			return AttestorSet{}, errAt(ep+".keys", "required")
		}
		if en.Repository != "" {
			if err := checkRepository(ep+".repository", en.Repository); err != nil {
				return AttestorSet{}, err
			}
			if e > 0 && en.Repository != entryRepo {
				return AttestorSet{}, errAt(ep+".repository", "entries of one attestor set must use the same signature repository")
			}
			entryRepo = en.Repository
		} else if entryRepo != "" {
			return AttestorSet{}, errAt(ep+".repository", "entries of one attestor set must use the same signature repository")
		}
		k := en.Keys
		kp := ep + ".keys"
		switch {
		case k.KMS != "":
			return AttestorSet{}, errAt(kp+".kms", "KMS keys are not supported: put the PEM public key in publicKeys")
		case present(k.Secret):
			return AttestorSet{}, errAt(kp+".secret", "Secret references are not resolved on the node: put the PEM public key in publicKeys")
		case k.PublicKeys == "":
			return AttestorSet{}, errAt(kp+".publicKeys", "required")
		case strings.HasPrefix(strings.TrimSpace(k.PublicKeys), "k8s://"):
			return AttestorSet{}, errAt(kp+".publicKeys", "Secret references (k8s://) are not resolved on the node: put the PEM public key here")
		case strings.Contains(k.PublicKeys, "{{"):
			return AttestorSet{}, errAt(kp+".publicKeys", "variables are not resolved on the node: put the PEM public key here")
		case strings.Contains(k.PublicKeys, "://"):
			return AttestorSet{}, errAt(kp+".publicKeys", "key URIs (KMS, k8s://) are not supported: put the PEM public key here")
		}
		// Kyverno verifies key signatures against the Rekor transparency log
		// unless rekor.ignoreTlog is true; criguard has no log access, so only
		// the offline form is accepted (see docs/policy.md).
		if k.Rekor == nil || k.Rekor.IgnoreTlog == nil || !*k.Rekor.IgnoreTlog {
			return AttestorSet{}, errAt(kp+".rekor.ignoreTlog", "must be true: without it Kyverno also requires a Rekor transparency log entry, which criguard cannot check on the node; accepting the signature without it would be weaker than the policy says")
		}
		if k.Rekor.RekorPubKey != "" {
			return AttestorSet{}, errAt(kp+".rekor.pubkey", "a Rekor key has no use with ignoreTlog: true; remove it")
		}
		if c := k.CTLog; c != nil {
			if c.TSACertChain != "" {
				return AttestorSet{}, errAt(kp+".ctlog.tsaCertChain", "RFC 3161 timestamp verification is not supported")
			}
			if c.CTLogPubKey != "" {
				return AttestorSet{}, errAt(kp+".ctlog.pubkey", "certificate transparency checks are not supported")
			}
		}
		alg := en.SignatureAlgorithm
		algPath := ep + ".signatureAlgorithm"
		if alg == "" {
			alg, algPath = k.SignatureAlgorithm, kp+".signatureAlgorithm"
		} else if k.SignatureAlgorithm != "" && k.SignatureAlgorithm != alg {
			return AttestorSet{}, errAt(kp+".signatureAlgorithm", "conflicts with %s (%s)", algPath, alg)
		}
		pems, err := splitPEM(k.PublicKeys)
		if err != nil {
			return AttestorSet{}, errAt(kp+".publicKeys", "%v", err)
		}
		for i, blk := range pems {
			nm := fmt.Sprintf("%s/%s/%s", r.Policy.Name, r.Name, strings.TrimPrefix(ep, "spec."))
			if len(pems) > 1 {
				nm = fmt.Sprintf("%s#%d", nm, i)
			}
			key, err := keys.Parse(nm, blk, alg)
			if err != nil {
				p := kp + ".publicKeys"
				if strings.Contains(err.Error(), "algorithm") {
					p = algPath
				}
				return AttestorSet{}, errAt(p, "%v", err)
			}
			set.Keys = append(set.Keys, key)
		}
	}
	if entryRepo != "" {
		set.Repository = entryRepo
	}
	// Several keys in one publicKeys count as separate entries (Kyverno).
	set.Count = len(set.Keys)
	if as.Count != nil && *as.Count != 0 {
		// Kyverno's validateAttestorSet: "Count cannot exceed length of
		// entries" (entries, not keys: several PEMs in one entry count once).
		if *as.Count < 0 || *as.Count > len(as.Entries) {
			return AttestorSet{}, errAt(ap+".count", "%d is out of range: between 1 and the number of entries (%d); Kyverno refuses it too (\"Count cannot exceed length of entries\")", *as.Count, len(as.Entries))
		}
		set.Count = *as.Count
	}
	return set, nil
}

// splitPEM splits a publicKeys string holding one or more PEM blocks.
func splitPEM(s string) ([][]byte, error) {
	rest := []byte(strings.TrimSpace(s))
	var out [][]byte
	for len(bytes.TrimSpace(rest)) > 0 {
		blk, r := pem.Decode(rest)
		if blk == nil {
			return nil, fmt.Errorf("not a PEM public key (or trailing text after the last PEM block)")
		}
		out = append(out, pem.EncodeToMemory(blk))
		rest = r
		if len(out) > 64 {
			return nil, fmt.Errorf("more than 64 keys")
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty")
	}
	return out, nil
}

func checkRepository(path, repo string) error {
	if _, err := name.NewRepository(repo); err != nil {
		return errAt(path, "%q is not a repository: %v", repo, err)
	}
	return nil
}
