package enforce

import (
	"container/list"
	"sync"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criguard/criguard/verifier/cosign"
)

// DefaultCredentialHosts bounds how many registry hosts' credentials are kept.
const DefaultCredentialHosts = 256

// Credentials remembers the last registry credentials kubelet sent with a
// PullImage, per registry host, so that CreateContainer (which carries none) can
// verify with the same identity. It is bounded (least recently used host is
// dropped) and never logs or exposes what it holds except through For.
type Credentials struct {
	mu    sync.Mutex
	max   int
	order *list.List // of string (host), most recently used at front
	byKey map[string]*credEntry
}

type credEntry struct {
	auth cosign.Auth
	elem *list.Element
}

// NewCredentials returns a store of at most maxHosts hosts (DefaultCredentialHosts when <= 0).
func NewCredentials(maxHosts int) *Credentials {
	if maxHosts <= 0 {
		maxHosts = DefaultCredentialHosts
	}
	return &Credentials{max: maxHosts, order: list.New(), byKey: make(map[string]*credEntry)}
}

// Remember records auth as the latest credentials for host. An empty auth
// forgets the host: kubelet sent none, so a stale secret should not be reused.
func (c *Credentials) Remember(host string, auth *cosign.Auth) {
	if c == nil || host == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[host]
	if auth == nil || *auth == (cosign.Auth{}) {
		if ok {
			c.order.Remove(e.elem)
			delete(c.byKey, host)
		}
		return
	}
	if ok {
		e.auth = *auth
		c.order.MoveToFront(e.elem)
		return
	}
	c.byKey[host] = &credEntry{auth: *auth, elem: c.order.PushFront(host)}
	for c.order.Len() > c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.byKey, oldest.Value.(string))
	}
}

// For returns a copy of the credentials last remembered for host, or nil (the
// verifier then falls back to the node's docker config).
func (c *Credentials) For(host string) *cosign.Auth {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[host]
	if !ok {
		return nil
	}
	c.order.MoveToFront(e.elem)
	a := e.auth
	return &a
}

// Len reports how many hosts are remembered.
func (c *Credentials) Len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byKey)
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
