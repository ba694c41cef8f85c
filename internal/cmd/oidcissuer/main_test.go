package main

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, host, path string) (int, []byte) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.Host = host
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, body
}

func TestIssuer(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	h := (&issuer{key: key, port: "8080"}).handler()

	for _, host := range []string{"127.0.0.1:8080", "localhost:8080"} {
		code, body := get(t, h, host, "/.well-known/openid-configuration")
		var d struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if code != http.StatusOK || json.Unmarshal(body, &d) != nil || d.Issuer != "http://"+host || d.JWKSURI != "http://"+host+"/jwks" {
			t.Errorf("discovery via %s: %d %s", host, code, body)
		}
	}
	for _, path := range []string{"/.well-known/openid-configuration", "/token?claims={}"} {
		if code, _ := get(t, h, "evil.example:8080", path); code != http.StatusNotFound {
			t.Errorf("%s via an unknown host: %d, want 404", path, code)
		}
	}
	if code, _ := get(t, h, "localhost:8080", "/token?claims=notjson"); code != http.StatusBadRequest {
		t.Errorf("token with bad claims: %d, want 400", code)
	}

	_, body := get(t, h, "localhost:8080", "/token?claims="+url.QueryEscape(`{"sub":"alice","email_verified":true}`))
	parts := strings.Split(string(body), ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a JWS", body)
	}
	_, jwks := get(t, h, "localhost:8080", "/jwks")
	var set struct{ Keys []struct{ N, E string } }
	if err := json.Unmarshal(jwks, &set); err != nil || len(set.Keys) != 1 {
		t.Fatalf("jwks %s: %v", jwks, err)
	}
	n, _ := base64.RawURLEncoding.DecodeString(set.Keys[0].N)
	e, _ := base64.RawURLEncoding.DecodeString(set.Keys[0].E)
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
		t.Fatalf("token signature does not verify with the JWKS key: %v", err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	if claims["iss"] != "http://localhost:8080" || claims["aud"] != "sigstore" || claims["sub"] != "alice" || claims["email_verified"] != true {
		t.Errorf("claims %v", claims)
	}
	if exp, iat := claims["exp"].(float64), claims["iat"].(float64); exp-iat != 600 {
		t.Errorf("token lives %vs, want 600", exp-iat)
	}
}
