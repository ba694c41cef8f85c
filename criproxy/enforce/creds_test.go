package enforce

import (
	"fmt"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criguard/criguard/verifier/cosign"
)

func TestCredentialsBoundedAndPerHost(t *testing.T) {
	c := NewCredentials(2)
	a := &cosign.Auth{Username: "a", Password: "pa"}
	b := &cosign.Auth{IdentityToken: "tb"}
	c.Remember("ns", "a.example", a)
	c.Remember("ns", "b.example", b)
	if got := c.For("ns", "a.example"); got == nil || *got != *a { // a is now most recently used
		t.Fatalf("For(a) = %+v", got)
	}
	c.Remember("ns", "c.example", &cosign.Auth{RegistryToken: "tc"})
	if c.Len() != 2 {
		t.Fatalf("Len = %d, want 2", c.Len())
	}
	if c.For("ns", "b.example") != nil {
		t.Error("least recently used host b was kept beyond the bound")
	}
	if c.For("ns", "a.example") == nil || c.For("ns", "c.example") == nil {
		t.Error("recent hosts dropped")
	}
	// The returned value is a copy: callers cannot alter what is stored.
	got := c.For("ns", "a.example")
	got.Password = "changed"
	if c.For("ns", "a.example").Password != "pa" {
		t.Error("For returned the stored value, not a copy")
	}
	// Newer credentials replace older ones; empty ones forget the host.
	c.Remember("ns", "a.example", &cosign.Auth{Username: "a2", Password: "pa2"})
	if c.For("ns", "a.example").Username != "a2" {
		t.Error("newer credentials not kept")
	}
	c.Remember("ns", "a.example", &cosign.Auth{})
	if c.For("ns", "a.example") != nil {
		t.Error("empty credentials did not forget the host")
	}
}

// A namespace's credentials are never used for another namespace (issue:
// one namespace's pull secret decided another's pods).
func TestCredentialsPerNamespace(t *testing.T) {
	c := NewCredentials(8)
	c.Remember("team-a", "r.example", &cosign.Auth{Username: "a"})
	if got := c.For("team-b", "r.example"); got != nil {
		t.Fatalf("team-b got team-a's credentials %+v", got)
	}
	c.Remember("team-b", "r.example", &cosign.Auth{Username: "b"})
	if a, b := c.For("team-a", "r.example"), c.For("team-b", "r.example"); a.Username != "a" || b.Username != "b" {
		t.Errorf("team-a %+v, team-b %+v", a, b)
	}
}

func TestCredentialsDefaultBound(t *testing.T) {
	c := NewCredentials(0)
	for i := range DefaultCredentialHosts + 10 {
		c.Remember("ns", fmt.Sprintf("r%d.example", i), &cosign.Auth{Username: "u"})
	}
	if c.Len() != DefaultCredentialHosts {
		t.Errorf("Len = %d, want %d", c.Len(), DefaultCredentialHosts)
	}
	var nilStore *Credentials
	nilStore.Remember("ns", "x", &cosign.Auth{Username: "u"}) // no panic
	if nilStore.For("ns", "x") != nil {
		t.Error("nil store returned credentials")
	}
}

func TestAuthFromCRI(t *testing.T) {
	tests := []struct {
		in   *runtimeapi.AuthConfig
		want *cosign.Auth
	}{
		{nil, nil},
		{&runtimeapi.AuthConfig{ServerAddress: "r.example"}, nil}, // an address alone is no credential
		{&runtimeapi.AuthConfig{Username: "u", Password: "p", Auth: "dTpw", IdentityToken: "i", RegistryToken: "r"},
			&cosign.Auth{Username: "u", Password: "p", Auth: "dTpw", IdentityToken: "i", RegistryToken: "r"}},
	}
	for _, tc := range tests {
		got := authFromCRI(tc.in)
		if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
			t.Errorf("authFromCRI(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}
