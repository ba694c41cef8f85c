// Command oidcissuer is the OpenID Connect issuer of the local Sigstore stack
// that testdata/sigstore/regenerate.sh runs: Fulcio reads its discovery
// document and keys, and the script asks it for identity tokens.
//
// The issuer URL is http://<Host header>, so one process on 127.0.0.1:PORT is
// both http://127.0.0.1:PORT and http://localhost:PORT: Fulcio's config maps
// them to different issuer types (email and github-workflow). Tokens are RS256,
// audience "sigstore", valid 10 minutes, with whatever claims the caller asks
// for:
//
//	GET /token?claims={"sub":"alice@example.com","email":"alice@example.com","email_verified":true}
//
// It listens on loopback only and holds its key in memory: it is a test tool.
package main

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"time"
)

const kid = "criguard-test"

type issuer struct {
	key  *rsa.PrivateKey
	port string
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "loopback address to listen on")
	flag.Parse()
	host, port, err := net.SplitHostPort(*addr)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		log.Fatalf("oidcissuer: -addr %q must be a loopback HOST:PORT", *addr)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		log.Fatal(err)
	}
	is := &issuer{key: key, port: port}
	srv := &http.Server{Addr: *addr, Handler: is.handler(), ReadHeaderTimeout: 5 * time.Second}
	log.Printf("oidcissuer: serving on %s", *addr)
	log.Fatal(srv.ListenAndServe())
}

func (is *issuer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", is.discovery)
	mux.HandleFunc("GET /jwks", is.jwks)
	mux.HandleFunc("GET /token", is.token)
	return mux
}

// issuerURL is the URL this request reached the issuer by, if it is one of its names.
func (is *issuer) issuerURL(r *http.Request) (string, bool) {
	switch r.Host {
	case "127.0.0.1:" + is.port, "localhost:" + is.port:
		return "http://" + r.Host, true
	}
	return "", false
}

func (is *issuer) discovery(w http.ResponseWriter, r *http.Request) {
	iss, ok := is.issuerURL(r)
	if !ok {
		http.Error(w, "unknown host "+r.Host, http.StatusNotFound)
		return
	}
	writeJSON(w, map[string]any{
		"issuer":                                iss,
		"jwks_uri":                              iss + "/jwks",
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
	})
}

func (is *issuer) jwks(w http.ResponseWriter, _ *http.Request) {
	pub := is.key.PublicKey
	writeJSON(w, map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
		"n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes()),
	}}})
}

func (is *issuer) token(w http.ResponseWriter, r *http.Request) {
	iss, ok := is.issuerURL(r)
	if !ok {
		http.Error(w, "unknown host "+r.Host, http.StatusNotFound)
		return
	}
	claims := map[string]any{}
	if err := json.Unmarshal([]byte(r.URL.Query().Get("claims")), &claims); err != nil {
		http.Error(w, "claims: "+err.Error(), http.StatusBadRequest)
		return
	}
	now := time.Now()
	claims["iss"], claims["aud"] = iss, "sigstore"
	claims["iat"], claims["nbf"], claims["exp"] = now.Unix(), now.Unix(), now.Add(10*time.Minute).Unix()
	head, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": kid})
	body, err := json.Marshal(claims)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	signed := b64(head) + "." + b64(body)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, is.key, crypto.SHA256, sum[:])
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	fmt.Fprint(w, signed+"."+b64(sig))
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
