package cosign_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/criguard/criguard/internal/fixtureregistry"
	"github.com/criguard/criguard/internal/testkey"
	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/keys"
	"github.com/criguard/criguard/verifier/registry"
)

const (
	imgRepo      = "demo/unsigned"
	ociManifest  = "application/vnd.oci.image.manifest.v1+json"
	ociIndex     = "application/vnd.oci.image.index.v1+json"
	ssMediaType  = "application/vnd.dev.cosign.simplesigning.v1+json"
	bundleMT     = "application/vnd.dev.sigstore.bundle.v0.3+json"
	sigAnnot     = "dev.cosignproject.cosign/signature"
	emptyConfig  = `{"mediaType":"application/vnd.oci.empty.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}`
	signPredType = "https://sigstore.dev/cosign/sign/v1"
)

// testSigner is a fresh ECDSA key that signs like cosign does.
type testSigner struct {
	signer signature.Signer
	key    *keys.Key
}

func newSigner(t testing.TB, name string) *testSigner {
	t.Helper()
	s, pemData := testkey.New(t)
	k, err := keys.Parse(name, pemData, "")
	if err != nil {
		t.Fatal(err)
	}
	return &testSigner{signer: s, key: k}
}

func (s *testSigner) sign(t testing.TB, msg []byte) []byte {
	t.Helper()
	sig, err := s.signer.SignMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func simpleSigning(digest string) []byte {
	return []byte(`{"critical":{"identity":{"docker-reference":"x/y"},"image":{"docker-manifest-digest":"` + digest + `"},"type":"cosign container image signature"},"optional":null}`)
}

type layer struct {
	MediaType   string            `json:"mediaType"`
	Size        int64             `json:"size"`
	Digest      string            `json:"digest"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// pushLegacy writes a .sig manifest for digest with the given layers.
func pushLegacy(t testing.TB, reg *env, digest string, layers []layer) {
	t.Helper()
	m, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": ociManifest, "config": json.RawMessage(emptyConfig), "layers": layers})
	if _, err := reg.PutManifest(imgRepo, strings.Replace(digest, ":", "-", 1)+".sig", ociManifest, m); err != nil {
		t.Fatal(err)
	}
}

// legacyLayer pushes payload and returns a layer signed with sig.
func legacyLayer(t testing.TB, reg *env, payload []byte, sig string) layer {
	t.Helper()
	d, err := reg.PushBlob(imgRepo, payload)
	if err != nil {
		t.Fatal(err)
	}
	return layer{MediaType: ssMediaType, Size: int64(len(payload)), Digest: d, Annotations: map[string]string{sigAnnot: sig}}
}

func pae(payloadType string, payload []byte) []byte {
	return []byte(fmt.Sprintf("DSSEv1 %d %s %d %s", len(payloadType), payloadType, len(payload), payload))
}

// bundleJSON makes a cosign-style bundle over an in-toto statement.
func bundleJSON(t testing.TB, s *testSigner, subjectHex, predicateType string) []byte {
	t.Helper()
	st := []byte(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"` + subjectHex + `"}}],"predicateType":"` + predicateType + `","predicate":{}}`)
	sig := s.sign(t, pae("application/vnd.in-toto+json", st))
	return []byte(`{"mediaType":"` + bundleMT + `","verificationMaterial":{"publicKey":{"hint":"x"}},"dsseEnvelope":{"payload":"` +
		base64.StdEncoding.EncodeToString(st) + `","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"` + base64.StdEncoding.EncodeToString(sig) + `"}]}}`)
}

// pushBundle attaches bundle to digest as a referrer and returns the manifest digest.
func pushBundle(t testing.TB, reg *env, digest string, bundle []byte) string {
	t.Helper()
	bd, err := reg.PushBlob(imgRepo, bundle)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": ociManifest, "artifactType": bundleMT, "config": json.RawMessage(emptyConfig),
		"layers":  []layer{{MediaType: bundleMT, Size: int64(len(bundle)), Digest: bd}},
		"subject": map[string]any{"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 587, "digest": digest},
	})
	md, err := reg.PutManifest(imgRepo, "", ociManifest, m)
	if err != nil {
		t.Fatal(err)
	}
	if !reg.referrers {
		// What cosign writes where the registry has no referrers API: an index
		// of the referrers under the sha256-<hex> tag.
		reg.fallback = append(reg.fallback, map[string]any{"mediaType": ociManifest, "size": len(m), "digest": md, "artifactType": bundleMT})
		ix, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": ociIndex, "manifests": reg.fallback})
		if _, err := reg.PutManifest(imgRepo, strings.Replace(digest, ":", "-", 1), ociIndex, ix); err != nil {
			t.Fatal(err)
		}
	}
	return md
}

// env is a fixture registry and how signatures are attached to it.
type env struct {
	*fixtureregistry.Registry
	referrers bool
	fallback  []map[string]any
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// TestCraftedSignatures covers what a careless verifier gets wrong: every case is
// a denial with a reason, or an allow only for a correct signature.
func TestCraftedSignatures(t *testing.T) {
	s := newSigner(t, "trusted")
	other := newSigner(t, "other")
	cases := []struct {
		name    string
		setup   func(t *testing.T, reg *env, digest string)
		allowed bool
		reason  string
	}{
		{"legacy ok", func(t *testing.T, reg *env, d string) {
			p := simpleSigning(d)
			pushLegacy(t, reg, d, []layer{legacyLayer(t, reg, p, b64(s.sign(t, p)))})
		}, true, ""},
		{"legacy for another digest", func(t *testing.T, reg *env, d string) {
			p := simpleSigning("sha256:" + strings.Repeat("0", 64))
			pushLegacy(t, reg, d, []layer{legacyLayer(t, reg, p, b64(s.sign(t, p)))})
		}, false, "signature for another digest"},
		{"legacy by untrusted key", func(t *testing.T, reg *env, d string) {
			p := simpleSigning(d)
			pushLegacy(t, reg, d, []layer{legacyLayer(t, reg, p, b64(other.sign(t, p)))})
		}, false, "1 signed by keys not trusted here"},
		{"legacy signature not base64", func(t *testing.T, reg *env, d string) {
			pushLegacy(t, reg, d, []layer{legacyLayer(t, reg, simpleSigning(d), "%%%not base64")})
		}, false, "not base64"},
		{"legacy signature missing", func(t *testing.T, reg *env, d string) {
			pushLegacy(t, reg, d, []layer{legacyLayer(t, reg, simpleSigning(d), "")})
		}, false, "no dev.cosignproject.cosign/signature annotation"},
		{"legacy payload not JSON but signed", func(t *testing.T, reg *env, d string) {
			p := []byte(`{"critical":`)
			pushLegacy(t, reg, d, []layer{legacyLayer(t, reg, p, b64(s.sign(t, p)))})
		}, false, "not valid JSON"},
		{"legacy payload without digest", func(t *testing.T, reg *env, d string) {
			p := []byte(`{"critical":{"image":{}}}`)
			pushLegacy(t, reg, d, []layer{legacyLayer(t, reg, p, b64(s.sign(t, p)))})
		}, false, "docker-manifest-digest"},
		{"legacy manifest not JSON", func(t *testing.T, reg *env, d string) {
			if _, err := reg.PutManifest(imgRepo, strings.Replace(d, ":", "-", 1)+".sig", ociManifest, []byte(`{"schemaVersion":2,"layers":[{`)); err != nil {
				t.Fatal(err)
			}
		}, false, "malformed"},
		{"legacy payload swapped (signature over other bytes)", func(t *testing.T, reg *env, d string) {
			p := simpleSigning(d)
			sig := s.sign(t, append(p, ' '))
			pushLegacy(t, reg, d, []layer{legacyLayer(t, reg, p, b64(sig))})
		}, false, "1 signed by keys not trusted here"},
		{"bundle ok", func(t *testing.T, reg *env, d string) {
			pushBundle(t, reg, d, bundleJSON(t, s, strings.TrimPrefix(d, "sha256:"), signPredType))
		}, true, ""},
		{"bundle for another digest", func(t *testing.T, reg *env, d string) {
			pushBundle(t, reg, d, bundleJSON(t, s, strings.Repeat("1", 64), signPredType))
		}, false, "signature for another digest"},
		{"bundle is an attestation", func(t *testing.T, reg *env, d string) {
			pushBundle(t, reg, d, bundleJSON(t, s, strings.TrimPrefix(d, "sha256:"), "https://slsa.dev/provenance/v1"))
		}, false, "is an attestation"},
		{"bundle by untrusted key", func(t *testing.T, reg *env, d string) {
			pushBundle(t, reg, d, bundleJSON(t, other, strings.TrimPrefix(d, "sha256:"), signPredType))
		}, false, "1 signed by keys not trusted here"},
		{"bundle not JSON", func(t *testing.T, reg *env, d string) {
			pushBundle(t, reg, d, []byte(`{"mediaType":`))
		}, false, "not a valid Sigstore bundle"},
		{"bundle DSSE payload not base64", func(t *testing.T, reg *env, d string) {
			pushBundle(t, reg, d, []byte(`{"mediaType":"`+bundleMT+`","verificationMaterial":{"publicKey":{"hint":"x"}},"dsseEnvelope":{"payload":"!!","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"AA=="}]}}`))
		}, false, "not a valid Sigstore bundle"},
		{"bundle DSSE without signatures", func(t *testing.T, reg *env, d string) {
			pushBundle(t, reg, d, []byte(`{"mediaType":"`+bundleMT+`","verificationMaterial":{"publicKey":{"hint":"x"}},"dsseEnvelope":{"payload":"e30=","payloadType":"application/vnd.in-toto+json","signatures":[]}}`))
		}, false, "bundle"},
		{"bundle statement not in-toto", func(t *testing.T, reg *env, d string) {
			st := []byte(`{"hello":"world"}`)
			sig := s.sign(t, pae("application/vnd.in-toto+json", st))
			pushBundle(t, reg, d, []byte(`{"mediaType":"`+bundleMT+`","verificationMaterial":{"publicKey":{"hint":"x"}},"dsseEnvelope":{"payload":"`+b64(st)+`","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"`+b64(sig)+`"}]}}`))
		}, false, "in-toto statement"},
		{"old bundle version", func(t *testing.T, reg *env, d string) {
			b := bytes.Replace(bundleJSON(t, s, strings.TrimPrefix(d, "sha256:"), signPredType), []byte("v0.3+json"), []byte("v0.1+json"), 1)
			pushBundle(t, reg, d, b)
		}, false, "bundle"},
		{"signature for another digest plus a good one", func(t *testing.T, reg *env, d string) {
			pushBundle(t, reg, d, bundleJSON(t, s, strings.Repeat("1", 64), signPredType))
			p := simpleSigning(d)
			pushLegacy(t, reg, d, []layer{legacyLayer(t, reg, p, b64(s.sign(t, p)))})
		}, true, ""},
	}
	for _, referrers := range []bool{true, false} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/referrers=%v", c.name, referrers), func(t *testing.T) {
				reg := &env{Registry: fixtureregistry.Serve(t, referrers, nil), referrers: referrers}
				d := reg.Tags[imgRepo]["1.0"]
				c.setup(t, reg, d)
				res, err := newVerifier(nil, cosign.Options{}).Verify(context.Background(), cosign.Request{Image: mustRef(t, reg.Ref(imgRepo, "1.0")), Attestors: cosign.KeyAttestors(true, s.key)})
				if err != nil {
					t.Fatal(err)
				}
				if res.Allowed != c.allowed || !strings.Contains(res.Reason, c.reason) {
					t.Fatalf("allowed=%v reason=%q, want %v and %q", res.Allowed, res.Reason, c.allowed, c.reason)
				}
				t.Log(res.Reason)
			})
		}
	}
}

// recorder wraps the registry handler: it records requested paths and lets a
// test replace the answer for some of them.
type recorder struct {
	mu    sync.Mutex
	paths []string
	fault func(w http.ResponseWriter, r *http.Request) bool // true: handled
}

func (rc *recorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.mu.Lock()
		rc.paths = append(rc.paths, r.Method+" "+r.URL.Path)
		f := rc.fault
		rc.mu.Unlock()
		if f != nil && f(w, r) {
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (rc *recorder) count(substr string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := 0
	for _, p := range rc.paths {
		if strings.Contains(p, substr) {
			n++
		}
	}
	return n
}

func (rc *recorder) setFault(f func(w http.ResponseWriter, r *http.Request) bool) {
	rc.mu.Lock()
	rc.fault = f
	rc.mu.Unlock()
}

func TestLimitsAndFaults(t *testing.T) {
	s := newSigner(t, "trusted")
	big := strings.Repeat("x", 1<<20+1)
	cases := []struct {
		name       string
		setup      func(t *testing.T, reg *env, rc *recorder, d string)
		timeout    time.Duration
		incomplete bool
		reason     string
		notReason  string // a denial must not say this
		check      func(t *testing.T, rc *recorder)
	}{
		{name: "payload over 1 MiB refused before reading", setup: func(t *testing.T, reg *env, rc *recorder, d string) {
			l := legacyLayer(t, reg, []byte(big), b64(s.sign(t, []byte(big))))
			pushLegacy(t, reg, d, []layer{l})
		}, reason: "refused", check: func(t *testing.T, rc *recorder) {
			if n := rc.count("/blobs/"); n != 0 {
				t.Errorf("%d blob requests for a payload whose descriptor is over the limit", n)
			}
		}},
		{name: "bundle over 1 MiB refused before reading", setup: func(t *testing.T, reg *env, rc *recorder, d string) {
			pushBundle(t, reg, d, []byte(big))
		}, reason: "refused", check: func(t *testing.T, rc *recorder) {
			if n := rc.count("/blobs/"); n != 0 {
				t.Errorf("%d blob requests for a bundle whose descriptor is over the limit", n)
			}
		}},
		{name: "manifest declaring 5 MiB refused before reading", setup: func(t *testing.T, reg *env, rc *recorder, d string) {
			rc.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.HasSuffix(r.URL.Path, ".sig") {
					return false
				}
				w.Header().Set("Content-Length", fmt.Sprint(5<<20))
				w.Header().Set("Content-Type", ociManifest)
				w.WriteHeader(http.StatusOK)
				w.(http.Flusher).Flush()
				<-r.Context().Done() // never send the body: reading it would time out
				return true
			})
		}, timeout: 20 * time.Second, reason: "larger than the limit", notReason: "signature(s) found"}, // issue 11 §6: a refused .sig manifest is no signature
		{name: "endless chunked manifest cut at the limit", setup: func(t *testing.T, reg *env, rc *recorder, d string) {
			rc.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.HasSuffix(r.URL.Path, ".sig") {
					return false
				}
				w.Header().Set("Content-Type", ociManifest)
				chunk := bytes.Repeat([]byte(" "), 64<<10)
				for r.Context().Err() == nil {
					if _, err := w.Write(chunk); err != nil {
						break
					}
				}
				return true
			})
		}, timeout: 20 * time.Second, reason: "over 1048576 bytes", notReason: "signature(s) found"},
		{name: "endless response headers cut at MaxHeaderBytes", setup: func(t *testing.T, reg *env, rc *recorder, d string) {
			rc.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/manifests/sha256-") && !strings.Contains(r.URL.Path, "/referrers/") {
					return false
				}
				conn, buf, err := w.(http.Hijacker).Hijack()
				if err != nil {
					t.Error(err)
					return true
				}
				defer conn.Close()
				buf.WriteString("HTTP/1.1 200 OK\r\n")
				line := "X-Pad: " + strings.Repeat("x", 1<<10) + "\r\n"
				for sent := 0; sent < 64<<20; sent += len(line) { // bounded, so a test without the bound ends
					if _, err := buf.WriteString(line); err != nil {
						break
					}
				}
				buf.Flush()
				return true
			})
		}, timeout: 20 * time.Second, incomplete: true, reason: fmt.Sprintf("headers exceeded %d bytes", cosign.MaxHeaderBytes)},
		{name: "payload not matching its digest", setup: func(t *testing.T, reg *env, rc *recorder, d string) {
			p := simpleSigning(d)
			pushLegacy(t, reg, d, []layer{legacyLayer(t, reg, p, b64(s.sign(t, p)))})
			rc.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/blobs/") {
					return false
				}
				w.Write(bytes.ToUpper(p)) // same length, other bytes
				return true
			})
		}, reason: "hashes to"},
		{name: "more than MaxSignatures read no further", setup: func(t *testing.T, reg *env, rc *recorder, d string) {
			var ls []layer
			for i := range 40 {
				p := append(simpleSigning(d), fmt.Sprintf(" %d", i)...)
				ls = append(ls, legacyLayer(t, reg, p, b64(newSigner(t, "x").sign(t, p))))
			}
			pushLegacy(t, reg, d, ls)
			for i := range 10 {
				pushBundle(t, reg, d, bundleJSON(t, newSigner(t, "x"), strings.Repeat(fmt.Sprint(i%10), 64), signPredType))
			}
		}, reason: "45 more signatures were not read (limit 5 per image)", check: func(t *testing.T, rc *recorder) {
			if n := rc.count("GET /v2/" + imgRepo + "/blobs/"); n > 5 {
				t.Errorf("%d blobs read with MaxSignatures 5", n)
			}
		}},
		{name: "registry hangs: incomplete at the deadline", setup: func(t *testing.T, reg *env, rc *recorder, d string) {
			rc.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				if strings.Contains(r.URL.Path, "/manifests/sha256-") || strings.Contains(r.URL.Path, "/referrers/") {
					<-r.Context().Done()
					return true
				}
				return false
			})
		}, timeout: 300 * time.Millisecond, incomplete: true, reason: "timed out"},
		{name: "registry 503: incomplete", setup: func(t *testing.T, reg *env, rc *recorder, d string) {
			rc.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				if strings.HasSuffix(r.URL.Path, ".sig") {
					w.WriteHeader(http.StatusServiceUnavailable)
					return true
				}
				return false
			})
		}, incomplete: true, reason: "503"},
		{name: "redirect loop: incomplete", setup: func(t *testing.T, reg *env, rc *recorder, d string) {
			rc.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				if strings.HasSuffix(r.URL.Path, ".sig") {
					http.Redirect(w, r, r.URL.Path, http.StatusFound)
					return true
				}
				return false
			})
		}, incomplete: true, reason: "redirects"},
	}
	for _, referrers := range []bool{true, false} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/referrers=%v", c.name, referrers), func(t *testing.T) {
				rc := &recorder{}
				reg := &env{Registry: fixtureregistry.Serve(t, referrers, rc.wrap), referrers: referrers}
				d := reg.Tags[imgRepo]["1.0"]
				c.setup(t, reg, rc, d)
				rc.mu.Lock()
				rc.paths = nil
				rc.mu.Unlock()
				timeout := c.timeout
				if timeout == 0 {
					timeout = 10 * time.Second
				}
				start := time.Now()
				v := newVerifier(nil, cosign.Options{Timeout: timeout, MaxSignatures: 5})
				res, err := v.Verify(context.Background(), cosign.Request{Image: mustRef(t, reg.Ref(imgRepo, "1.0")), Digest: d, Attestors: cosign.KeyAttestors(true, s.key)})
				if c.incomplete {
					if !errors.Is(err, cosign.ErrIncomplete) || !strings.Contains(err.Error(), c.reason) {
						t.Fatalf("want ErrIncomplete with %q, got %+v, %v", c.reason, res, err)
					}
					t.Log(err)
				} else {
					if err != nil {
						t.Fatal(err)
					}
					if res.Allowed || !strings.Contains(res.Reason, c.reason) {
						t.Fatalf("allowed=%v reason=%q, want a denial with %q", res.Allowed, res.Reason, c.reason)
					}
					if c.notReason != "" && strings.Contains(res.Reason, c.notReason) {
						t.Fatalf("reason %q says %q", res.Reason, c.notReason)
					}
					t.Log(res.Reason)
				}
				if el := time.Since(start); el > timeout+2*time.Second {
					t.Errorf("took %v with a %v timeout", el, timeout)
				}
				if c.check != nil {
					c.check(t, rc)
				}
			})
		}
	}
}

func TestUnreachableRegistryIsIncomplete(t *testing.T) {
	v := newVerifier(nil, cosign.Options{Timeout: 2 * time.Second})
	k := newSigner(t, "k").key
	_, err := v.Verify(context.Background(), cosign.Request{Image: mustRef(t, "127.0.0.1:1/x/y:1"), Attestors: cosign.KeyAttestors(true, k)})
	if !errors.Is(err, cosign.ErrIncomplete) {
		t.Fatalf("want ErrIncomplete, got %v", err)
	}
	_, err = v.Verify(context.Background(), cosign.Request{Image: mustRef(t, "127.0.0.1:1/x/y@sha256:"+hex64()), Attestors: cosign.KeyAttestors(true, k)})
	if !errors.Is(err, cosign.ErrIncomplete) {
		t.Fatalf("want ErrIncomplete, got %v", err)
	}
}

// TestDigestPinned: a Request's Digest is judged even when the tag moved since.
func TestDigestPinned(t *testing.T) {
	reg := fixtureregistry.Serve(t, true, nil)
	v := newVerifier(nil, cosign.Options{})
	a := loadKey(t, reg, "a")
	signed := reg.Tags["demo/signed-bundle"]["1.0"]
	// demo/multi contains the signed-bundle image's manifest as an index member.
	res, err := v.Verify(context.Background(), cosign.Request{Image: mustRef(t, reg.Ref("demo/signed-bundle", "1.0")), Digest: reg.Tags["demo/unsigned"]["1.0"], Attestors: cosign.KeyAttestors(true, a)})
	if err != nil || res.Allowed || res.Digest != reg.Tags["demo/unsigned"]["1.0"] {
		t.Fatalf("pinned unsigned digest: %+v %v", res, err)
	}
	res, err = v.Verify(context.Background(), cosign.Request{Image: mustRef(t, reg.Host+"/demo/signed-bundle@"+signed), Attestors: cosign.KeyAttestors(true, a)})
	if err != nil || !res.Allowed {
		t.Fatalf("by digest: %+v %v", res, err)
	}
	_, err = v.Verify(context.Background(), cosign.Request{Image: mustRef(t, reg.Host+"/demo/signed-bundle@"+signed), Digest: reg.Tags["demo/unsigned"]["1.0"], Attestors: cosign.KeyAttestors(true, a)})
	if err == nil || errors.Is(err, cosign.ErrIncomplete) {
		t.Fatalf("conflicting digests: %v", err)
	}
}

// TestIncompleteKeepsCause: an incomplete verification still says why, for
// callers that treat network errors, deadlines and registry answers apart.
func TestIncompleteKeepsCause(t *testing.T) {
	k := newSigner(t, "k").key
	_, err := newVerifier(nil, cosign.Options{Timeout: 2 * time.Second}).Verify(context.Background(), cosign.Request{Image: mustRef(t, "127.0.0.1:1/x/y:1"), Attestors: cosign.KeyAttestors(true, k)})
	var op *net.OpError
	if !errors.Is(err, cosign.ErrIncomplete) || !errors.As(err, &op) {
		t.Fatalf("connection refused: want ErrIncomplete wrapping *net.OpError, got %v", err)
	}

	rc := &recorder{}
	reg := fixtureregistry.Serve(t, true, rc.wrap)
	rc.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case strings.HasSuffix(r.URL.Path, ".sig"):
			<-r.Context().Done()
			return true
		case strings.Contains(r.URL.Path, "/referrers/"):
			w.WriteHeader(http.StatusBadGateway)
			return true
		}
		return false
	})
	d := reg.Tags[imgRepo]["1.0"]
	_, err = newVerifier(nil, cosign.Options{Timeout: 300 * time.Millisecond}).Verify(context.Background(), cosign.Request{Image: mustRef(t, reg.Ref(imgRepo, "1.0")), Digest: d, Attestors: cosign.KeyAttestors(true, k)})
	var se *registry.StatusError
	if !errors.Is(err, cosign.ErrIncomplete) || !errors.As(err, &se) || se.Code != http.StatusBadGateway {
		t.Fatalf("502: want ErrIncomplete wrapping *registry.StatusError 502, got %v", err)
	}
	rc.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/referrers/") || strings.HasSuffix(r.URL.Path, ".sig") {
			<-r.Context().Done()
			return true
		}
		return false
	})
	_, err = newVerifier(nil, cosign.Options{Timeout: 300 * time.Millisecond}).Verify(context.Background(), cosign.Request{Image: mustRef(t, reg.Ref(imgRepo, "1.0")), Digest: d, Attestors: cosign.KeyAttestors(true, k)})
	if !errors.Is(err, cosign.ErrIncomplete) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hang: want ErrIncomplete wrapping context.DeadlineExceeded, got %v", err)
	}
}

// TestPartialFailureAllowsOnlyOnValidSignatures: a lookup that fails does not
// hide a valid signature found elsewhere, and never turns into a denial that
// could have been an allow.
func TestPartialFailureAllowsOnlyOnValidSignatures(t *testing.T) {
	reg := fixtureregistry.Serve(t, true, (&recorder{fault: func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, ".sig") {
			w.WriteHeader(http.StatusInternalServerError)
			return true
		}
		return false
	}}).wrap)
	v := newVerifier(nil, cosign.Options{})
	res, err := v.Verify(context.Background(), cosign.Request{Image: mustRef(t, reg.Ref("demo/signed-bundle", "1.0")), Attestors: cosign.KeyAttestors(true, loadKey(t, reg, "a"))})
	if err != nil || !res.Allowed {
		t.Fatalf("valid bundle with a failing .sig lookup: %+v %v", res, err)
	}
	res, err = v.Verify(context.Background(), cosign.Request{Image: mustRef(t, reg.Ref("demo/signed-bundle", "1.0")), Attestors: cosign.KeyAttestors(true, loadKey(t, reg, "b"))})
	if !errors.Is(err, cosign.ErrIncomplete) {
		t.Fatalf("untrusted bundle and a failing .sig lookup: want ErrIncomplete, got %+v %v", res, err)
	}
}
