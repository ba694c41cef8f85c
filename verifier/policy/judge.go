package policy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/imageref"
)

// judge evaluates every matched rule. Cheap rules (Allow, Deny, local images,
// digest references) go first so that an enforced denial needs no registry
// call.
func (e *Engine) judge(ctx context.Context, matched []matchedRule, ref imageref.Ref, d Decision, in Input, resolveErr error) Decision {
	outcomes := make([]RuleOutcome, len(matched))
	var pending []int
	for i, m := range matched {
		outcomes[i] = RuleOutcome{Policy: m.r.Policy.Name, Kind: m.r.Policy.Source, Rule: m.r.Name, Action: m.r.Action, Mode: m.mode}
		if !judgeCheap(&outcomes[i], m, ref, in, resolveErr) {
			pending = append(pending, i)
		}
	}
	if firstDenial(outcomes, matched) >= 0 {
		return combine(d, outcomes, matched, nil)
	}
	memo := map[verifyMemoKey]verifyMemo{}
	var verified []cosign.Signature
	for _, i := range pending {
		verified = append(verified, e.judgeVerify(ctx, memo, &outcomes[i], matched[i], ref, d.Digest, in.Auth)...)
		if firstDenial(outcomes, matched) >= 0 {
			break // enforced denial: the remaining rules cannot change it
		}
	}
	return combine(d, outcomes, matched, verified)
}

// judgeCheap settles a rule without the registry where it can; it reports
// false when the rule needs a signature verification.
func judgeCheap(o *RuleOutcome, m matchedRule, ref imageref.Ref, in Input, resolveErr error) bool {
	switch {
	case m.r.Action == Allow:
		o.Result, o.Reason = OutcomePass, "allowed by the rule (action Allow)"
	case m.r.Action == Deny:
		o.Result, o.Reason = OutcomeFail, "denied by the rule (action Deny)"
	case m.r.Action == Verify && len(m.r.Attestors) == 0 && len(m.r.Attestations) == 0:
		o.Result, o.Reason = OutcomeFail, "the verifyImages entry has no attestors, so nothing verifies the image: Kyverno fails it as unverified (required: true), and so does criguard"
	case m.r.RequireDigestReference && !ref.HasDigest():
		o.Result, o.Reason = OutcomeFail, "the image must be referenced by digest (verifyDigest: true, mutateDigest: false)"
	case in.Local:
		o.Result, o.Reason = OutcomeFail, "the image has no repository digest (imported or side-loaded), so no signature can be checked; only a rule with action Allow or unmatchedImages: Allow admits it"
	case resolveErr != nil:
		o.Reason = "the tag could not be resolved to a digest: " + resolveErr.Error()
		o.Result = OutcomeFail
		if m.r.Policy.incomplete(resolveErr) {
			o.Result = OutcomeIncomplete
		}
	default:
		return false
	}
	return true
}

// judgeVerify runs a Verify rule's attestor sets (all must pass) and returns
// the signatures that verified.
func (e *Engine) judgeVerify(ctx context.Context, memo map[verifyMemoKey]verifyMemo, o *RuleOutcome, m matchedRule, ref imageref.Ref, digest string, auth *cosign.Auth) []cosign.Signature {
	var verified []cosign.Signature
	var reasons []string
	for _, c := range m.r.checks() {
		res, err := e.verifySet(ctx, memo, m.r.Policy, ref, digest, auth, c)
		what := c.what
		switch {
		case err != nil && errors.Is(err, cosign.ErrIncomplete) && !m.r.Policy.incomplete(err):
			// Kyverno counts only network errors (and webhook timeouts) as
			// rule errors, which failurePolicy governs; any other registry
			// error fails the rule (imageVerifier.handleRegistryErrors).
			o.Result, o.Reason = OutcomeFail, fmt.Sprintf("%s: verification could not complete (a registry error, not a network error or timeout: Kyverno counts it as a failed verification): %s", what, incompleteDetail(err))
			o.transient = true
		case err != nil && errors.Is(err, cosign.ErrIncomplete):
			o.Result, o.Reason = OutcomeIncomplete, fmt.Sprintf("%s: verification could not complete: %s", what, incompleteDetail(err))
			if errors.Is(err, ErrSaturated) {
				e.saturated(ctx, m, ref, digest, err)
			}
		case err != nil:
			o.Result, o.Reason = OutcomeFail, fmt.Sprintf("%s: %v", what, err)
		case !res.Allowed:
			r := res.Reason
			if r == "" {
				r = "not signed by the required keys"
			}
			o.Result, o.Reason = OutcomeFail, fmt.Sprintf("%s: %s", what, r)
		default:
			verified = append(verified, res.Verified...)
			reasons = append(reasons, what+": verified by "+describeSignatures(res.Verified))
			continue
		}
		return nil
	}
	o.Result, o.Reason = OutcomePass, strings.Join(reasons, "; ")
	return verified
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

// incomplete reports whether err leaves a verification under p incomplete
// (failurePolicy decides) rather than failed: every ErrIncomplete, or, for a
// policy with Kyverno's semantics, only a network error or a timeout.
func (p *Policy) incomplete(err error) bool {
	if !errors.Is(err, cosign.ErrIncomplete) {
		return false
	}
	if !p.OnlyNetworkErrorsIncomplete {
		return true
	}
	var te *timeoutError
	var op *net.OpError
	return errors.As(err, &te) || errors.As(err, &op) || errors.Is(err, context.DeadlineExceeded)
}

type verifyMemoKey struct {
	check string
	repo  string
}

type verifyMemo struct {
	res cosign.Result
	err error
}

// verifySet verifies one check of a rule, once per evaluation (memo), within
// the policy's timeout and a verification slot. An answer for another digest
// than the one asked is an error.
func (e *Engine) verifySet(ctx context.Context, memo map[verifyMemoKey]verifyMemo, p *Policy, ref imageref.Ref, digest string, auth *cosign.Auth, c check) (cosign.Result, error) {
	mk := verifyMemoKey{check: c.key(), repo: c.set.Repository}
	if m, ok := memo[mk]; ok {
		return m.res, m.err
	}
	res, err := e.verifyInSlot(ctx, p, ref, digest, auth, c)
	if err == nil && res.Digest != "" && res.Digest != digest {
		err = fmt.Errorf("the verifier judged digest %s instead of %s", res.Digest, digest)
	}
	memo[mk] = verifyMemo{res, err}
	return res, err
}

func (e *Engine) verifyInSlot(ctx context.Context, p *Policy, ref imageref.Ref, digest string, auth *cosign.Auth, c check) (cosign.Result, error) {
	vctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	pin, err := ref.AtDigest(digest)
	if err != nil {
		return cosign.Result{}, err
	}
	release, err := e.slots.acquire(vctx, ref.Registry())
	if err != nil {
		return cosign.Result{}, &timeoutError{fmt.Errorf("%w: %w", cosign.ErrIncomplete, err)}
	}
	defer release()
	res, err := e.v.Verify(vctx, c.request(pin, digest, auth, p.Trust))
	if err != nil && vctx.Err() != nil {
		if !errors.Is(err, cosign.ErrIncomplete) {
			err = fmt.Errorf("%w: %w", cosign.ErrIncomplete, err)
		}
		err = &timeoutError{err}
	}
	return res, err
}

// blocking reports whether a rule outcome denies under its mode and failure
// policy.
func blocking(o RuleOutcome, m matchedRule) bool {
	switch o.Result {
	case OutcomeFail:
		return m.mode == Enforce
	case OutcomeIncomplete:
		p := m.r.Policy
		if p.IncompleteBlocksAnyMode {
			// Kyverno blocks on a rule error whenever failurePolicy is Fail,
			// whatever the failure action (engineutils.BlockRequest).
			return p.FailurePolicy == Fail
		}
		return m.mode == Enforce && p.FailurePolicy == Fail
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
	for _, o := range outcomes {
		if o.Result != "" {
			d.Rules = append(d.Rules, o)
		}
	}
	d.Verified = verified
	if i := firstDenial(outcomes, matched); i >= 0 {
		o := outcomes[i]
		d.Policy, d.Rule = o.Policy, o.Rule
		d = deny(d, o.Reason)
		d.Incomplete = o.Result == OutcomeIncomplete
		return d
	}
	d.Allowed = true
	deciding := -1
	for i, o := range outcomes {
		if o.Result == "" || o.Result == OutcomePass {
			continue
		}
		d.Audited = true
		if o.Result == OutcomeIncomplete && matched[i].r.Policy.FailurePolicy == Ignore {
			d.FailedOpen, d.Incomplete = true, true
		}
		if deciding < 0 {
			deciding = i
		}
	}
	if deciding >= 0 {
		o := outcomes[deciding]
		d.Policy, d.Rule = o.Policy, o.Rule
		why := "audit: would deny: "
		if o.Result == OutcomeIncomplete && matched[deciding].r.Policy.FailurePolicy == Ignore {
			why = "failed open (failurePolicy Ignore): "
		}
		d.Reason = why + o.Reason
		return d
	}
	return passed(d, outcomes, matched)
}

// passed names the first Verify rule (else the first rule) of an image every
// rule passed, and joins their reasons.
func passed(d Decision, outcomes []RuleOutcome, matched []matchedRule) Decision {
	pick := 0
	for i, m := range matched {
		if m.r.Action == Verify {
			pick = i
			break
		}
	}
	d.Policy, d.Rule = outcomes[pick].Policy, outcomes[pick].Rule
	if len(d.Rules) == 1 {
		d.Reason = d.Rules[0].Reason
		return d
	}
	rs := make([]string, len(d.Rules))
	for i, o := range d.Rules {
		rs[i] = fmt.Sprintf("%s/%s: %s", o.Policy, o.Rule, o.Reason)
	}
	d.Reason = strings.Join(rs, "; ")
	return d
}
