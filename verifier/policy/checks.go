package policy

import (
	"fmt"
	"strings"

	"github.com/sigstore/sigstore-go/pkg/root"

	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/imageref"
)

// check is one verification a Verify rule needs: an attestor set's image
// signatures, or one attestor set of one attestation requirement.
type check struct {
	set  AttestorSet
	att  *Attestation
	what string // how verdicts name it
}

// checks lists what a Verify rule verifies: every attestor set, then every
// attestation's attestor sets; all must pass.
func (r *Rule) checks() []check {
	var out []check
	for k, a := range r.Attestors {
		what := describeSet(a)
		if len(r.Attestors) > 1 {
			what = fmt.Sprintf("attestor set %d (%s)", k+1, what)
		}
		out = append(out, check{set: a, what: what})
	}
	for i := range r.Attestations {
		at := &r.Attestations[i]
		for k, a := range at.Sets {
			what := fmt.Sprintf("attestation %s: %s", at.Name, describeSet(a))
			if len(at.Sets) > 1 {
				what = fmt.Sprintf("attestation %s: attestor set %d (%s)", at.Name, k+1, describeSet(a))
			}
			out = append(out, check{set: a, att: at, what: what})
		}
	}
	return out
}

// request is the verifier's request for the check.
func (c check) request(pin imageref.Ref, digest string, auth *cosign.Auth, tm root.TrustedMaterial) cosign.Request {
	req := cosign.Request{Image: pin, Digest: digest, Auth: auth, Attestors: c.set.Attestors, Threshold: c.set.Count,
		SignatureRepository: c.set.Repository, Trust: tm}
	if c.att != nil {
		req.Attestation = &cosign.Attestation{PredicateType: c.att.PredicateType, Conditions: c.att.Conditions}
	}
	return req
}

// key identifies the check within one evaluation (the memo): the attestors'
// material and options, not only their names, since two rules' keys may
// share a name across kinds or namespaces.
func (c check) key() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d\x00", c.set.Count)
	for _, a := range c.set.Attestors {
		fmt.Fprintf(&b, "%s\x00%s\x00%v\x00%v\x00%+v\x01", a.SignerID(), a.Label(), a.IgnoreTlog, a.IgnoreSCT, a.Overrides)
		if a.Key != nil {
			b.WriteString(a.Key.Algorithm)
		}
	}
	if c.att != nil {
		// The attestation itself (its conditions) by identity: rules share a
		// memo only within one evaluation of one set.
		fmt.Fprintf(&b, "\x02%p", c.att)
	}
	return b.String()
}

func describeSet(a AttestorSet) string {
	names := make([]string, len(a.Attestors))
	for i, at := range a.Attestors {
		names[i] = at.Label()
	}
	noun := "keys"
	for _, at := range a.Attestors {
		if at.Key == nil {
			noun = "signers"
		}
	}
	s := fmt.Sprintf("%d of %s [%s]", a.Count, noun, strings.Join(names, ", "))
	if a.Repository != "" {
		s += " (signatures in " + a.Repository + ")"
	}
	return s
}

// allSets is every attestor set of the rule, its attestations' included.
func (r *Rule) allSets() []AttestorSet {
	out := append([]AttestorSet(nil), r.Attestors...)
	for _, at := range r.Attestations {
		out = append(out, at.Sets...)
	}
	return out
}
