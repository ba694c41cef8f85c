package policy

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/imageref"
)

// Verifier is what the engine needs from cosign.Verifier.
type Verifier interface {
	// Resolve returns the digest a reference (tag) currently names.
	Resolve(ctx context.Context, ref imageref.Ref, auth *cosign.Auth) (digest string, err error)
	// Verify judges one digest; an error wrapping cosign.ErrIncomplete means
	// the verification could not complete.
	Verify(ctx context.Context, req cosign.Request) (cosign.Result, error)
}

// Engine evaluates images against the Store's current policy set, with a
// verdict cache and singleflight for identical concurrent verifications.
type Engine struct {
	store  *Store
	v      Verifier
	log    *slog.Logger
	now    func() time.Time
	cache  *verdictCache
	flight singleflight.Group
	slots  *slots
	// slotCount counts verifications that got no slot (SlotStats).
	slotCount slotCounters
	// credKey keys the HMAC that names credentials in cache keys: verdicts
	// are kept per credential identity without keeping anything from which a
	// password could be recovered, even in memory.
	credKey []byte
	// waitHook, when set (tests), runs when a caller starts waiting for a
	// shared verification.
	waitHook func()
}

// EngineOptions configure an Engine; zero fields take the defaults.
type EngineOptions struct {
	Logger *slog.Logger     // nil: nothing is logged
	Clock  func() time.Time // nil: time.Now (tests replace it)
	// MaxConcurrentVerifications is how many signature verifications run at
	// once in all (< 1: DefaultMaxConcurrentVerifications), and
	// MaxVerificationsPerRegistry how many for one registry (< 1 or above the
	// total: half of it, at least 1). A verification waits for a slot within
	// its own timeout; one that gets none is incomplete, and the rule's
	// failurePolicy decides, as for a registry that did not answer.
	MaxConcurrentVerifications  int
	MaxVerificationsPerRegistry int
}

// NewEngine returns an engine over store using v.
func NewEngine(store *Store, v Verifier, o EngineOptions) *Engine {
	e := &Engine{store: store, v: v, log: o.Logger, now: o.Clock, cache: newVerdictCache(),
		slots: newSlots(o.MaxConcurrentVerifications, o.MaxVerificationsPerRegistry), credKey: make([]byte, 32)}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.now == nil {
		e.now = time.Now
	}
	if _, err := rand.Read(e.credKey); err != nil {
		panic(fmt.Sprintf("policy: reading randomness for the engine: %v", err)) // crypto/rand never fails on Linux
	}
	return e
}

// CacheLen is the number of cached verdicts (metrics, tests).
func (e *Engine) CacheLen() int { return e.cache.len() }

// Evaluate judges one image. It never returns an error: every failure is a
// denial (or, where the policy says so, an audited or failed-open allow).
func (e *Engine) Evaluate(ctx context.Context, in Input) Decision {
	start := e.now()
	d := e.evaluate(ctx, in)
	if d.FailedOpen && ctx.Err() != nil {
		// The caller gave up: failing open must not turn its cancellation
		// into an allow.
		d = deny(d, fmt.Sprintf("the request ended before the verification finished: %v", ctx.Err()))
	}
	d.Duration = e.now().Sub(start)
	if e.log.Enabled(ctx, slog.LevelDebug) {
		rules := make([]string, len(d.Rules))
		for i, o := range d.Rules {
			rules[i] = o.Policy + "/" + o.Rule + "=" + o.Result
		}
		e.log.DebugContext(ctx, "policy evaluation", "operation", in.Operation, "image", d.Image, "digest", d.Digest,
			"namespace", in.Namespace, "rules", rules, "verdict", d.Verdict(), "cached", d.Cached, "generation", d.Generation)
	}
	return d
}

// evaluate: parse and check the input, find the matching rules, resolve the
// tag, then judge (through the cache) and pin the allow to the input's digest.
func (e *Engine) evaluate(ctx context.Context, in Input) Decision {
	d := Decision{Image: in.Image, Digest: in.Digest}
	set := e.store.Current()
	if set == nil {
		return deny(d, "no policy is loaded")
	}
	d.Generation = set.Generation
	ref, err := in.reference()
	if err != nil {
		return deny(d, err.Error())
	}
	d.Image = ref.String()
	want, err := pinnedDigest(ref, in)
	if err != nil {
		return deny(d, err.Error())
	}
	d.Digest = want

	matched := e.match(set, ref, in.Namespace)
	e.cache.sync(set.Generation, cacheMax(set))
	un := unmatchedFor(set, in.Namespace)
	if !enforced(matched) && un.denies() {
		// An Audit rule only reports: it does not make the image "matched"
		// for another policy's unmatchedImages: Deny.
		return un.apply(d, matched, nil)
	}
	var resolveErr error
	if !in.Local && d.Digest == "" && !deniedByRule(matched) {
		d.Digest, resolveErr = e.resolve(ctx, set, matched, ref, in.Auth)
	}
	if len(matched) == 0 {
		return un.apply(d, nil, resolveErr)
	}
	out := e.judgeCached(ctx, set, matched, ref, d, in, resolveErr)
	if !enforced(matched) && un.audits() {
		out = un.apply(out, matched, nil)
	}
	return pinned(out, want)
}

// pinnedDigest is the digest the input pins (Input.Digest or the reference's
// own), "" when it pins none.
func pinnedDigest(ref imageref.Ref, in Input) (string, error) {
	switch {
	case in.Local && in.Digest != "":
		return "", errors.New("invalid input: a local image has no repository digest to judge")
	case in.Local:
		return "", nil
	case in.Digest == "":
		return ref.Digest(), nil
	}
	if err := imageref.CheckDigest(in.Digest); err != nil {
		return "", err
	}
	if ref.HasDigest() && ref.Digest() != in.Digest {
		return "", fmt.Errorf("the reference pins %s but digest %s was asked for", ref.Digest(), in.Digest)
	}
	return in.Digest, nil
}

// resolve turns the tag into the digest every rule judges (and the proxy
// pulls), under the longest timeout of the matching rules' policies.
func (e *Engine) resolve(ctx context.Context, set *Set, matched []matchedRule, ref imageref.Ref, auth *cosign.Auth) (string, error) {
	rctx, cancel := context.WithTimeout(ctx, resolveTimeout(set, matched))
	defer cancel()
	dg, err := e.v.Resolve(rctx, ref, auth)
	timedOut := rctx.Err() != nil
	switch {
	case err != nil:
		if timedOut && !errors.Is(err, cosign.ErrIncomplete) {
			err = fmt.Errorf("%w: resolving the tag: %w", cosign.ErrIncomplete, err)
		}
		if timedOut {
			err = &timeoutError{err}
		}
		return "", err
	case imageref.CheckDigest(dg) != nil:
		return "", fmt.Errorf("resolving the tag returned an invalid digest %q", dg)
	}
	return dg, nil
}

// judgeCached judges through the verdict cache; identical concurrent
// verifications are made once and shared.
func (e *Engine) judgeCached(ctx context.Context, set *Set, matched []matchedRule, ref imageref.Ref, d Decision, in Input, resolveErr error) Decision {
	key, cacheable := cacheKey(set, matched, ref, d.Digest, in, e.credentialID(in.Auth))
	if !cacheable || resolveErr != nil {
		return e.judge(ctx, matched, ref, d, in, resolveErr)
	}
	if cd, ok := e.cache.get(key, e.now()); ok {
		cd.Image, cd.Digest, cd.Cached, cd.Generation = d.Image, d.Digest, true, set.Generation
		return cd
	}
	ch := e.flight.DoChan(key, func() (out any, err error) {
		// singleflight re-panics a panic of this function in a goroutine of
		// its own, which would end the process: a verification that panics
		// (a library choking on hostile input) is a denial instead.
		defer func() {
			if r := recover(); r != nil {
				e.log.Error("policy: verification panicked; denied", "image", d.Image, "digest", d.Digest, "panic", fmt.Sprint(r))
				out, err = deny(d, fmt.Sprintf("verification failed internally (%v); refused (a bug: please report it with criguard's log)", r)), nil
			}
		}()
		// Detached from the first caller: its cancellation must not fail
		// the others sharing this verification; rule timeouts bound it.
		vctx := context.WithoutCancel(ctx)
		dec := e.judge(vctx, matched, ref, d, in, nil)
		if ttl, ok := cacheTTL(dec, matched); ok {
			e.cache.put(set.Generation, key, dec, e.now().Add(ttl))
		}
		return dec, nil
	})
	if e.waitHook != nil {
		e.waitHook()
	}
	select {
	case r := <-ch:
		out := r.Val.(Decision)
		out.Cached = false
		out.Image = d.Image
		return out
	case <-ctx.Done():
		return deny(d, fmt.Sprintf("the request ended before the verification finished: %v", ctx.Err()))
	}
}

// matchedRule is a rule that applies, with its mode for this namespace.
type matchedRule struct {
	r    *Rule
	mode Mode
}

func (e *Engine) match(set *Set, ref imageref.Ref, ns string) []matchedRule {
	var out []matchedRule
	sp := ref.Spellings()
	for _, p := range set.Policies {
		for _, r := range p.Rules {
			if !r.appliesToNamespace(ns) || !matchesAny(sp, r.Images) || excludedBy(sp, r.ExcludeImages) {
				continue
			}
			out = append(out, matchedRule{r: r, mode: r.modeFor(ns)})
		}
	}
	return out
}

// enforced reports whether any matching rule is in Enforce mode: only such a
// rule makes an image "matched" for unmatchedImages: Deny.
func enforced(matched []matchedRule) bool {
	for _, m := range matched {
		if m.mode == Enforce {
			return true
		}
	}
	return false
}

// deniedByRule reports an enforced Deny rule: the answer needs no digest.
func deniedByRule(matched []matchedRule) bool {
	for _, m := range matched {
		if m.r.Action == Deny && m.mode == Enforce {
			return true
		}
	}
	return false
}
