package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/imageref"
)

// Verifier is what the engine needs from cosign.Verifier.
type Verifier interface {
	// Resolve returns the digest a reference (tag) currently names.
	Resolve(ctx context.Context, ref imageref.Ref, auth *cosign.Auth) (digest string, err error)
	// Verify judges one digest; an error wrapping cosign.ErrIncomplete means
	// the verification could not complete.
	Verify(ctx context.Context, req cosign.Request) (cosign.Result, error)
}

// Input is one image to judge.
type Input struct {
	Operation string // "PullImage", "CreateContainer", "verify": for logs only
	// Image is the reference as requested (tag or digest), parsed by the
	// engine when Ref is zero.
	Image string
	// Ref is the reference already parsed (imageref.Parse) by the caller; when
	// set, Image is not parsed again.
	Ref imageref.Ref
	// Digest is the repository digest to judge; when empty and !Local the engine
	// resolves Image's tag and returns the digest in Decision.Digest.
	Digest string
	// Local marks an image with no repository digest (imported, side-loaded):
	// only an Allow rule or unmatchedImages: Allow admits it.
	Local     bool
	Namespace string // the pod's namespace; "" when unknown
	Pod       string
	Auth      *cosign.Auth
}

// Decision is the engine's verdict.
type Decision struct {
	Allowed bool
	// Audited: the image would have been denied and is let through by Audit
	// mode or by failurePolicy Ignore.
	Audited bool
	// FailedOpen: a verification could not complete and failurePolicy Ignore let
	// the image through.
	FailedOpen bool
	Image      string // normalized reference
	Digest     string // the digest judged (resolved when the input had none)
	// Policy and Rule name the deciding rule: the one that denied, else the
	// first audited one, else the first that matched; Rule is empty when no rule
	// matched (unmatchedImages decided) and both are empty when no policy is
	// loaded or the input is invalid.
	Policy string
	Rule   string
	// Reason says why, for every outcome; it does not repeat the image, digest,
	// policy and rule, which the fields above carry (Explain joins them).
	Reason     string
	Cached     bool
	Verified   []cosign.Signature
	Rules      []RuleOutcome // every matching rule's outcome, in policy order
	Generation uint64
	Duration   time.Duration
}

// RuleOutcome is how one matching rule judged the image.
type RuleOutcome struct {
	Policy string
	Kind   Source
	Rule   string
	Action Action
	Mode   Mode
	// Result is "pass", "fail" or "incomplete".
	Result string
	Reason string
}

// Explain is the decision as one sentence naming everything.
func (d Decision) Explain() string {
	verdict := "denied"
	switch {
	case d.Allowed && d.FailedOpen:
		verdict = "allowed (failed open: failurePolicy Ignore)"
	case d.Allowed && d.Audited:
		verdict = "allowed (audit: would be denied)"
	case d.Allowed:
		verdict = "allowed"
	}
	dg := d.Digest
	if dg == "" {
		dg = "unresolved"
	}
	by := ""
	if d.Policy != "" {
		by = " by policy " + d.Policy
		if d.Rule != "" {
			by += " rule " + d.Rule
		}
	}
	return fmt.Sprintf("image %s (digest %s) %s%s: %s", d.Image, dg, verdict, by, d.Reason)
}

// Engine evaluates images against the Store's current policy set, with a
// verdict cache and singleflight for identical concurrent verifications.
type Engine struct {
	store  *Store
	v      Verifier
	log    *slog.Logger
	now    func() time.Time
	cache  *verdictCache
	flight singleflight.Group
	// slots bounds the signature verifications running at once: each may hold
	// up to MaxSignatures bounded reads, so memory under a flood of distinct
	// images (or a hostile registry answering slowly) stays bounded too.
	slots chan struct{}
	// waitHook, when set (tests), runs when a caller starts waiting for a
	// shared verification.
	waitHook func()
}

// EngineOption configures an Engine.
type EngineOption func(*Engine)

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) EngineOption { return func(e *Engine) { e.now = now } }

// DefaultMaxConcurrentVerifications bounds the signature verifications an
// Engine runs at once; identical ones are shared and do not count twice.
const DefaultMaxConcurrentVerifications = 16

// WithMaxConcurrentVerifications sets how many signature verifications run at
// once (n < 1 means DefaultMaxConcurrentVerifications). A verification waits for
// a turn within its own timeout; one that gets none is incomplete, and the
// rule's failurePolicy decides, as for a registry that did not answer.
func WithMaxConcurrentVerifications(n int) EngineOption {
	return func(e *Engine) {
		if n < 1 {
			n = DefaultMaxConcurrentVerifications
		}
		e.slots = make(chan struct{}, n)
	}
}

// NewEngine returns an engine over store using v; logger may be nil.
func NewEngine(store *Store, v Verifier, logger *slog.Logger, opts ...EngineOption) *Engine {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{store: store, v: v, log: logger, now: time.Now, cache: newVerdictCache(), slots: make(chan struct{}, DefaultMaxConcurrentVerifications)}
	for _, o := range opts {
		o(e)
	}
	return e
}

// CacheLen is the number of cached verdicts (metrics, tests).
func (e *Engine) CacheLen() int { return e.cache.len() }

func deny(d Decision, reason string) Decision {
	d.Allowed, d.Audited, d.FailedOpen = false, false, false
	d.Reason = reason
	return d
}

// Evaluate judges one image. It never returns an error: every failure is a
// denial (or, where the policy says so, an audited or failed-open allow).
func (e *Engine) Evaluate(ctx context.Context, in Input) Decision {
	start := e.now()
	d := e.evaluate(ctx, in)
	if d.FailedOpen && ctx.Err() != nil {
		// The caller gave up: failing open must not turn its cancellation
		// into an allow.
		d = deny(d, fmt.Sprintf("the request ended before the verification finished: %v", ctx.Err()))
	}
	d.Duration = e.now().Sub(start)
	if e.log.Enabled(ctx, slog.LevelDebug) {
		rules := make([]string, len(d.Rules))
		for i, o := range d.Rules {
			rules[i] = o.Policy + "/" + o.Rule + "=" + o.Result
		}
		e.log.DebugContext(ctx, "policy evaluation", "operation", in.Operation, "image", d.Image, "digest", d.Digest,
			"namespace", in.Namespace, "rules", rules, "allowed", d.Allowed, "audited", d.Audited,
			"failedOpen", d.FailedOpen, "cached", d.Cached, "generation", d.Generation)
	}
	return d
}

func (e *Engine) evaluate(ctx context.Context, in Input) Decision {
	d := Decision{Image: in.Image, Digest: in.Digest}
	set := e.store.Current()
	if set == nil {
		return deny(d, "no policy is loaded")
	}
	d.Generation = set.Generation
	ref, err := in.reference()
	if err != nil {
		return deny(d, err.Error())
	}
	d.Image = ref.String()
	if in.Local {
		if in.Digest != "" {
			return deny(d, "invalid input: a local image has no repository digest to judge")
		}
		d.Digest = ""
	} else if in.Digest != "" {
		if err := imageref.CheckDigest(in.Digest); err != nil {
			return deny(d, err.Error())
		}
		if ref.HasDigest() && ref.Digest() != in.Digest {
			return deny(d, fmt.Sprintf("the reference pins %s but digest %s was asked for", ref.Digest(), in.Digest))
		}
	} else if ref.HasDigest() {
		d.Digest = ref.Digest()
	}

	matched := e.match(set, ref, in.Namespace)
	e.cache.sync(set.Generation, cacheMax(set))

	// Resolve the tag first: every rule judges the same digest, and the proxy
	// pulls exactly that digest. Not when the answer is already an enforced
	// denial (no rule matches under unmatchedImages: Deny, or a Deny rule).
	var resolveErr error
	if !in.Local && d.Digest == "" && !deniedWithoutDigest(set, matched) {
		rctx, cancel := context.WithTimeout(ctx, resolveTimeout(set, matched))
		dg, err := e.v.Resolve(rctx, ref, in.Auth)
		timedOut := rctx.Err() != nil
		cancel()
		switch {
		case err != nil:
			if timedOut && !errors.Is(err, cosign.ErrIncomplete) {
				err = fmt.Errorf("%w: resolving the tag: %w", cosign.ErrIncomplete, err)
			}
			if timedOut {
				err = &timeoutError{err}
			}
			resolveErr = err
		case imageref.CheckDigest(dg) != nil:
			resolveErr = fmt.Errorf("resolving the tag returned an invalid digest %q", dg)
		default:
			d.Digest = dg
		}
	}

	if len(matched) == 0 {
		return e.unmatched(set, d, in.Namespace, resolveErr)
	}

	key, cacheable := e.cacheKey(set, matched, ref, d.Digest, in)
	if cacheable && resolveErr == nil {
		if cd, ok := e.cache.get(key, e.now()); ok {
			cd.Image, cd.Digest, cd.Cached, cd.Generation = d.Image, d.Digest, true, set.Generation
			return cd
		}
		ch := e.flight.DoChan(key, func() (any, error) {
			// Detached from the first caller: its cancellation must not fail
			// the others sharing this verification; rule timeouts bound it.
			vctx := context.WithoutCancel(ctx)
			out := e.judge(vctx, matched, ref, d, in, nil)
			if ttl, ok := cacheTTL(out, matched); ok {
				e.cache.put(set.Generation, key, out, e.now().Add(ttl))
			}
			return out, nil
		})
		if e.waitHook != nil {
			e.waitHook()
		}
		select {
		case r := <-ch:
			out := r.Val.(Decision)
			out.Cached = false
			out.Image = d.Image
			return out
		case <-ctx.Done():
			return deny(d, fmt.Sprintf("the request ended before the verification finished: %v", ctx.Err()))
		}
	}
	return e.judge(ctx, matched, ref, d, in, resolveErr)
}

func deniedWithoutDigest(set *Set, matched []matchedRule) bool {
	if len(matched) == 0 {
		for _, p := range set.Policies {
			if p.Unmatched == Deny && p.Mode == Enforce {
				return true
			}
		}
		return false
	}
	for _, m := range matched {
		if m.r.Action == Deny && m.mode == Enforce {
			return true
		}
	}
	return false
}

// matchedRule is a rule that applies, with its mode for this namespace.
type matchedRule struct {
	r    *Rule
	mode Mode
}

func (e *Engine) match(set *Set, ref imageref.Ref, ns string) []matchedRule {
	var out []matchedRule
	for _, p := range set.Policies {
		for _, r := range p.Rules {
			if !r.appliesToNamespace(ns) || !matchesAny(ref, r.Images) || excludedBy(ref, r.ExcludeImages) {
				continue
			}
			out = append(out, matchedRule{r: r, mode: r.modeFor(ns)})
		}
	}
	return out
}

// unmatched applies unmatchedImages: Deny wins over Allow (fail closed); an
// Enforce policy's Deny wins over an Audit one's. A set of only Kyverno
// policies admits unmatched images, as Kyverno does.
func (e *Engine) unmatched(set *Set, d Decision, ns string, resolveErr error) Decision {
	var denyBy, auditBy *Policy
	for _, p := range set.Policies {
		if p.Unmatched != Deny {
			continue
		}
		if p.Mode == Enforce && denyBy == nil {
			denyBy = p
		}
		if p.Mode == Audit && auditBy == nil {
			auditBy = p
		}
	}
	where := ""
	if ns != "" {
		where = " in namespace " + ns
	}
	switch {
	case denyBy != nil:
		d.Policy = denyBy.Name
		return deny(d, fmt.Sprintf("no rule matches this image%s, and unmatchedImages is Deny", where))
	case auditBy != nil:
		d.Policy = auditBy.Name
		d.Allowed, d.Audited = true, true
		d.Reason = fmt.Sprintf("audit: no rule matches this image%s, and unmatchedImages is Deny (mode Audit)", where)
	default:
		d.Allowed = true
		d.Reason = fmt.Sprintf("no rule matches this image%s; unmatched images are allowed", where)
	}
	if resolveErr != nil {
		d.Reason += fmt.Sprintf(" (its digest could not be resolved: %v)", resolveErr)
	}
	return d
}

type verifyMemoKey struct {
	keys  string
	count int
	repo  string
}

type verifyMemo struct {
	res      cosign.Result
	err      error
	timedOut bool
}

// judge evaluates every matched rule. Cheap rules (Allow, Deny, local images,
// digest references) go first so that an enforced denial needs no registry
// call.
func (e *Engine) judge(ctx context.Context, matched []matchedRule, ref imageref.Ref, d Decision, in Input, resolveErr error) Decision {
	outcomes := make([]RuleOutcome, len(matched))
	var pending []int
	for i, m := range matched {
		o := RuleOutcome{Policy: m.r.Policy.Name, Kind: m.r.Policy.Source, Rule: m.r.Name, Action: m.r.Action, Mode: m.mode}
		switch {
		case m.r.Action == Allow:
			o.Result, o.Reason = "pass", "allowed by the rule (action Allow)"
		case m.r.Action == Deny:
			o.Result, o.Reason = "fail", "denied by the rule (action Deny)"
		case m.r.RequireDigestReference && !ref.HasDigest():
			o.Result, o.Reason = "fail", "the image must be referenced by digest (verifyDigest: true, mutateDigest: false)"
		case in.Local:
			o.Result, o.Reason = "fail", "the image has no repository digest (imported or side-loaded), so no signature can be checked; only a rule with action Allow or unmatchedImages: Allow admits it"
		case resolveErr != nil:
			o.Reason = "the tag could not be resolved to a digest: " + resolveErr.Error()
			o.Result = "fail"
			var te *timeoutError
			if errors.Is(resolveErr, cosign.ErrIncomplete) && (m.r.Policy.Source == SourceImagePolicy || errors.As(resolveErr, &te) || networkError(resolveErr)) {
				o.Result = "incomplete"
			}
		default:
			pending = append(pending, i)
			outcomes[i] = o
			continue
		}
		outcomes[i] = o
	}
	if first := firstDenial(outcomes, matched); first >= 0 {
		return combine(d, outcomes, matched, nil)
	}
	memo := map[verifyMemoKey]verifyMemo{}
	var verified []cosign.Signature
	for _, i := range pending {
		m := matched[i]
		o := &outcomes[i]
		o.Result, o.Reason = "pass", ""
		var reasons []string
		for k, a := range m.r.Attestors {
			res, err, timedOut := e.verifySet(ctx, memo, m.r.Policy.Timeout, ref, d.Digest, in.Auth, a)
			what := describeSet(a)
			if len(m.r.Attestors) > 1 {
				what = fmt.Sprintf("attestor set %d (%s)", k+1, what)
			}
			switch {
			case err != nil && errors.Is(err, cosign.ErrIncomplete) && m.r.Policy.Source != SourceImagePolicy && !timedOut && !networkError(err):
				// Kyverno counts only network errors (and webhook timeouts) as
				// rule errors, which failurePolicy governs; any other registry
				// error fails the rule (imageVerifier.handleRegistryErrors).
				o.Result, o.Reason = "fail", fmt.Sprintf("%s: verification could not complete (a registry error, not a network error or timeout: Kyverno counts it as a failed verification): %s", what, incompleteDetail(err))
			case err != nil && errors.Is(err, cosign.ErrIncomplete):
				o.Result, o.Reason = "incomplete", fmt.Sprintf("%s: verification could not complete: %s", what, incompleteDetail(err))
			case err != nil:
				o.Result, o.Reason = "fail", fmt.Sprintf("%s: %v", what, err)
			case res.Digest != "" && res.Digest != d.Digest:
				o.Result, o.Reason = "fail", fmt.Sprintf("%s: the verifier judged digest %s instead", what, res.Digest)
			case !res.Allowed:
				r := res.Reason
				if r == "" {
					r = "not signed by the required keys"
				}
				o.Result, o.Reason = "fail", fmt.Sprintf("%s: %s", what, r)
			default:
				verified = append(verified, res.Verified...)
				reasons = append(reasons, what+": verified")
				continue
			}
			break
		}
		if o.Result == "pass" {
			o.Reason = strings.Join(reasons, "; ")
		}
		if firstDenial(outcomes, matched) >= 0 {
			break // enforced denial: the remaining rules cannot change it
		}
	}
	return combine(d, outcomes, matched, verified)
}

func describeSet(a AttestorSet) string {
	names := make([]string, len(a.Keys))
	for i, k := range a.Keys {
		names[i] = k.Name
	}
	s := fmt.Sprintf("%d of keys [%s]", a.Count, strings.Join(names, ", "))
	if a.Repository != "" {
		s += " (signatures in " + a.Repository + ")"
	}
	return s
}

// incompleteDetail is err's message without the ErrIncomplete prefix(es) it
// carries, so a reason that already says the verification could not complete
// does not say it twice.
func incompleteDetail(err error) string {
	msg := err.Error()
	for {
		rest, ok := strings.CutPrefix(msg, cosign.ErrIncomplete.Error()+": ")
		if !ok {
			return msg
		}
		msg = rest
	}
}

// timeoutError marks an error of a call whose deadline passed.
type timeoutError struct{ err error }

func (t *timeoutError) Error() string { return t.err.Error() }
func (t *timeoutError) Unwrap() error { return t.err }

// networkError reports whether err is, or wraps, a network failure or a
// deadline (what Kyverno treats as a rule error rather than a failure).
func networkError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, context.DeadlineExceeded)
}

func (e *Engine) verifySet(ctx context.Context, memo map[verifyMemoKey]verifyMemo, timeout time.Duration, ref imageref.Ref, digest string, auth *cosign.Auth, a AttestorSet) (cosign.Result, error, bool) {
	names := make([]string, len(a.Keys))
	for i, k := range a.Keys {
		// The key material, not only its name: two rules' keys may share a
		// name (policy/rule/path) across kinds or namespaces.
		names[i] = k.Fingerprint() + "\x00" + k.Algorithm + "\x00" + k.Name
	}
	mk := verifyMemoKey{keys: strings.Join(names, "\x01"), count: a.Count, repo: a.Repository}
	if m, ok := memo[mk]; ok {
		return m.res, m.err, m.timedOut
	}
	vctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	select {
	case e.slots <- struct{}{}:
		defer func() { <-e.slots }()
	case <-vctx.Done():
		err := fmt.Errorf("%w: %d signature verifications were already running and none finished within this one's timeout (%s): %w",
			cosign.ErrIncomplete, cap(e.slots), timeout, vctx.Err())
		memo[mk] = verifyMemo{cosign.Result{}, err, true}
		return cosign.Result{}, err, true
	}
	pinned, err := ref.AtDigest(digest)
	if err != nil {
		return cosign.Result{}, err, false
	}
	res, err := e.v.Verify(vctx, cosign.Request{
		Image:               pinned,
		Digest:              digest,
		Auth:                auth,
		Keys:                a.Keys,
		Threshold:           a.Count,
		SignatureRepository: a.Repository,
	})
	timedOut := err != nil && vctx.Err() != nil
	if timedOut && !errors.Is(err, cosign.ErrIncomplete) {
		err = fmt.Errorf("%w: %w", cosign.ErrIncomplete, err)
	}
	memo[mk] = verifyMemo{res, err, timedOut}
	return res, err, timedOut
}

// blocking reports whether a rule outcome denies under its mode and failure
// policy.
func blocking(o RuleOutcome, m matchedRule) bool {
	switch o.Result {
	case "fail":
		return m.mode == Enforce
	case "incomplete":
		if m.r.Policy.Source != SourceImagePolicy {
			// Kyverno blocks on a rule error whenever failurePolicy is Fail,
			// whatever the failure action (engineutils.BlockRequest).
			return m.r.Policy.FailurePolicy == Fail
		}
		return m.mode == Enforce && m.r.Policy.FailurePolicy == Fail
	}
	return false
}

func firstDenial(outcomes []RuleOutcome, matched []matchedRule) int {
	for i, o := range outcomes {
		if o.Result != "" && blocking(o, matched[i]) {
			return i
		}
	}
	return -1
}

// combine: every matching rule must pass. A failure under Enforce denies; a
// failure under Audit, or an incomplete verification under failurePolicy
// Ignore, is let through and marked.
func combine(d Decision, outcomes []RuleOutcome, matched []matchedRule, verified []cosign.Signature) Decision {
	var done []RuleOutcome
	for _, o := range outcomes {
		if o.Result != "" {
			done = append(done, o)
		}
	}
	d.Rules = done
	d.Verified = verified
	if i := firstDenial(outcomes, matched); i >= 0 {
		o := outcomes[i]
		d.Policy, d.Rule = o.Policy, o.Rule
		return deny(d, o.Reason)
	}
	d.Allowed = true
	deciding := -1
	for i, o := range outcomes {
		if o.Result == "" || o.Result == "pass" {
			continue
		}
		d.Audited = true
		if o.Result == "incomplete" && matched[i].r.Policy.FailurePolicy == Ignore {
			d.FailedOpen = true
		}
		if deciding < 0 {
			deciding = i
		}
	}
	if deciding >= 0 {
		o := outcomes[deciding]
		d.Policy, d.Rule = o.Policy, o.Rule
		why := "audit: would deny: "
		if o.Result == "incomplete" && matched[deciding].r.Policy.FailurePolicy == Ignore {
			why = "failed open (failurePolicy Ignore): "
		}
		d.Reason = why + o.Reason
		return d
	}
	// All passed: name the first Verify rule, else the first rule.
	pick := 0
	for i, m := range matched {
		if m.r.Action == Verify {
			pick = i
			break
		}
	}
	d.Policy, d.Rule = outcomes[pick].Policy, outcomes[pick].Rule
	var rs []string
	for _, o := range done {
		rs = append(rs, fmt.Sprintf("%s/%s: %s", o.Policy, o.Rule, o.Reason))
	}
	d.Reason = strings.Join(rs, "; ")
	return d
}

// cacheKey names a verdict: the policy generation, the rules that matched with
// their modes (they depend on the namespace and on how the image was spelled),
// the repository and the digest. Only verdicts that needed a verification are
// cached.
func (e *Engine) cacheKey(set *Set, matched []matchedRule, ref imageref.Ref, digest string, in Input) (string, bool) {
	if in.Local || digest == "" {
		return "", false
	}
	verify := false
	ids := make([]string, 0, len(matched))
	for _, m := range matched {
		if m.r.NoCache {
			return "", false
		}
		if m.r.Action == Verify {
			verify = true
		}
		ids = append(ids, m.r.ID()+"="+string(m.mode))
	}
	if !verify {
		return "", false
	}
	slices.Sort(ids)
	return fmt.Sprintf("%d\x00%s\x00%s\x00%t\x00%s", set.Generation, ref.Repository(), digest, ref.HasDigest(), strings.Join(ids, "\x01")), true
}

// cacheTTL: allows for the shortest TTL of the policies involved, anything
// with a failure for at most MaxDenyCacheTTL, and nothing that involved an
// incomplete verification (never cached, allow or deny).
func cacheTTL(d Decision, matched []matchedRule) (time.Duration, bool) {
	ttl := time.Duration(-1)
	for _, m := range matched {
		if t := m.r.Policy.CacheTTL; ttl < 0 || t < ttl {
			ttl = t
		}
	}
	if ttl <= 0 {
		return 0, false
	}
	for _, o := range d.Rules {
		if o.Result == "incomplete" {
			return 0, false
		}
	}
	if !d.Allowed || d.Audited {
		ttl = min(ttl, MaxDenyCacheTTL)
	}
	return ttl, true
}

func cacheMax(set *Set) int {
	m := -1
	for _, p := range set.Policies {
		if m < 0 || p.CacheMax < m {
			m = p.CacheMax
		}
	}
	if m < 0 {
		return DefaultCacheMax
	}
	return m
}

// resolveTimeout is the longest timeout among the matching rules' policies
// (every rule needs the digest), else the first policy's.
func resolveTimeout(set *Set, matched []matchedRule) time.Duration {
	var t time.Duration
	for _, m := range matched {
		t = max(t, m.r.Policy.Timeout)
	}
	if t == 0 && len(set.Policies) > 0 {
		t = set.Policies[0].Timeout
	}
	if t == 0 {
		t = DefaultTimeout
	}
	return t
}

// reference is the input's parsed reference: the caller's, else Image parsed
// here.
func (in Input) reference() (imageref.Ref, error) {
	if !in.Ref.IsZero() {
		return in.Ref, nil
	}
	return imageref.Parse(in.Image)
}
