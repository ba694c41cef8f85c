package policy

import (
	"time"

	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/keys"
)

// ForKeys is the policy `criguard verify --key` judges with: every image must
// be signed by count of ks (0: all of them), looking for signatures in
// signatureRepository when set, each verification within timeout. It is an
// ordinary Set, so the command judges and explains exactly as the proxy does.
// Each key requires a transparency-log entry unless ignoreTlog.
func ForKeys(ks []*keys.Key, ignoreTlog bool, count int, signatureRepository string, timeout time.Duration) *Set {
	return ForAttestors("--key", cosign.KeyAttestors(ignoreTlog, ks...), count, signatureRepository, timeout)
}

// ForAttestors is ForKeys for any attestors (keys or keyless identities);
// rule names the rule in verdicts.
func ForAttestors(rule string, as []cosign.Attestor, count int, signatureRepository string, timeout time.Duration) *Set {
	if count <= 0 {
		count = len(as)
	}
	p := &Policy{Name: "command-line", Source: SourceImagePolicy, Mode: Enforce, FailurePolicy: Fail,
		Timeout: timeout, Unmatched: Deny}
	p.Rules = []*Rule{{Name: rule, Policy: p, Images: []string{"*"}, Action: Verify,
		Attestors: []AttestorSet{{Attestors: as, Count: count, Repository: signatureRepository}}}}
	return &Set{Policies: []*Policy{p}}
}
