package sigverify

import "fmt"

// guard runs f, turning a panic into a refusal. sigstore-go v1.1.4 and rekor
// v1.4.3 panic on some hostile input (a transparency-log entry body without
// "apiVersion" dereferences nil in rekor's hashedrekord type), and that input
// comes from registries: a verifier must deny it, not crash the node's CRI
// proxy.
func guard(what string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: malformed material made the Sigstore library fail (%v); refused", what, r)
		}
	}()
	return f()
}
