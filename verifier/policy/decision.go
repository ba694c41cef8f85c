package policy

import (
	"fmt"
	"strings"
	"time"

	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/imageref"
)

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

// reference is the input's parsed reference: the caller's, else Image parsed
// here.
func (in Input) reference() (imageref.Ref, error) {
	if !in.Ref.IsZero() {
		return in.Ref, nil
	}
	return imageref.Parse(in.Image)
}

// Decision is the engine's verdict. Allowed implies that Digest is the digest
// the input pinned (Input.Digest, or the reference's own), when it pinned one:
// the engine checks that in one place, so callers need not.
type Decision struct {
	Allowed bool `json:"allowed"`
	// Audited: the image would have been denied and is let through by Audit
	// mode or by failurePolicy Ignore.
	Audited bool `json:"audited,omitempty"`
	// FailedOpen: a verification could not complete and failurePolicy Ignore let
	// the image through.
	FailedOpen bool `json:"failedOpen,omitempty"`
	// Incomplete: a verification that could not complete decided the outcome
	// (a denial under failurePolicy Fail, or a failed-open allow).
	Incomplete bool   `json:"incomplete,omitempty"`
	Image      string `json:"image"`            // canonical reference
	Digest     string `json:"digest,omitempty"` // the digest judged (resolved when the input had none)
	// Policy and Rule name the deciding rule: the one that denied, else the
	// first audited one, else the first that matched; Rule is empty when no rule
	// matched (unmatchedImages decided) and both are empty when no policy is
	// loaded or the input is invalid.
	Policy string `json:"policy,omitempty"`
	Rule   string `json:"rule,omitempty"`
	// Reason says why, for every outcome; it does not repeat the image, digest,
	// policy and rule, which the fields above carry (Explain joins them).
	Reason     string             `json:"reason"`
	Cached     bool               `json:"cached,omitempty"`
	Verified   []cosign.Signature `json:"verified,omitempty"`
	Rules      []RuleOutcome      `json:"rules,omitempty"` // every judged rule's outcome, in policy order
	Generation uint64             `json:"-"`
	Duration   time.Duration      `json:"-"`
}

// Rule outcomes (RuleOutcome.Result).
const (
	OutcomePass       = "pass"
	OutcomeFail       = "fail"
	OutcomeIncomplete = "incomplete"
)

// RuleOutcome is how one matching rule judged the image.
type RuleOutcome struct {
	Policy string `json:"policy"`
	Kind   Source `json:"kind"`
	Rule   string `json:"rule"`
	Action Action `json:"action"`
	Mode   Mode   `json:"mode"`
	// Result is OutcomePass, OutcomeFail or OutcomeIncomplete.
	Result string `json:"result"`
	Reason string `json:"reason"`
	// transient marks a failure that rests on a verification that could not
	// complete (Kyverno counts registry errors such as a 401 as failures): a
	// denial, but never cached, since other credentials or a moment later may
	// verify.
	transient bool
}

// Verdict is a decision's outcome in one word (also a metric label value).
type Verdict string

// Verdicts.
const (
	VerdictAllow      Verdict = "allow"
	VerdictAudit      Verdict = "audit"       // allowed; would be denied (Audit mode)
	VerdictFailedOpen Verdict = "failed_open" // allowed; could not verify (failurePolicy Ignore)
	VerdictDeny       Verdict = "deny"
)

// Verdict is the decision's outcome.
func (d Decision) Verdict() Verdict {
	switch {
	case !d.Allowed:
		return VerdictDeny
	case d.FailedOpen:
		return VerdictFailedOpen
	case d.Audited:
		return VerdictAudit
	}
	return VerdictAllow
}

// Explain is the one explanation of a decision, for denials (after the
// enforcer's prefix), logs, `criguard verify` and `criguard policy check`:
//
//	image <ref> (digest <digest>) <outcome> by policy <p> rule <r>: <reason>
func (d Decision) Explain() string {
	dg := d.Digest
	if dg == "" {
		dg = "unresolved"
	}
	return fmt.Sprintf("image %s (digest %s) %s", d.Image, dg, d.Outcome())
}

// Outcome is Explain without the image: "<outcome> by policy <p> rule <r>:
// <reason>". An audited or failed-open allow says so at the start of its
// reason.
func (d Decision) Outcome() string {
	outcome := "allowed"
	switch {
	case !d.Allowed && d.Incomplete:
		outcome = "denied (could not verify)"
	case !d.Allowed:
		outcome = "denied"
	}
	if d.Policy != "" {
		outcome += " by policy " + d.Policy
		if d.Rule != "" {
			outcome += " rule " + d.Rule
		}
	}
	reason := d.Reason
	if reason == "" {
		reason = "no reason recorded"
	}
	return outcome + ": " + reason
}

func deny(d Decision, reason string) Decision {
	d.Allowed, d.Audited, d.FailedOpen = false, false, false
	d.Reason = reason
	return d
}

// pinned is the one check that an allow is for the digest the input pinned:
// a decision about another digest (a verifier, cache or resolution that
// answered for something else) is a denial.
func pinned(d Decision, want string) Decision {
	if d.Allowed && want != "" && d.Digest != want {
		return deny(d, fmt.Sprintf("the decision was reached for digest %s but the request pinned %s: refusing it", d.Digest, want))
	}
	return d
}

// describeSignatures names the signatures that verified.
func describeSignatures(sigs []cosign.Signature) string {
	by := make([]string, len(sigs))
	for i, s := range sigs {
		by[i] = fmt.Sprintf("%s (%s %s)", s.Key, s.Format, s.Digest)
	}
	return strings.Join(by, ", ")
}
