package cosign

import (
	"fmt"

	"github.com/criguard/criguard/verifier/sigverify"
)

// provenSigner is who a verification proved signed: the key's material for a
// key attestor, the certificate's SAN and OIDC issuer for a keyless one. ""
// (nothing proven) never counts towards a threshold.
func provenSigner(a Attestor, res *sigverify.Result) string {
	switch {
	case a.Key != nil:
		return a.SignerID()
	case res.Certificate != nil:
		return fmt.Sprintf("keyless:%q/%q", res.Certificate.SubjectAlternativeName, res.Certificate.Extensions.Issuer)
	}
	return ""
}

// distinctSigners is how many passing attestors can each be credited to a
// different proven signer (a maximum bipartite matching of attestors to the
// signers they verified). So one keyless signature matching two attestors
// counts once, and one attestor matching two signers counts once too.
func distinctSigners(signersOf map[int][]string) int {
	owner := map[string]int{} // signer -> the attestor it is credited to
	var credit func(a int, seen map[string]bool) bool
	credit = func(a int, seen map[string]bool) bool {
		for _, s := range signersOf[a] {
			if s == "" || seen[s] {
				continue
			}
			seen[s] = true
			prev, taken := owner[s]
			if !taken || credit(prev, seen) {
				owner[s] = a
				return true
			}
		}
		return false
	}
	n := 0
	for a := range signersOf {
		if credit(a, map[string]bool{}) {
			n++
		}
	}
	return n
}
