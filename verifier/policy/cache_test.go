package policy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/criguard/criguard/verifier/cosign"
)

const cacheRepo = "registry.example.com/team/app"

func cacheEnv(t *testing.T, spec string) (*env, *Engine) {
	e := newEnv(t)
	for _, c := range "123456789" {
		e.v.sign(cacheRepo+"@"+digestOf(byte(c)), e.fpA)
	}
	return e, e.engine(native(spec, verifyA))
}

func eval(eng *Engine, image, ns string) Decision {
	return eng.Evaluate(context.Background(), Input{Image: image, Namespace: ns})
}

// evalConcurrently starts n evaluations at once, the i-th of image(i); wait
// returns their decisions once every one has ended.
func evalConcurrently(eng *Engine, n int, image func(i int) string) (wait func() []Decision) {
	results := make([]Decision, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = eval(eng, image(i), "")
		}()
	}
	return func() []Decision {
		wg.Wait()
		return results
	}
}

func TestCacheAllowTTL(t *testing.T) {
	e, eng := cacheEnv(t, "  cache: {ttl: 1m}\n")
	img := cacheRepo + "@" + digestOf('1')
	if d := eval(eng, img, ""); !d.Allowed || d.Cached {
		t.Fatalf("first: %+v", d)
	}
	e.advance(59 * time.Second)
	if d := eval(eng, img, ""); !d.Allowed || !d.Cached {
		t.Fatalf("within ttl: %+v", d)
	}
	if n := e.v.verifies.Load(); n != 1 {
		t.Fatalf("verifies = %d", n)
	}
	e.advance(2 * time.Second)
	if d := eval(eng, img, ""); !d.Allowed || d.Cached {
		t.Fatalf("after ttl: %+v", d)
	}
	if n := e.v.verifies.Load(); n != 2 {
		t.Fatalf("verifies = %d", n)
	}
}

func TestCacheDenyCapped(t *testing.T) {
	e, eng := cacheEnv(t, "  cache: {ttl: 10m}\n")
	img := cacheRepo + "@" + digestOf('a') // unsigned
	if d := eval(eng, img, ""); d.Allowed || d.Cached {
		t.Fatalf("%+v", d)
	}
	e.advance(29 * time.Second)
	if d := eval(eng, img, ""); d.Allowed || !d.Cached {
		t.Fatalf("within 30s: %+v", d)
	}
	e.advance(2 * time.Second)
	if d := eval(eng, img, ""); d.Allowed || d.Cached {
		t.Fatalf("after 30s: %+v", d)
	}
	// A signature added meanwhile is seen once the denial expires.
	e.v.sign(img, e.fpA)
	e.advance(31 * time.Second)
	if d := eval(eng, img, ""); !d.Allowed {
		t.Fatalf("after signing: %+v", d)
	}
}

func TestCacheMaxEntries(t *testing.T) {
	e, eng := cacheEnv(t, "  cache: {maxEntries: 2}\n")
	for _, c := range "123" {
		eval(eng, cacheRepo+"@"+digestOf(byte(c)), "")
	}
	if eng.CacheLen() != 2 {
		t.Fatalf("len %d", eng.CacheLen())
	}
	if d := eval(eng, cacheRepo+"@"+digestOf('3'), ""); !d.Cached {
		t.Fatal("most recent evicted")
	}
	if d := eval(eng, cacheRepo+"@"+digestOf('1'), ""); d.Cached {
		t.Fatal("least recent kept")
	}
	if n := e.v.verifies.Load(); n != 4 {
		t.Fatalf("verifies %d", n)
	}
}

func TestCacheDisabled(t *testing.T) {
	for _, spec := range []string{"  cache: {maxEntries: 0}\n", "  cache: {ttl: 0s}\n"} {
		e, eng := cacheEnv(t, spec)
		img := cacheRepo + "@" + digestOf('1')
		eval(eng, img, "")
		if d := eval(eng, img, ""); d.Cached || e.v.verifies.Load() != 2 {
			t.Fatalf("%s: cached %+v", spec, d)
		}
	}
}

func TestCacheNeverKeepsIncomplete(t *testing.T) {
	for _, fp := range []string{"Fail", "Ignore"} {
		e, eng := cacheEnv(t, "  failurePolicy: "+fp+"\n")
		img := cacheRepo + "@" + digestOf('9')
		e.v.incomplete[digestOf('9')] = true
		first := eval(eng, img, "")
		second := eval(eng, img, "")
		if second.Cached || e.v.verifies.Load() != 2 {
			t.Fatalf("%s: incomplete verdict cached: %+v", fp, second)
		}
		if fp == "Ignore" && (!first.FailedOpen || !first.Allowed) {
			t.Fatalf("%+v", first)
		}
		// Once the registry is back, the real verdict is found.
		delete(e.v.incomplete, digestOf('9'))
		if d := eval(eng, img, ""); !d.Allowed || d.FailedOpen {
			t.Fatalf("%s: after recovery %+v", fp, d)
		}
	}
}

func TestCacheRepositoryAndNamespaceInKey(t *testing.T) {
	e := newEnv(t)
	d1 := digestOf('1')
	e.v.sign(cacheRepo+"@"+d1, e.fpA)
	eng := e.engine(native("", `  - name: all
    images: ["registry.example.com/*"]
    attestors:
      entries:
      - key: {data: KEYA}
  - name: prod
    images: ["registry.example.com/*"]
    namespaces: ["prod"]
    attestors:
      entries:
      - key: {data: KEYB}
`))
	if d := eval(eng, cacheRepo+"@"+d1, "dev"); !d.Allowed {
		t.Fatalf("dev: %+v", d)
	}
	// Same digest, another repository: not served from repo A's verdict.
	if d := eval(eng, "registry.example.com/team/copy@"+d1, "dev"); d.Allowed || d.Cached {
		t.Fatalf("copy: %+v", d)
	}
	// Same image, a namespace with one more rule: not served from dev's verdict.
	if d := eval(eng, cacheRepo+"@"+d1, "prod"); d.Allowed || d.Cached {
		t.Fatalf("prod: %+v", d)
	}
	if d := eval(eng, cacheRepo+"@"+d1, "dev2"); !d.Allowed || !d.Cached {
		t.Fatalf("dev2 shares dev's rule set: %+v", d)
	}
}

func TestCacheGenerationChange(t *testing.T) {
	e := newEnv(t)
	d1 := digestOf('1')
	e.v.sign(cacheRepo+"@"+d1, e.fpA)
	dir := t.TempDir()
	path := writeFile(t, dir, "p.yaml", e.expand(native("", verifyA)))
	store, err := NewStore(path, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(store, e.v, EngineOptions{Clock: e.now})
	img := cacheRepo + "@" + d1
	if d := eval(eng, img, ""); !d.Allowed {
		t.Fatalf("%+v", d)
	}
	if d := eval(eng, img, ""); !d.Cached {
		t.Fatal("not cached")
	}
	// Same content rewritten: same generation, cache kept.
	writeFile(t, dir, "p.yaml", e.expand(native("", verifyA)))
	if err := store.Reload(); err != nil {
		t.Fatal(err)
	}
	if d := eval(eng, img, ""); !d.Cached || d.Generation != 1 {
		t.Fatalf("unchanged reload dropped the cache: %+v", d)
	}
	// The key changes to B: the allow under generation 1 must not be served.
	writeFile(t, dir, "p.yaml", e.expand(native("", `  - name: team
    images: ["registry.example.com/team/*"]
    attestors:
      entries:
      - key: {data: KEYB}
`)))
	if err := store.Reload(); err != nil {
		t.Fatal(err)
	}
	if d := eval(eng, img, ""); d.Allowed || d.Cached || d.Generation != 2 {
		t.Fatalf("after key change: %+v", d)
	}
}

func TestSingleflight(t *testing.T) {
	const n = 8
	e, eng := cacheEnv(t, "")
	e.v.gate = make(chan struct{})
	var waiting sync.WaitGroup
	waiting.Add(n)
	eng.waitHook = waiting.Done
	img := cacheRepo + "@" + digestOf('1')
	wait := evalConcurrently(eng, n, func(int) string { return img })
	waiting.Wait() // every caller has joined the flight
	close(e.v.gate)
	results := wait()
	if got := e.v.verifies.Load(); got != 1 {
		t.Fatalf("%d concurrent identical evaluations made %d verify calls, want 1", n, got)
	}
	for i, d := range results {
		if !d.Allowed {
			t.Fatalf("result %d: %+v", i, d)
		}
	}
}

// A caller that gives up does not fail the others sharing its verification.
func TestSingleflightCallerCancel(t *testing.T) {
	e, eng := cacheEnv(t, "")
	e.v.gate = make(chan struct{})
	var joined sync.WaitGroup
	joined.Add(2)
	eng.waitHook = joined.Done
	img := cacheRepo + "@" + digestOf('1')
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan Decision)
	go func() { first <- eng.Evaluate(ctx, Input{Image: img}) }()
	second := make(chan Decision)
	go func() { second <- eval(eng, img, "") }()
	joined.Wait() // both wait for the one verification
	cancel()
	if d := <-first; d.Allowed {
		t.Fatalf("cancelled caller allowed: %+v", d)
	}
	close(e.v.gate)
	if d := <-second; !d.Allowed {
		t.Fatalf("other caller: %+v", d)
	}
	if n := e.v.verifies.Load(); n != 1 {
		t.Fatalf("verifies %d", n)
	}
}

func BenchmarkEvaluateCached(b *testing.B) {
	dir := b.TempDir()
	v := newFake()
	key := testKey(b)
	d1 := digestOf('1')
	v.sign(cacheRepo+"@"+d1, fingerprint(b, key))
	writeFile(b, dir, "k.pub", key)
	path := writeFile(b, dir, "p.yaml", native("", `  - name: team
    images: ["registry.example.com/team/*"]
    namespaces: ["prod-*", "default"]
    attestors:
      entries:
      - key: {file: k.pub}
`))
	store, err := NewStore(path, StoreOptions{})
	if err != nil {
		b.Fatal(err)
	}
	eng := NewEngine(store, v, EngineOptions{})
	in := Input{Image: cacheRepo + ":v1", Digest: d1, Namespace: "default"}
	if d := eng.Evaluate(context.Background(), in); !d.Allowed {
		b.Fatal(d.Reason)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if d := eng.Evaluate(context.Background(), in); !d.Cached {
			b.Fatal("not cached")
		}
	}
	_ = os.Remove(filepath.Join(dir, "k.pub"))
	_ = fmt.Sprint()
}

func TestCacheGenerationOnlyForward(t *testing.T) {
	c := newVerdictCache()
	c.sync(2, 10)
	c.put(2, "k", Decision{Allowed: true}, time.Unix(100, 0))
	c.sync(1, 10) // a straggler under the old set
	if _, ok := c.get("k", time.Unix(50, 0)); !ok {
		t.Fatal("old generation emptied the cache")
	}
	c.put(1, "old", Decision{Allowed: true}, time.Unix(100, 0))
	if _, ok := c.get("old", time.Unix(50, 0)); ok {
		t.Fatal("verdict of an old generation entered the cache")
	}
	c.sync(3, 10)
	if c.len() != 0 {
		t.Fatal("new generation kept old verdicts")
	}
}

func TestFailOpenNotOnCancel(t *testing.T) {
	e, eng := cacheEnv(t, "  failurePolicy: Ignore\n")
	e.v.incomplete[digestOf('1')] = true
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if d := eng.Evaluate(ctx, Input{Image: cacheRepo + "@" + digestOf('1')}); d.Allowed {
		t.Fatalf("%+v", d)
	}
}

// TestMaxConcurrentVerifications: distinct verifications beyond the limit wait
// for a turn (memory stays bounded under a flood), and a caller whose deadline
// passes while waiting is denied.
func TestMaxConcurrentVerifications(t *testing.T) {
	const limit, n = 3, 6 // digests a..f: digestOf needs hex
	e := newEnv(t)
	for i := range n {
		e.v.sign(cacheRepo+"@"+digestOf(byte('a'+i)), e.fpA)
	}
	eng := NewEngine(NewStaticStore(mustLoad(t, e.expand(native("", verifyA)))), e.v, EngineOptions{Clock: e.now, MaxConcurrentVerifications: limit, MaxVerificationsPerRegistry: limit})
	e.v.gate = make(chan struct{})
	e.v.entered = make(chan struct{}, n)
	wait := evalConcurrently(eng, n, func(i int) string { return cacheRepo + "@" + digestOf(byte('a'+i)) })
	for range limit {
		<-e.v.entered
	}
	// The limit is reached: nobody else may enter while the gate is shut.
	select {
	case <-e.v.entered:
		t.Fatalf("a verification started beyond the limit of %d", limit)
	case <-time.After(200 * time.Millisecond):
	}
	close(e.v.gate)
	results := wait()
	if got := e.v.verifies.Load(); got != n {
		t.Fatalf("verify calls = %d, want %d", got, n)
	}
	for i, d := range results {
		if !d.Allowed {
			t.Fatalf("result %d denied after waiting for a turn: %s", i, d.Reason)
		}
	}

	// No turn within the timeout: incomplete, denied under failurePolicy Fail.
	// The first holds the only turn (its timeout is long); the second caller's
	// own deadline ends its wait.
	short := NewEngine(NewStaticStore(mustLoad(t, e.expand(native("  verificationTimeout: 30s\n", verifyA)))), e.v, EngineOptions{Clock: e.now, MaxConcurrentVerifications: 1, MaxVerificationsPerRegistry: 1})
	e.v.gate = make(chan struct{})
	e.v.entered = make(chan struct{}, 2)
	first := make(chan Decision)
	go func() { first <- eval(short, cacheRepo+"@"+digestOf('a'), "") }()
	<-e.v.entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	d := short.Evaluate(ctx, Input{Image: cacheRepo + "@" + digestOf('b')})
	if d.Allowed {
		t.Fatalf("a verification that got no turn within the caller's deadline was allowed: %+v", d)
	}
	if got := e.v.verifies.Load(); got != n+1 {
		t.Fatalf("verify calls = %d, want %d: the second started while the first held the only turn", got, n+1)
	}
	close(e.v.gate)
	<-first
}

// Verdicts are kept per credential identity: what one namespace's pull secret
// could (or could not) read never decides for a caller with other credentials
// (issue 11: a wrong secret in namespace A made B's pulls fail from cache).
func TestCacheCredentialsInKey(t *testing.T) {
	e, eng := cacheEnv(t, "  cache: {ttl: 10m}\n")
	dg := digestOf('4')
	e.v.private[dg] = "alice"
	img := cacheRepo + "@" + dg
	judge := func(auth *cosign.Auth) Decision {
		return eng.Evaluate(context.Background(), Input{Image: img, Namespace: "team", Auth: auth})
	}
	alice := &cosign.Auth{Username: "alice", Password: "pw"}
	if d := judge(alice); !d.Allowed || d.Cached {
		t.Fatalf("alice: %+v", d)
	}
	if d := judge(&cosign.Auth{Username: "alice", Password: "pw"}); !d.Allowed || !d.Cached {
		t.Fatalf("the same credentials again are served from cache: %+v", d)
	}
	for _, tc := range []struct {
		auth    *cosign.Auth
		allowed bool
	}{
		{nil, false},
		{&cosign.Auth{Username: "mallory", Password: "x"}, false},
		{&cosign.Auth{Username: "alice", Password: "other"}, true}, // the fake registry checks the user only
	} {
		if d := judge(tc.auth); d.Allowed != tc.allowed || d.Cached {
			t.Fatalf("%+v: got allowed=%v cached=%v, want allowed=%v judged afresh: %s", tc.auth, d.Allowed, d.Cached, tc.allowed, d.Reason)
		}
	}
	// The failures were incomplete (401): not cached; alice's verdict stands.
	if d := judge(alice); !d.Allowed || !d.Cached {
		t.Fatalf("alice after the others: %+v", d)
	}
	if n := e.v.verifies.Load(); n != 4 {
		t.Fatalf("verifies = %d, want 4 (alice once, each other identity once)", n)
	}
}

// Under Kyverno's semantics a registry error such as a 401 fails the rule (as
// Kyverno does), but the denial is never cached: other credentials, or the
// same ones a moment later, may verify.
func TestCacheKyvernoRegistryErrorNotCached(t *testing.T) {
	e := newEnv(t)
	dg := digestOf('5')
	e.v.sign("ghcr.io/team/app@"+dg, e.fpA)
	e.v.private[dg] = "alice"
	eng := e.engine(enforceDoc(`{any: [{resources: {kinds: [Pod]}}]}`, ""))
	in := Input{Image: "ghcr.io/team/app@" + dg, Namespace: "b"}
	for i := range 2 {
		if d := eng.Evaluate(context.Background(), in); d.Allowed || d.Cached || !strings.Contains(d.Reason, "401") {
			t.Fatalf("evaluation %d: %+v", i, d)
		}
	}
	if n := e.v.verifies.Load(); n != 2 {
		t.Fatalf("verifies = %d: the registry-error denial was cached", n)
	}
	in.Auth = &cosign.Auth{Username: "alice"}
	if d := eng.Evaluate(context.Background(), in); !d.Allowed {
		t.Fatalf("with alice's credentials: %+v", d)
	}
}

// A verification that panics is a denial, not the end of the process
// (singleflight would re-panic it in a goroutine of its own), and not cached.
func TestVerificationPanicDenies(t *testing.T) {
	e, eng := cacheEnv(t, "")
	dg := digestOf('6')
	e.v.panics[dg] = true
	for i := range 2 {
		d := eval(eng, cacheRepo+"@"+dg, "")
		if d.Allowed || d.Cached || !strings.Contains(d.Reason, "failed internally") {
			t.Fatalf("evaluation %d: %+v", i, d)
		}
	}
}
