package policy

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/criguard/criguard/verifier/attest"
	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/keys"
	"github.com/criguard/criguard/verifier/sigverify"
	"github.com/criguard/criguard/verifier/trust"
	"github.com/criguard/criguard/verifier/wildcard"
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
	if excluding && !wildcard.Match(sub, "") {
		return false
	}
	if !excluding && !wildcard.Match(sub, "") && !wildcard.Match(sub, "ephemeralcontainers") {
		return false // Pod/status, Pod/exec...: no container is created
	}
	for pk := range podKinds {
		if pk != "Pod" && excluding {
			continue
		}
		if wildcard.Match(kind, pk) {
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
// refuses it naming every field criguard cannot honour.
func compileKyverno(data []byte, file string, doc int, kind string) (*Policy, []Warning, error) {
	var d kyvernoDoc
	var errs errList
	if err := decodeStrict(data, &d, &errs); err != nil {
		return nil, nil, err
	}
	nm, ns, err := kyvernoMetadata(d.Metadata)
	if err != nil {
		return nil, nil, errors.Join(append(errs, err)...)
	}
	p := &Policy{Name: nm, File: file, Document: doc, Timeout: DefaultTimeout, CacheTTL: DefaultCacheTTL, CacheMax: DefaultCacheMax,
		OnlyNetworkErrorsIncomplete: true, IncompleteBlocksAnyMode: true}
	w := &kyvernoWarnings{file: file, doc: doc}
	errs.add(kyvernoKind(p, kind, ns))
	compileKyvernoSpec(p, &d.Spec, &errs)
	if s := d.Spec; s.Admission != nil && !*s.Admission {
		w.add("spec.admission", "admission: false: Kyverno does not apply this policy when pods are admitted, so criguard does not apply it either")
		return nil, w.list, errs.err()
	}
	compileKyvernoRules(p, d.Spec.Rules, w, &errs)
	if err := errs.err(); err != nil {
		return nil, nil, err
	}
	if len(p.Rules) == 0 {
		w.add("spec.rules", "policy %q has no verifyImages rules: nothing to enforce", p.Name)
	}
	return p, w.list, nil
}

type kyvernoWarnings struct {
	file string
	doc  int
	list []Warning
}

func (w *kyvernoWarnings) add(path, format string, args ...any) {
	w.list = append(w.list, Warning{File: w.file, Document: w.doc, Path: path, Message: fmt.Sprintf(format, args...)})
}

func kyvernoKind(p *Policy, kind, ns string) error {
	switch kind {
	case "ClusterPolicy":
		p.Source = SourceClusterPolicy
		if ns != "" {
			return errAt("metadata.namespace", "a ClusterPolicy is cluster-wide and has no namespace (use kind Policy for a namespaced policy)")
		}
	case "Policy":
		p.Source = SourcePolicy
		if ns == "" {
			return errAt("metadata.namespace", "required for a namespaced Policy: it applies only to pods of its own namespace")
		}
		if err := checkPattern(ns); err != nil || strings.ContainsAny(ns, "*?") {
			return errAt("metadata.namespace", "%q is not a namespace name", ns)
		}
		p.Namespace = ns
	}
	return nil
}

// compileKyvernoSpec reads the policy-wide settings.
func compileKyvernoSpec(p *Policy, s *kyvernoSpec, errs *errList) {
	// Kyverno's default validationFailureAction is Audit; criguard follows it so
	// that the same policy means the same thing (policy check says so).
	p.Mode = Audit
	if s.ValidationFailureAction != "" {
		m, err := kyvernoAction("spec.validationFailureAction", s.ValidationFailureAction)
		if !errs.add(err) {
			p.Mode = m
		}
	}
	for i, o := range s.ValidationFailureActionOverrides {
		op := fmt.Sprintf("spec.validationFailureActionOverrides[%d]", i)
		if present(o.NamespaceSelector) {
			errs.add(errAt(op+".namespaceSelector", "namespace label selectors cannot be evaluated on the node (criguard does not see namespace labels); list namespaces instead"))
		}
		m, err := kyvernoAction(op+".action", o.Action)
		errs.add(err)
		errs.add(checkPatterns(op+".namespaces", o.Namespaces))
		// Kyverno 1.18+ (engineresponse.go matchOverride): "Both Namespaces and
		// NamespaceSelector nil means the override applies to all namespaces."
		p.ModeOverrides = append(p.ModeOverrides, ModeOverride{Mode: m, Namespaces: o.Namespaces, AllNamespaces: o.Namespaces == nil})
	}
	switch s.ApplyRules {
	case "", "All":
	case "One":
		errs.add(errAt("spec.applyRules", "One (stop after the first matching rule) is not supported: criguard requires every matching rule to pass; use All"))
	default:
		errs.add(errAt("spec.applyRules", "unknown value %q (want All or One)", s.ApplyRules))
	}
	compileKyvernoWebhook(p, s, errs)
}

// compileKyvernoWebhook reads failurePolicy and the timeout; Kyverno's
// GetFailurePolicy/GetWebhookTimeoutSeconds prefer webhookConfiguration over
// the deprecated spec-level fields.
func compileKyvernoWebhook(p *Policy, s *kyvernoSpec, errs *errList) {
	fp, timeout := s.FailurePolicy, s.WebhookTimeoutSeconds
	fpPath, toPath := "spec.failurePolicy", "spec.webhookTimeoutSeconds"
	if wc := s.WebhookConfiguration; wc != nil {
		if present(wc.MatchConditions) {
			errs.add(errAt("spec.webhookConfiguration.matchConditions", "CEL match conditions on the admission request cannot be evaluated on the node"))
		}
		if wc.FailurePolicy != "" {
			fp, fpPath = wc.FailurePolicy, "spec.webhookConfiguration.failurePolicy"
		}
		if wc.TimeoutSeconds != nil {
			timeout, toPath = wc.TimeoutSeconds, "spec.webhookConfiguration.timeoutSeconds"
		}
	}
	var err error
	p.FailurePolicy, err = enumOf(fpPath, fp, Fail, Fail, Ignore)
	errs.add(err)
	if timeout != nil {
		if *timeout < 1 || *timeout > int(maxKyvernoTimeout/time.Second) {
			errs.add(errAt(toPath, "%d is out of range (1 to 30 seconds, as in Kyverno)", *timeout))
		} else {
			p.Timeout = time.Duration(*timeout) * time.Second
		}
	}
}

// compileKyvernoRules compiles the verifyImages rules, skipping (with a
// warning) rules of other types.
func compileKyvernoRules(p *Policy, krs []kyvernoRule, w *kyvernoWarnings, errs *errList) {
	seen := map[string]bool{}
	for i := range krs {
		kr := &krs[i]
		path := fmt.Sprintf("spec.rules[%d]", i)
		switch {
		case kr.Name == "":
			errs.add(errAt(path+".name", "required"))
		case seen[kr.Name]:
			errs.add(errAt(path+".name", "duplicate rule name %q", kr.Name))
			continue
		}
		seen[kr.Name] = true
		if len(kr.VerifyImages) == 0 {
			w.add(path, "rule %q is %s: skipped (criguard enforces verifyImages rules only)", kr.Name, otherRuleType(kr))
			continue
		}
		if present(kr.Mutation) || present(kr.Validation) || present(kr.Generation) {
			errs.add(errAt(path, "a rule with verifyImages must not also mutate, validate or generate"))
		}
		rules, err := compileKyvernoRule(p, kr, path, w)
		if errs.add(err) {
			continue
		}
		for _, r := range rules {
			// A rule with several verifyImages entries is split into rules
			// named name[0], name[1]...: none may take another rule's name, since
			// names identify rules in the verdict cache.
			if r.Name != kr.Name {
				if seen[r.Name] {
					errs.add(errAt(path+".name", "rule name %q collides with a verifyImages entry of rule %q (criguard names it %q): rename one", r.Name, kr.Name, r.Name))
				}
				seen[r.Name] = true
			}
		}
		p.Rules = append(p.Rules, rules...)
	}
}

func otherRuleType(kr *kyvernoRule) string {
	switch {
	case present(kr.Mutation):
		return "a mutate rule"
	case present(kr.Validation):
		return "a validate rule"
	case present(kr.Generation):
		return "a generate rule"
	}
	return "no verifyImages"
}

func compileKyvernoRule(p *Policy, kr *kyvernoRule, path string, w *kyvernoWarnings) ([]*Rule, error) {
	var errs errList
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
			errs.add(errAt(path+"."+f.name, "%s", f.why))
		}
	}
	if kr.MatchResources == nil {
		errs.add(errAt(path+".match", "required"))
		return nil, errs.err()
	}
	match, applies, err := kyvernoMatchOf(path+".match", kr.MatchResources, p.Source == SourcePolicy, false)
	errs.add(err)
	var exclude NamespaceMatch
	if kr.ExcludeResources != nil {
		exclude, _, err = kyvernoMatchOf(path+".exclude", kr.ExcludeResources, p.Source == SourcePolicy, true)
		errs.add(err)
	}
	ruleMode := kyvernoRuleMode(kr, path, &errs)
	var out []*Rule
	// As Kyverno's policy validation reads it: the spec's action, then each
	// entry's failureAction, carried on to the entries after it.
	audit := p.Mode == Audit
	for j := range kr.VerifyImages {
		vi := &kr.VerifyImages[j]
		if vi.FailureAction != "" {
			audit = strings.EqualFold(vi.FailureAction, "audit")
		}
		nm := kr.Name
		if len(kr.VerifyImages) > 1 {
			nm = fmt.Sprintf("%s[%d]", kr.Name, j)
		}
		r := &Rule{Name: nm, Policy: p, Match: match, Exclude: exclude, Action: Verify, Mode: ruleMode}
		if !errs.add(compileVerifyImages(r, vi, fmt.Sprintf("%s.verifyImages[%d]", path, j), audit, w.add)) {
			out = append(out, r)
		}
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	if !applies {
		w.add(path+".match", "rule %q selects no pods (kinds) or no pod creation or update (operations): skipped", kr.Name)
		return nil, nil
	}
	return out, nil
}

// kyvernoRuleMode is Kyverno's rule action: the first verifyImages entry that
// enforces, else the first that sets failureAction, else the policy's ("").
func kyvernoRuleMode(kr *kyvernoRule, path string, errs *errList) Mode {
	var ruleMode Mode
	for j, vi := range kr.VerifyImages {
		if vi.FailureAction == "" {
			continue
		}
		m, err := kyvernoAction(fmt.Sprintf("%s.verifyImages[%d].failureAction", path, j), vi.FailureAction)
		if errs.add(err) {
			continue
		}
		if ruleMode == "" || m == Enforce {
			ruleMode = m
		}
	}
	return ruleMode
}

// kyvernoMatchOf compiles match or exclude into namespace filters. applies is
// false when no filter can select a pod being created.
func kyvernoMatchOf(path string, m *kyvernoMatch, namespaced, excluding bool) (NamespaceMatch, bool, error) {
	items, all, err := kyvernoMatchItems(path, m)
	if err != nil {
		return NamespaceMatch{}, false, err
	}
	if len(items) == 0 {
		if excluding {
			return NamespaceMatch{}, false, nil
		}
		return NamespaceMatch{}, false, errAt(path, "needs resources (any, all or resources)")
	}
	nm := NamespaceMatch{All: all}
	var errs errList
	for _, it := range items {
		f, err := kyvernoFilterOf(it, namespaced, excluding)
		if !errs.add(err) {
			nm.Filters = append(nm.Filters, f)
		}
	}
	if err := errs.err(); err != nil {
		return NamespaceMatch{}, false, err
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

// matchItem is one filter of a match or exclude block, with its path.
type matchItem struct {
	path string
	ui   kyvernoUserInfo
	res  *kyvernoResources
}

// kyvernoMatchItems lists the filters of any, all, or the legacy top-level
// resources/userInfo form; all reports whether every filter must match.
func kyvernoMatchItems(path string, m *kyvernoMatch) ([]matchItem, bool, error) {
	if len(m.Any) > 0 && len(m.All) > 0 {
		return nil, false, errAt(path, "any and all cannot be used together")
	}
	var items []matchItem
	all := len(m.All) > 0
	for i, f := range m.Any {
		items = append(items, matchItem{fmt.Sprintf("%s.any[%d]", path, i), f.kyvernoUserInfo, f.Resources})
	}
	for i, f := range m.All {
		items = append(items, matchItem{fmt.Sprintf("%s.all[%d]", path, i), f.kyvernoUserInfo, f.Resources})
	}
	if m.Resources != nil || len(m.Roles) > 0 || len(m.ClusterRoles) > 0 || present(m.Subjects) {
		if len(items) > 0 {
			return nil, false, errAt(path+".resources", "cannot be combined with any/all")
		}
		items = append(items, matchItem{path, m.kyvernoUserInfo, m.Resources})
	}
	return items, all, nil
}

// kyvernoFilterOf compiles one filter into the namespaces it selects, or Never
// when it selects no container created on the node.
func kyvernoFilterOf(it matchItem, namespaced, excluding bool) (NamespaceFilter, error) {
	if len(it.ui.Roles) > 0 || len(it.ui.ClusterRoles) > 0 || present(it.ui.Subjects) {
		f := "roles"
		if len(it.ui.Roles) == 0 {
			f = "clusterRoles"
			if len(it.ui.ClusterRoles) == 0 {
				f = "subjects"
			}
		}
		return NamespaceFilter{}, errAt(join(it.path, f), "the requesting user is not known on the node (kubelet creates every container)")
	}
	r := it.res
	rp := join(it.path, "resources")
	if r == nil {
		return NamespaceFilter{}, errAt(rp, "required")
	}
	var errs errList
	switch {
	case r.Name != "" || len(r.Names) > 0:
		errs.add(errAt(rp+".names", "matching by resource name is not supported on the node (pod names are generated by controllers)"))
	case len(r.Annotations) > 0:
		errs.add(errAt(rp+".annotations", "matching by annotations is not supported on the node"))
	case present(r.Selector):
		errs.add(errAt(rp+".selector", "label selectors are not supported on the node"))
	case present(r.NamespaceSelector):
		errs.add(errAt(rp+".namespaceSelector", "namespace label selectors cannot be evaluated on the node (criguard does not see namespace labels); list namespaces instead"))
	}
	if namespaced && len(r.Namespaces) > 0 {
		errs.add(errAt(rp+".namespaces", "a namespaced Policy cannot filter namespaces (Kyverno forbids it too)"))
	}
	errs.add(checkPatterns(rp+".namespaces", r.Namespaces))
	never, err := kyvernoSelectsNothing(rp, r, excluding)
	errs.add(err)
	return NamespaceFilter{Namespaces: r.Namespaces, Never: never}, errs.err()
}

// kyvernoSelectsNothing reports a filter whose kinds or operations select no
// container created on the node.
func kyvernoSelectsNothing(rp string, r *kyvernoResources, excluding bool) (bool, error) {
	if slices.Contains(r.Kinds, "*") {
		// Kyverno's validateWildcard refuses it for verifyImages rules:
		// "wildcard policy does not support rule type".
		return false, errAt(rp+".kinds", "\"*\" (every kind) is refused by Kyverno for verifyImages rules (\"wildcard policy does not support rule type\"); list Pod")
	}
	never := false
	if len(r.Kinds) > 0 {
		never = !slices.ContainsFunc(r.Kinds, func(k string) bool { return kindCoversPods(k, excluding) })
	}
	if len(r.Operations) > 0 {
		ops, err := operationsOf(rp, r.Operations)
		if err != nil {
			return false, err
		}
		// Containers reach the node from pod creations and from updates
		// (Kyverno verifies images on UPDATE too, and an updated image is a
		// new pull and create). A match on either applies; the node cannot
		// tell which one a container came from, so an exclusion applies only
		// when it covers both.
		if excluding {
			never = never || !(ops["CREATE"] && ops["UPDATE"])
		} else if !ops["CREATE"] && !ops["UPDATE"] {
			never = true
		}
	}
	return never, nil
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
	var errs errList
	switch vi.Type {
	case "", "Cosign":
	default:
		errs.add(errAt(vp+".type", "%s verification is not supported: criguard verifies Cosign signatures and attestations", vi.Type))
	}
	for _, f := range []struct {
		set  bool
		name string
		why  string
	}{
		{len(vi.Annotations) > 0, "annotations", "signature annotation checks are not supported"},
		{present(vi.Validation), "validate", "validate checks across attestations are not supported"},
	} {
		if f.set {
			errs.add(errAt(vp+"."+f.name, "%s", f.why))
		}
	}
	errs.add(kyvernoImages(r, vi, vp))
	if vi.Repository != "" {
		errs.add(checkRepository(vp+".repository", vi.Repository))
	}
	// Kyverno defaults mutateDigest, verifyDigest, required and useCache to true.
	mutate := vi.MutateDigest == nil || *vi.MutateDigest
	verifyDigest := vi.VerifyDigest == nil || *vi.VerifyDigest
	if mutate && entryAudit {
		// Kyverno's ImageVerification.Validate: "mutateDigest must be set to
		// false for 'Audit' failure action" (mutateDigest defaults to true).
		errs.add(errAt(vp+".mutateDigest", "must be false under Audit (this entry's failureAction, else spec.validationFailureAction, whose default is Audit): Kyverno refuses the policy otherwise (\"mutateDigest must be set to false for 'Audit' failure action\")"))
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
	attestors, err := kyvernoDeprecatedSigner(vi, vp)
	errs.add(err)
	if len(attestors) == 0 && len(vi.Attestations) == 0 {
		// Kyverno verifies nothing for such an entry and then fails every
		// image it matches as unverified (validate_image.go: "unverified image
		// %s"); the rule is kept and fails them too (see judgeCheap).
		warn(vp+".attestors", "no attestors: every image this entry matches fails verification, as in Kyverno")
	}
	for k, as := range attestors {
		set, err := kyvernoAttestorSetOf(r, as, fmt.Sprintf("%s.attestors[%d]", vp, k), vi.Repository)
		if !errs.add(err) {
			r.Attestors = append(r.Attestors, set)
		}
	}
	for k, ka := range vi.Attestations {
		at, err := kyvernoAttestationOf(r, ka, fmt.Sprintf("%s.attestations[%d]", vp, k), vi.Repository)
		if !errs.add(err) {
			r.Attestations = append(r.Attestations, at)
		}
	}
	return errs.err()
}

// kyvernoDeprecatedSigner returns the entry's attestors, or the one attestor
// set the deprecated key/subject/issuer/roots fields stand for, as Kyverno
// converts them.
func kyvernoDeprecatedSigner(vi *kyvernoVerifyImages, vp string) ([]kyvernoAttestorSet, error) {
	if vi.Key == "" && vi.Roots == "" && vi.Subject == "" && vi.Issuer == "" && len(vi.AdditionalExtensions) == 0 {
		return vi.Attestors, nil
	}
	if len(vi.Attestors) > 0 {
		return vi.Attestors, errAt(vp+".key", "the deprecated key/subject/issuer/roots fields cannot be combined with attestors")
	}
	e := kyvernoAttestor{}
	if vi.Key != "" {
		e.Keys = &kyvernoStaticKey{PublicKeys: vi.Key}
	} else {
		e.Keyless = &kyvernoKeyless{Subject: vi.Subject, Issuer: vi.Issuer, Roots: vi.Roots, AdditionalExtensions: vi.AdditionalExtensions}
	}
	return []kyvernoAttestorSet{{Entries: []kyvernoAttestor{e}}}, nil
}

// kyvernoImages reads image, imageReferences and skipImageReferences.
func kyvernoImages(r *Rule, vi *kyvernoVerifyImages, vp string) error {
	if vi.Image == "" && len(vi.ImageReferences) == 0 {
		return errAt(vp+".imageReferences", "required: at least one image pattern")
	}
	var errs errList
	images, err := imagePatterns(vp+".imageReferences", vi.ImageReferences)
	errs.add(err)
	if vi.Image != "" {
		img, err := imagePatterns(vp+".image", []string{vi.Image})
		errs.add(err)
		images = append(img, images...)
	}
	r.Images = images
	r.ExcludeImages, err = imagePatterns(vp+".skipImageReferences", vi.SkipImageReferences)
	errs.add(err)
	return errs.err()
}

// kyvernoAttestationOf compiles one attestations[] entry: its predicate type
// (type or predicateType: a URI, or one of cosign's --type names), its
// attestor sets and its conditions.
func kyvernoAttestationOf(r *Rule, ka kyvernoAttestation, ap, repo string) (Attestation, error) {
	typ, tp := ka.PredicateType, ap+".predicateType"
	switch {
	case typ == "" && ka.Type == "":
		return Attestation{}, errAt(tp, "required (or type): the predicate type of the attestations to check")
	case typ == "":
		typ, tp = ka.Type, ap+".type"
	case ka.Type != "" && ka.Type != typ:
		return Attestation{}, errAt(ap+".type", "conflicts with predicateType %q", typ)
	}
	uri, err := attest.PredicateType(typ)
	if err != nil {
		return Attestation{}, errAt(tp, "%v", err)
	}
	at := Attestation{Name: ka.Name, PredicateType: uri}
	if at.Name == "" {
		at.Name = uri
	}
	if len(ka.Conditions) > 0 {
		if at.Conditions, err = attest.Compile(ka.Conditions); err != nil {
			return Attestation{}, errAt(ap+".conditions", "%v", err)
		}
	}
	if len(ka.Attestors) == 0 {
		// Kyverno then checks no signer; criguard never trusts an
		// unsigned statement.
		return Attestation{}, errAt(ap+".attestors", "required: criguard judges only attestations signed by a trusted key or keyless identity")
	}
	for k, as := range ka.Attestors {
		set, err := kyvernoAttestorSetOf(r, as, fmt.Sprintf("%s.attestors[%d]", ap, k), repo)
		if err != nil {
			return Attestation{}, err
		}
		at.Sets = append(at.Sets, set)
	}
	return at, nil
}

func kyvernoAttestorSetOf(r *Rule, as kyvernoAttestorSet, ap, repo string) (AttestorSet, error) {
	if len(as.Entries) == 0 {
		return AttestorSet{}, errAt(ap+".entries", "required: at least one entry")
	}
	set := AttestorSet{Repository: repo}
	entryRepo := ""
	var errs errList
	for e, en := range as.Entries {
		ep := fmt.Sprintf("%s.entries[%d]", ap, e)
		if en.Repository != "" {
			if err := checkRepository(ep+".repository", en.Repository); err != nil {
				errs.add(err)
				continue
			}
			if e > 0 && en.Repository != entryRepo {
				errs.add(errAt(ep+".repository", "entries of one attestor set must use the same signature repository"))
				continue
			}
			entryRepo = en.Repository
		} else if entryRepo != "" {
			errs.add(errAt(ep+".repository", "entries of one attestor set must use the same signature repository"))
			continue
		}
		got, err := kyvernoEntryOf(r, en, ep)
		if !errs.add(err) {
			set.Attestors = append(set.Attestors, got...)
		}
	}
	if entryRepo != "" {
		set.Repository = entryRepo
	}
	// Several keys in one publicKeys count as separate entries (Kyverno).
	set.Count = len(set.Attestors)
	if as.Count != nil && *as.Count != 0 {
		// Kyverno's validateAttestorSet: "Count cannot exceed length of
		// entries" (entries, not keys: several PEMs in one entry count once).
		if *as.Count < 0 || *as.Count > len(as.Entries) {
			errs.add(errAt(ap+".count", "%d is out of range: between 1 and the number of entries (%d); Kyverno refuses it too (\"Count cannot exceed length of entries\")", *as.Count, len(as.Entries)))
		}
		set.Count = *as.Count
	}
	return set, errs.err()
}

// kyvernoEntryOf compiles one attestor entry: keys, keyless or certificates.
func kyvernoEntryOf(r *Rule, en kyvernoAttestor, ep string) ([]cosign.Attestor, error) {
	kinds := 0
	for _, set := range []bool{en.Keys != nil, en.Keyless != nil, en.Certificates != nil, present(en.Attestor)} {
		if set {
			kinds++
		}
	}
	switch {
	case present(en.Attestor):
		return nil, errAt(ep+".attestor", "nested attestor sets are not supported: list the attestors in entries")
	case len(en.Annotations) > 0:
		return nil, errAt(ep+".annotations", "signature annotation checks are not supported")
	case kinds == 0:
		return nil, errAt(ep, "needs keys, keyless or certificates")
	case kinds > 1:
		return nil, errAt(ep, "set one of keys, keyless or certificates")
	case en.Keyless != nil:
		if en.SignatureAlgorithm != "" {
			return nil, errAt(ep+".signatureAlgorithm", "applies to keys only")
		}
		a, err := kyvernoKeylessOf(en.Keyless, ep+".keyless")
		if err != nil {
			return nil, err
		}
		return []cosign.Attestor{a}, nil
	case en.Certificates != nil:
		return nil, errAt(ep+".certificates", "certificate attestors (a fixed signing certificate and chain) are not supported yet: use keys.publicKeys with the certificate's public key, or keyless with roots")
	}
	return kyvernoKeysOf(r, en, ep)
}

// kyvernoKeysOf compiles keys.publicKeys (one attestor per PEM key). As in
// Kyverno, a transparency-log entry is required unless rekor.ignoreTlog.
func kyvernoKeysOf(r *Rule, en kyvernoAttestor, ep string) ([]cosign.Attestor, error) {
	k := en.Keys
	kp := ep + ".keys"
	switch {
	case k.KMS != "":
		return nil, errAt(kp+".kms", "KMS keys are not supported: put the PEM public key in publicKeys")
	case present(k.Secret):
		return nil, errAt(kp+".secret", "Secret references are not resolved on the node: put the PEM public key in publicKeys")
	case k.PublicKeys == "":
		return nil, errAt(kp+".publicKeys", "required")
	case strings.HasPrefix(strings.TrimSpace(k.PublicKeys), "k8s://"):
		return nil, errAt(kp+".publicKeys", "Secret references (k8s://) are not resolved on the node: put the PEM public key here")
	case strings.Contains(k.PublicKeys, "{{"):
		return nil, errAt(kp+".publicKeys", "variables are not resolved on the node: put the PEM public key here")
	case strings.Contains(k.PublicKeys, "://"):
		return nil, errAt(kp+".publicKeys", "key URIs (KMS, k8s://) are not supported: put the PEM public key here")
	}
	tmpl, err := kyvernoLogs(k.Rekor, k.CTLog, kp)
	if err != nil {
		return nil, err
	}
	alg := en.SignatureAlgorithm
	algPath := ep + ".signatureAlgorithm"
	if alg == "" {
		alg, algPath = k.SignatureAlgorithm, kp+".signatureAlgorithm"
	} else if k.SignatureAlgorithm != "" && k.SignatureAlgorithm != alg {
		return nil, errAt(kp+".signatureAlgorithm", "conflicts with %s (%s)", algPath, alg)
	}
	pems, err := splitPEM(k.PublicKeys)
	if err != nil {
		return nil, errAt(kp+".publicKeys", "%v", err)
	}
	var out []cosign.Attestor
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
			return nil, errAt(p, "%v", err)
		}
		a := tmpl
		a.Key = key
		out = append(out, a)
	}
	return out, nil
}

// kyvernoKeylessOf compiles a keyless attestor: the certificate's identity
// (subject or subjectRegExp, issuer or issuerRegExp, GitHub workflow
// extensions), its roots, and the logs.
func kyvernoKeylessOf(kl *kyvernoKeyless, kp string) (cosign.Attestor, error) {
	a, err := kyvernoLogs(kl.Rekor, kl.CTLog, kp)
	if err != nil {
		return a, err
	}
	id := sigverify.Identity{Subject: kl.Subject, SubjectRegExp: kl.SubjectRegExp, Issuer: kl.Issuer, IssuerRegExp: kl.IssuerRegExp}
	if strings.ContainsAny(id.Subject, "*?") {
		// Kyverno's documented keyless subjects use wildcards
		// ("*@example.com"): the whole subject must match the pattern.
		id.Subject, id.SubjectRegExp = "", wildcardRegexp(id.Subject)
	}
	if err := checkIdentity(kp, id); err != nil {
		return a, err
	}
	for name, v := range kl.AdditionalExtensions {
		switch name {
		case "githubWorkflowTrigger":
			id.Extensions.GithubWorkflowTrigger = v
		case "githubWorkflowSha":
			id.Extensions.GithubWorkflowSHA = v
		case "githubWorkflowName":
			id.Extensions.GithubWorkflowName = v
		case "githubWorkflowRepository":
			id.Extensions.GithubWorkflowRepository = v
		case "githubWorkflowRef":
			id.Extensions.GithubWorkflowRef = v
		default:
			return a, errAt(kp+".additionalExtensions."+name, "unknown extension (want githubWorkflowTrigger, githubWorkflowSha, githubWorkflowName, githubWorkflowRepository or githubWorkflowRef)")
		}
	}
	a.Identities = []sigverify.Identity{id}
	if kl.Roots != "" {
		a.Overrides.FulcioRoots = kl.Roots
		if _, err := trust.Apply(nil, a.Overrides); err != nil {
			return a, errAt(kp+".roots", "%v", err)
		}
	}
	return a, nil
}

// kyvernoLogs compiles rekor and ctlog into an attestor's options and trust
// overrides: rekor.ignoreTlog, rekor.pubkey (the only Rekor key trusted),
// ctlog.ignoreSCT, ctlog.pubkey (the only CT log), ctlog.tsaCertChain (the
// only timestamp authority). rekor.url is informational: entries are
// verified offline against the keys of the trusted root.
func kyvernoLogs(rk *kyvernoRekor, ct *kyvernoCTLog, kp string) (cosign.Attestor, error) {
	var a cosign.Attestor
	if rk != nil {
		a.IgnoreTlog = rk.IgnoreTlog != nil && *rk.IgnoreTlog
		if rk.URL != "" {
			if u, err := url.Parse(rk.URL); err != nil || u.Host == "" {
				return a, errAt(kp+".rekor.url", "%q is not a URL", rk.URL)
			}
		}
		a.Overrides.RekorPubKey, a.Overrides.RekorURL = rk.RekorPubKey, rk.URL
		if a.IgnoreTlog && rk.RekorPubKey != "" {
			return a, errAt(kp+".rekor.pubkey", "a Rekor key has no use with ignoreTlog: true; remove it")
		}
		if err := overrideErr(a.Overrides, kp+".rekor.pubkey"); err != nil {
			return a, err
		}
	}
	if ct != nil {
		a.IgnoreSCT = ct.IgnoreSCT != nil && *ct.IgnoreSCT
		a.Overrides.CTLogPubKey = ct.CTLogPubKey
		if err := overrideErr(trust.Overrides{CTLogPubKey: ct.CTLogPubKey}, kp+".ctlog.pubkey"); err != nil {
			return a, err
		}
		a.Overrides.TSACertChain = ct.TSACertChain
		if err := overrideErr(trust.Overrides{TSACertChain: ct.TSACertChain}, kp+".ctlog.tsaCertChain"); err != nil {
			return a, err
		}
	}
	return a, nil
}

// overrideErr checks one override at load time (a bad PEM refuses the policy).
func overrideErr(o trust.Overrides, path string) error {
	if o.Empty() {
		return nil
	}
	if _, err := trust.Apply(nil, o); err != nil {
		return errAt(path, "%v", err)
	}
	return nil
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

// wildcardRegexp turns a Kyverno wildcard pattern ('*' any run, '?' one
// character) into an anchored regular expression.
func wildcardRegexp(p string) string {
	q := regexp.QuoteMeta(p)
	q = strings.ReplaceAll(q, `\*`, ".*")
	q = strings.ReplaceAll(q, `\?`, ".")
	return "^" + q + "$"
}
