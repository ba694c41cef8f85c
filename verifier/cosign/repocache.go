package cosign

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/criguard/criguard/verifier/registry"
)

// Authenticated repository access is reused between verifications for a while,
// so that a warm verification against a token registry skips the ping and
// token exchange. Entries are keyed by repository and a hash of the credential,
// so one credential's token never serves a request made with another.
const (
	repoCacheTTL = 4 * time.Minute // registry tokens commonly live 5 minutes
	repoCacheMax = 1024
)

type repoEntry struct {
	repo    *registry.Repo
	expires time.Time
}

type repoCache struct {
	mu sync.Mutex
	m  map[string]repoEntry
}

// repo returns access to r with the credentials for a (see authenticator).
func (v *Verifier) repo(ctx context.Context, r name.Repository, a *Auth) *registry.Repo {
	au := v.authenticator(r.Registry, a)
	cfg, err := authn.Authorization(ctx, au)
	if err != nil {
		// The credential cannot be read now: no reuse, the request will fail
		// or go anonymous exactly as it would have.
		return v.client.Repo(r, au)
	}
	raw, _ := json.Marshal(cfg)
	sum := sha256.Sum256(raw)
	key := r.Name() + "\x00" + hex.EncodeToString(sum[:])
	now := time.Now()
	c := &v.repos
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[key]; ok && now.Before(e.expires) {
		return e.repo
	}
	if c.m == nil {
		c.m = map[string]repoEntry{}
	}
	if len(c.m) >= repoCacheMax {
		for k, e := range c.m {
			if !now.Before(e.expires) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= repoCacheMax {
			clear(c.m)
		}
	}
	rp := v.client.Repo(r, au)
	c.m[key] = repoEntry{repo: rp, expires: now.Add(repoCacheTTL)}
	return rp
}
