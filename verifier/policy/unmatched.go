package policy

import (
	"fmt"
	"strings"
)

// unmatchedRule is what a set says of images no Enforce-mode rule matches:
// the first Enforce policy with unmatchedImages: Deny denies them, else the
// first Audit one reports them, else (no such policy, as in a set of only
// Kyverno policies) they are allowed.
type unmatchedRule struct {
	by    *Policy
	mode  Mode
	where string
}

func unmatchedFor(set *Set, ns string) unmatchedRule {
	u := unmatchedRule{}
	if ns != "" {
		u.where = " in namespace " + ns
	}
	for _, p := range set.Policies {
		if p.Unmatched != Deny {
			continue
		}
		if p.Mode == Enforce {
			u.by, u.mode = p, Enforce
			return u
		}
		if u.by == nil {
			u.by, u.mode = p, Audit
		}
	}
	return u
}

func (u unmatchedRule) denies() bool { return u.by != nil && u.mode == Enforce }
func (u unmatchedRule) audits() bool { return u.by != nil && u.mode == Audit }

// apply decides (or, for an Audit policy, marks) an image that no Enforce
// rule matches. audit lists the Audit-mode rules that did match: they do not
// make the image matched for another policy's unmatchedImages: Deny, but an
// Audit policy's own rules do for its own.
func (u unmatchedRule) apply(d Decision, audit []matchedRule, resolveErr error) Decision {
	what := "no rule matches this image" + u.where
	if len(audit) > 0 {
		names := make([]string, len(audit))
		for i, m := range audit {
			names[i] = m.r.Policy.Name + "/" + m.r.Name
		}
		what = fmt.Sprintf("only Audit-mode rules match this image%s (%s: an Audit rule reports, it does not make an image matched)", u.where, strings.Join(names, ", "))
	}
	switch {
	case u.denies():
		d.Policy, d.Rule = u.by.Name, ""
		return deny(d, fmt.Sprintf("%s, and unmatchedImages is Deny", what))
	case u.audits() && len(audit) > 0:
		// An Audit policy's own rules match for its own unmatchedImages: the
		// image is matched, and their outcome (allow, or audit) stands.
		// Another policy's Audit rules do not make it matched: reported.
		for _, m := range audit {
			if m.r.Policy == u.by {
				return d
			}
		}
		if d.Allowed && !d.Audited {
			d.Audited, d.Policy, d.Rule = true, u.by.Name, ""
			d.Reason = fmt.Sprintf("audit: %s, and unmatchedImages is Deny (mode Audit); %s", what, d.Reason)
		}
		return d
	case u.audits():
		d.Policy = u.by.Name
		d.Allowed, d.Audited = true, true
		d.Reason = fmt.Sprintf("audit: %s, and unmatchedImages is Deny (mode Audit)", what)
	default:
		d.Allowed = true
		d.Reason = fmt.Sprintf("%s; unmatched images are allowed", what)
	}
	if resolveErr != nil {
		d.Reason += fmt.Sprintf(" (its digest could not be resolved: %v)", resolveErr)
	}
	return d
}
