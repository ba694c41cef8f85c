package cosign_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/criguard/criguard/internal/fixtureregistry"
	"github.com/criguard/criguard/verifier/cosign"
)

// guarded puts credentials in front of the registry: Basic user:s3cr3t-pw, or a
// bearer token "tok-123" issued by /token for a refresh token "refresh-1".
func guarded(bearer bool) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/token" {
				_ = r.ParseForm()
				if r.Form.Get("grant_type") == "refresh_token" && r.Form.Get("refresh_token") == "refresh-1" {
					json.NewEncoder(w).Encode(map[string]any{"access_token": "tok-123", "expires_in": 300})
					return
				}
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			authz := r.Header.Get("Authorization")
			ok := authz == "Basic "+base64.StdEncoding.EncodeToString([]byte("user:s3cr3t-pw"))
			if bearer {
				ok = authz == "Bearer tok-123"
			}
			// Pushing the fixtures (no Authorization) is let through.
			if !ok && r.Method != http.MethodPut && r.Method != http.MethodPost && !strings.Contains(r.URL.RawQuery, "digest=") {
				if bearer {
					w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+r.Host+`/token",service="test"`)
				} else {
					w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				}
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
		})
	}
}

func TestRegistryAuth(t *testing.T) {
	basicReg := fixtureregistry.Serve(t, true, guarded(false))
	bearerReg := fixtureregistry.Serve(t, true, guarded(true))
	cfgDir := t.TempDir()
	cfg, _ := json.Marshal(map[string]any{"auths": map[string]any{basicReg.Host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte("user:s3cr3t-pw"))}}})
	if err := os.WriteFile(filepath.Join(cfgDir, "config.json"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", cfgDir)
	cases := []struct {
		name     string
		reg      *fixtureregistry.Registry
		auth     *cosign.Auth
		keychain bool // use the node's docker config
		ok       bool
	}{
		{"basic username/password", basicReg, &cosign.Auth{Username: "user", Password: "s3cr3t-pw"}, false, true},
		{"basic auth field", basicReg, &cosign.Auth{Auth: base64.StdEncoding.EncodeToString([]byte("user:s3cr3t-pw"))}, false, true},
		{"basic wrong password", basicReg, &cosign.Auth{Username: "user", Password: "nope"}, false, false},
		{"basic anonymous", basicReg, nil, false, false},
		{"docker config fallback", basicReg, nil, true, true},
		{"bearer registry token", bearerReg, &cosign.Auth{RegistryToken: "tok-123"}, false, true},
		{"bearer identity token", bearerReg, &cosign.Auth{IdentityToken: "refresh-1"}, false, true},
		{"bearer wrong identity token", bearerReg, &cosign.Auth{IdentityToken: "stolen"}, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := cosign.Options{}
			var v *cosign.Verifier
			if c.keychain {
				v = cosign.New(o) // authn.DefaultKeychain reads $DOCKER_CONFIG
			} else {
				v = newVerifier(nil, o)
			}
			res, err := v.Verify(context.Background(), cosign.Request{Image: mustRef(t, c.reg.Ref("demo/signed-bundle", "1.0")), Auth: c.auth, Attestors: cosign.KeyAttestors(true, loadKey(t, c.reg, "a"))})
			if c.ok {
				if err != nil || !res.Allowed {
					t.Fatalf("want allowed: %+v %v", res, err)
				}
				return
			}
			if !errors.Is(err, cosign.ErrIncomplete) {
				t.Fatalf("want ErrIncomplete (registry refused the credentials), got %+v %v", res, err)
			}
			for _, secret := range []string{"s3cr3t-pw", "nope", "stolen", "tok-123", "refresh-1"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error reveals a credential: %v", err)
				}
			}
			t.Log(err)
		})
	}
}

func TestSignatureRepository(t *testing.T) {
	reg := &env{Registry: fixtureregistry.Serve(t, true, nil), referrers: true}
	s := newSigner(t, "trusted")
	d := reg.Tags[imgRepo]["1.0"]
	p := simpleSigning(d)
	l := legacyLayer(t, reg, p, b64(s.sign(t, p)))
	m, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": ociManifest, "config": json.RawMessage(emptyConfig), "layers": []layer{l}})
	if _, err := reg.PutManifest("sigs/store", strings.Replace(d, ":", "-", 1)+".sig", ociManifest, m); err != nil {
		t.Fatal(err)
	}
	v := newVerifier(nil, cosign.Options{})
	req := cosign.Request{Image: mustRef(t, reg.Ref(imgRepo, "1.0")), Attestors: cosign.KeyAttestors(true, s.key)}
	res, err := v.Verify(context.Background(), req)
	if err != nil || res.Allowed || !strings.Contains(res.Reason, "looked in "+reg.Host+"/"+imgRepo) {
		t.Fatalf("own repository: %+v %v", res, err)
	}
	req.SignatureRepository = reg.Host + "/sigs/store"
	res, err = v.Verify(context.Background(), req)
	if err != nil || !res.Allowed || res.Verified[0].Format != "legacy" {
		t.Fatalf("signature repository: %+v %v", res, err)
	}
}

// TestTokenReuse: a second verification with the same credential reuses the
// registry token instead of repeating the handshake; another credential does not.
func TestTokenReuse(t *testing.T) {
	reg := fixtureregistry.Serve(t, true, guarded(true))
	cnt := newCounter()
	v := newVerifier(cnt, cosign.Options{})
	verify := func(a *cosign.Auth) (int64, error) {
		before := cnt.n.Load()
		res, err := v.Verify(context.Background(), cosign.Request{Image: mustRef(t, reg.Ref("demo/signed-legacy", "1.0")), Auth: a, Attestors: cosign.KeyAttestors(true, loadKey(t, reg, "a"))})
		if err == nil && !res.Allowed {
			t.Fatalf("denied: %s", res.Reason)
		}
		return cnt.n.Load() - before, err
	}
	first, err := verify(&cosign.Auth{IdentityToken: "refresh-1"})
	if err != nil {
		t.Fatal(err)
	}
	second, err := verify(&cosign.Auth{IdentityToken: "refresh-1"})
	if err != nil {
		t.Fatal(err)
	}
	if second != 4 || first < second+3 {
		t.Errorf("round trips: first %d, second %d; want the second to be 4 (no 401, ping or token request)", first, second)
	}
	if _, err := verify(&cosign.Auth{IdentityToken: "stolen"}); !errors.Is(err, cosign.ErrIncomplete) {
		t.Fatalf("another credential reused the cached token: %v", err)
	}
}

// TestSignatureRepositoryCredentialsStayWithTheirRegistry: the credentials that
// came with the image (kubelet's, for the image's registry) never go to a
// signature repository on another registry; that registry gets the node's docker
// config entry for it, or nothing.
func TestSignatureRepositoryCredentialsStayWithTheirRegistry(t *testing.T) {
	imgReg := fixtureregistry.Serve(t, true, guarded(false))
	var mu sync.Mutex
	var seen []string
	sigAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte("sig-user:sig-pw"))
	sigReg := fixtureregistry.Serve(t, true, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a := r.Header.Get("Authorization")
			mu.Lock()
			seen = append(seen, a)
			mu.Unlock()
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				if a != sigAuth {
					w.Header().Set("WWW-Authenticate", `Basic realm="sigs"`)
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
			}
			h.ServeHTTP(w, r)
		})
	})
	s := newSigner(t, "trusted")
	d := imgReg.Tags[imgRepo]["1.0"]
	p := simpleSigning(d)
	pd, err := sigReg.PushBlob("sigs/store", p)
	if err != nil {
		t.Fatal(err)
	}
	l := layer{MediaType: ssMediaType, Size: int64(len(p)), Digest: pd, Annotations: map[string]string{sigAnnot: b64(s.sign(t, p))}}
	m, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": ociManifest, "config": json.RawMessage(emptyConfig), "layers": []layer{l}})
	if _, err := sigReg.PutManifest("sigs/store", strings.Replace(d, ":", "-", 1)+".sig", ociManifest, m); err != nil {
		t.Fatal(err)
	}
	imageCreds := &cosign.Auth{Username: "user", Password: "s3cr3t-pw"}
	imageBasic := base64.StdEncoding.EncodeToString([]byte("user:s3cr3t-pw"))
	req := cosign.Request{Image: mustRef(t, imgReg.Ref(imgRepo, "1.0")), Auth: imageCreds, Attestors: cosign.KeyAttestors(true, s.key), SignatureRepository: sigReg.Host + "/sigs/store"}

	cases := []struct {
		name       string
		dockerAuth map[string]any // the node's docker config
		allowed    bool
	}{
		{"no node credentials for the signature registry", map[string]any{}, false},
		{"node credentials for the signature registry", map[string]any{sigReg.Host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte("sig-user:sig-pw"))}}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			dir := t.TempDir()
			cfg, _ := json.Marshal(map[string]any{"auths": c.dockerAuth})
			if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o600); err != nil {
				t.Fatal(err)
			}
			t.Setenv("DOCKER_CONFIG", dir)
			res, err := cosign.New(cosign.Options{}).Verify(context.Background(), req)
			if c.allowed && (err != nil || !res.Allowed) {
				t.Fatalf("want allowed with the node's own credentials for the signature registry: %+v %v", res, err)
			}
			if !c.allowed && !errors.Is(err, cosign.ErrIncomplete) {
				t.Fatalf("want ErrIncomplete (signature registry refused), got %+v %v", res, err)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, a := range seen {
				if strings.Contains(a, imageBasic) {
					t.Fatalf("the image registry's credentials were sent to the signature registry: %q", a)
				}
			}
		})
	}
}
