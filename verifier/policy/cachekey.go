package policy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/imageref"
)

// cacheKey names a verdict: the policy generation, the rules that matched with
// their modes (they depend on the namespace and on how the image was spelled),
// the repository, the digest and the credentials used (what one namespace's
// secret could read must not decide for another). Only verdicts that needed a
// verification are cached.
func cacheKey(set *Set, matched []matchedRule, ref imageref.Ref, digest string, in Input, credID string) (string, bool) {
	if in.Local || digest == "" {
		return "", false
	}
	verify := false
	ids := make([]string, 0, len(matched))
	for _, m := range matched {
		if m.r.NoCache {
			return "", false
		}
		if m.r.Action == Verify {
			verify = true
		}
		ids = append(ids, m.r.ID()+"="+string(m.mode))
	}
	if !verify {
		return "", false
	}
	slices.Sort(ids)
	return fmt.Sprintf("%d\x00%s\x00%s\x00%t\x00%s\x00%s", set.Generation, ref.Repository(), digest, ref.HasDigest(), strings.Join(ids, "\x01"), credID), true
}

// cacheTTL: allows for the shortest TTL of the policies involved, anything
// with a failure for at most MaxDenyCacheTTL, and nothing that involved an
// incomplete verification (never cached, allow or deny).
func cacheTTL(d Decision, matched []matchedRule) (time.Duration, bool) {
	ttl := time.Duration(-1)
	for _, m := range matched {
		if t := m.r.Policy.CacheTTL; ttl < 0 || t < ttl {
			ttl = t
		}
	}
	if ttl <= 0 {
		return 0, false
	}
	for _, o := range d.Rules {
		if o.Result == OutcomeIncomplete || o.transient {
			return 0, false
		}
	}
	if !d.Allowed || d.Audited {
		ttl = min(ttl, MaxDenyCacheTTL)
	}
	return ttl, true
}

func cacheMax(set *Set) int {
	m := -1
	for _, p := range set.Policies {
		if m < 0 || p.CacheMax < m {
			m = p.CacheMax
		}
	}
	if m < 0 {
		return DefaultCacheMax
	}
	return m
}

// resolveTimeout is the longest timeout among the matching rules' policies
// (every rule needs the digest), else the first policy's.
func resolveTimeout(set *Set, matched []matchedRule) time.Duration {
	var t time.Duration
	for _, m := range matched {
		t = max(t, m.r.Policy.Timeout)
	}
	if t == 0 && len(set.Policies) > 0 {
		t = set.Policies[0].Timeout
	}
	if t == 0 {
		t = DefaultTimeout
	}
	return t
}

// credentialID names auth for cache keys: an HMAC under the engine's own
// random key, "" for none.
func (e *Engine) credentialID(auth *cosign.Auth) string {
	if auth == nil || *auth == (cosign.Auth{}) {
		return ""
	}
	m := hmac.New(sha256.New, e.credKey)
	for _, f := range []string{auth.Username, auth.Password, auth.Auth, auth.IdentityToken, auth.RegistryToken} {
		m.Write([]byte(f))
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil)[:16])
}
