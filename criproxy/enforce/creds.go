package enforce

import (
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criguard/criguard/verifier/cosign"
)

// DefaultCredentialHosts bounds how many (namespace, registry host) pairs'
// credentials are kept.
const DefaultCredentialHosts = 256

// Credentials remembers the registry credentials kubelet sent with a PullImage
// that went through, per namespace and registry host, so that CreateContainer
// (which carries none) verifies with the same identity. A namespace's secret is
// never used to judge another namespace's pods: one team's wrong or hostile pull
// secret must not decide whether another team's images verify. Bounded (least
// recently used entry dropped); what it holds is never logged.
type Credentials struct {
	byKey *lru[credKey, cosign.Auth]
}

type credKey struct{ namespace, host string }

// NewCredentials returns a store of at most max entries (DefaultCredentialHosts when <= 0).
func NewCredentials(max int) *Credentials {
	if max <= 0 {
		max = DefaultCredentialHosts
	}
	return &Credentials{byKey: newLRU[credKey, cosign.Auth](max)}
}

// Remember records auth as namespace's latest credentials for host; a nil or
// empty auth forgets them. PullImage calls it only with the credentials of a
// pull that went through, so a pull that carried none leaves what the namespace
// last pulled with from host in place.
func (c *Credentials) Remember(namespace, host string, auth *cosign.Auth) {
	if c == nil || host == "" {
		return
	}
	k := credKey{namespace, host}
	if auth == nil || *auth == (cosign.Auth{}) {
		c.byKey.remove(k)
		return
	}
	c.byKey.put(k, *auth)
}

// For returns a copy of the credentials namespace last used for host, or nil
// (the verifier then falls back to the node's docker config).
func (c *Credentials) For(namespace, host string) *cosign.Auth {
	if c == nil {
		return nil
	}
	a, ok := c.byKey.get(credKey{namespace, host})
	if !ok {
		return nil
	}
	return &a
}

// Len reports how many (namespace, host) pairs are remembered.
func (c *Credentials) Len() int {
	if c == nil {
		return 0
	}
	return c.byKey.len()
}

// authFromCRI converts kubelet's AuthConfig; nil or empty gives nil.
func authFromCRI(a *runtimeapi.AuthConfig) *cosign.Auth {
	if a == nil {
		return nil
	}
	out := &cosign.Auth{
		Username:      a.GetUsername(),
		Password:      a.GetPassword(),
		Auth:          a.GetAuth(),
		IdentityToken: a.GetIdentityToken(),
		RegistryToken: a.GetRegistryToken(),
	}
	if *out == (cosign.Auth{}) {
		return nil
	}
	return out
}
