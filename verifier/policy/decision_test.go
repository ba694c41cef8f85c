package policy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/criguard/criguard/verifier/keys"
)

func TestExplain(t *testing.T) {
	dg := digestOf('1')
	tests := []struct {
		d    Decision
		want string
		v    Verdict
	}{
		{Decision{Allowed: true, Image: "ghcr.io/a/b:1", Digest: dg, Policy: "p", Rule: "r", Reason: "1 of keys [k]: verified by k"},
			"image ghcr.io/a/b:1 (digest " + dg + ") allowed by policy p rule r: 1 of keys [k]: verified by k", VerdictAllow},
		{Decision{Allowed: true, Audited: true, Image: "ghcr.io/a/b:1", Digest: dg, Policy: "p", Rule: "r", Reason: "audit: would deny: unsigned"},
			"image ghcr.io/a/b:1 (digest " + dg + ") allowed by policy p rule r: audit: would deny: unsigned", VerdictAudit},
		{Decision{Allowed: true, Audited: true, FailedOpen: true, Incomplete: true, Image: "x", Digest: dg, Policy: "p", Rule: "r", Reason: "failed open (failurePolicy Ignore): timeout"},
			"image x (digest " + dg + ") allowed by policy p rule r: failed open (failurePolicy Ignore): timeout", VerdictFailedOpen},
		{Decision{Image: "x", Policy: "p", Reason: "no rule matches this image, and unmatchedImages is Deny"},
			"image x (digest unresolved) denied by policy p: no rule matches this image, and unmatchedImages is Deny", VerdictDeny},
		{Decision{Image: "x", Digest: dg, Incomplete: true, Policy: "p", Rule: "r", Reason: "timeout"},
			"image x (digest " + dg + ") denied (could not verify) by policy p rule r: timeout", VerdictDeny},
		{Decision{Image: "x"}, "image x (digest unresolved) denied: no reason recorded", VerdictDeny},
	}
	for _, tt := range tests {
		if got := tt.d.Explain(); got != tt.want {
			t.Errorf("Explain() =\n  %s\nwant\n  %s", got, tt.want)
		}
		if got := tt.d.Verdict(); got != tt.v {
			t.Errorf("Verdict() = %s, want %s", got, tt.v)
		}
	}
}

// TestPinnedIsTheOneDigestCheck: an allow reached for another digest than the
// input pinned is a denial, whatever produced it.
func TestPinnedIsTheOneDigestCheck(t *testing.T) {
	d := pinned(Decision{Allowed: true, Audited: true, Digest: digestOf('1')}, digestOf('2'))
	if d.Allowed || d.Audited || !strings.Contains(d.Reason, digestOf('2')) {
		t.Fatalf("allow for another digest kept: %+v", d)
	}
	if d := pinned(Decision{Allowed: true, Digest: digestOf('1')}, ""); !d.Allowed {
		t.Fatal("no pin: the resolved digest stands")
	}
	// A verifier that answers for another digest fails the rule.
	e := newEnv(t)
	eng := e.engine(native("", verifyA))
	e.v.sign("registry.example.com/team/app@"+digestOf('3'), e.fpA)
	e.v.answerDigest = digestOf('4')
	got := eng.Evaluate(context.Background(), Input{Image: "registry.example.com/team/app@" + digestOf('3')})
	if got.Allowed || !strings.Contains(got.Reason, "judged digest "+digestOf('4')) {
		t.Fatalf("verifier answer for another digest: %+v", got)
	}
}

// TestSignersCountedByKeyMaterial: the same key listed twice is one signer.
// The engine's test double counts as the verifier does (cosign.Signers), so
// this fails if either regresses to counting entries.
func TestSignersCountedByKeyMaterial(t *testing.T) {
	e := newEnv(t)
	eng := e.engine(native("", `  - name: two
    images: ["registry.example.com/*"]
    attestors:
      count: 2
      entries:
      - key: {data: KEYA}
      - key: {data: KEYA}
`))
	e.v.sign("registry.example.com/team/app@"+digestOf('1'), e.fpA)
	d := eng.Evaluate(context.Background(), Input{Image: "registry.example.com/team/app@" + digestOf('1')})
	if d.Allowed || !strings.Contains(d.Reason, "distinct") {
		t.Fatalf("one key listed twice met a count of 2: %+v", d)
	}
}

// TestSemanticsAreData: evaluation follows the policy's recorded semantics,
// never its kind. An ImagePolicy given Kyverno's semantics behaves as Kyverno:
// an incomplete verification under failurePolicy Fail denies even in Audit
// mode, and a registry error that is not a network error fails the rule.
func TestSemanticsAreData(t *testing.T) {
	for _, kyverno := range []bool{false, true} {
		e := newEnv(t)
		set := mustLoad(t, e.expand(native("  mode: Audit\n", verifyA)))
		p := set.Policies[0]
		p.OnlyNetworkErrorsIncomplete, p.IncompleteBlocksAnyMode = kyverno, kyverno
		eng := NewEngine(NewStaticStore(set), e.v, EngineOptions{Clock: e.now})
		e.v.incomplete[digestOf('1')] = true
		e.v.serverError[digestOf('2')] = true
		net := eng.Evaluate(context.Background(), Input{Image: "registry.example.com/team/app@" + digestOf('1')})
		srv := eng.Evaluate(context.Background(), Input{Image: "registry.example.com/team/app@" + digestOf('2')})
		if net.Allowed == kyverno {
			t.Errorf("kyverno semantics %v: network error under Audit/Fail allowed=%v (%s)", kyverno, net.Allowed, net.Reason)
		}
		wantSrv := OutcomeIncomplete
		if kyverno {
			wantSrv = OutcomeFail
		}
		if len(srv.Rules) != 1 || srv.Rules[0].Result != wantSrv || !srv.Allowed {
			t.Errorf("kyverno semantics %v: server error = %+v, want an audited %s", kyverno, srv.Rules, wantSrv)
		}
	}
}

// TestForKeys: the --key policy of `criguard verify` is an ordinary set.
func TestForKeys(t *testing.T) {
	e := newEnv(t)
	a := mustLoad(t, e.expand(native("", verifyA))).Policies[0].Rules[0].Attestors[0].Attestors[0].Key
	eng := NewEngine(NewStaticStore(ForKeys([]*keys.Key{a}, true, 0, "", time.Second)), e.v, EngineOptions{})
	e.v.sign("ghcr.io/x/y@"+digestOf('1'), e.fpA)
	if d := eng.Evaluate(context.Background(), Input{Image: "ghcr.io/x/y@" + digestOf('1')}); !d.Allowed || d.Rule != "--key" {
		t.Fatalf("%+v", d)
	}
	if d := eng.Evaluate(context.Background(), Input{Image: "ghcr.io/x/y@" + digestOf('2')}); d.Allowed {
		t.Fatalf("unsigned allowed: %+v", d)
	}
}
