package policy

import (
	"time"

	"github.com/criguard/criguard/verifier/keys"
)

// ForKeys is the policy `criguard verify --key` judges with: every image must
// be signed by count of ks (0: all of them), looking for signatures in
// signatureRepository when set, each verification within timeout. It is an
// ordinary Set, so the command judges and explains exactly as the proxy does.
func ForKeys(ks []*keys.Key, count int, signatureRepository string, timeout time.Duration) *Set {
	if count <= 0 {
		count = len(ks)
	}
	p := &Policy{Name: "command-line", Source: SourceImagePolicy, Mode: Enforce, FailurePolicy: Fail,
		Timeout: timeout, Unmatched: Deny}
	p.Rules = []*Rule{{Name: "--key", Policy: p, Images: []string{"*"}, Action: Verify,
		Attestors: []AttestorSet{{Keys: ks, Count: count, Repository: signatureRepository}}}}
	return &Set{Policies: []*Policy{p}}
}
