package cosign_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/criguard/criguard/internal/fixtureregistry"
	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/keys"
)

// fakeRegistry answers the distribution API from memory, without sockets, so
// the fuzzer can run the whole verification on arbitrary registry data.
type fakeRegistry struct {
	manifests map[string][]byte // ref (tag or digest) -> bytes
	blobs     map[string][]byte
	referrers []byte // nil: no referrers API
}

func (f *fakeRegistry) RoundTrip(r *http.Request) (*http.Response, error) {
	resp := &http.Response{Request: r, Header: http.Header{}, StatusCode: http.StatusNotFound, Body: io.NopCloser(strings.NewReader(""))}
	parts := strings.Split(r.URL.Path, "/")
	if len(parts) < 3 {
		return resp, nil
	}
	ref, kind := parts[len(parts)-1], parts[len(parts)-2]
	var body []byte
	switch kind {
	case "referrers":
		if f.referrers == nil {
			return resp, nil
		}
		body = f.referrers
		resp.Header.Set("Content-Type", "application/vnd.oci.image.index.v1+json")
	case "manifests":
		body = f.manifests[ref]
		resp.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	case "blobs":
		body = f.blobs[ref]
	}
	if body == nil {
		return resp, nil
	}
	resp.StatusCode = http.StatusOK
	resp.ContentLength = int64(len(body))
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

func dgst(b []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(b)) }

// FuzzVerify builds a registry around fuzzed data (a bundle, a simple-signing
// payload and its signature, and optionally raw referrers index and .sig
// manifest bytes) and checks that verification never panics and that every
// verdict is well formed: an allow names a verified signature, a denial a reason.
func FuzzVerify(f *testing.F) {
	dir, err := fixtureregistry.Dir(fixtureregistry.Cosign)
	if err != nil {
		f.Fatal(err)
	}
	blob := func(hex string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, "registry", "blobs", "sha256", hex))
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	// signed-bundle's bundle and signed-legacy's payload and signature.
	f.Add(blob("7eebdc49f0209d102f590ff3b38d222212666606bb444d2ca7b592fde5f39f0b"), blob("6f4b29a7b2c0f2ae349b7e9ba40b9e8090d23d22f1c659f5e914eb59c3ccef69"),
		"MEYCIQClR71NdLC7QL8y6MSCPUqjn4gOeABr4D0lAr4DIzyopAIhALHUDwyUhX+bpHLWw/XerMnqPdWAmL+O9tegZdW47Dpf", []byte(nil), []byte(nil), true)
	f.Add([]byte(`{}`), []byte(`{}`), "", []byte(`{"schemaVersion":2,"manifests":[{"digest":"sha256:x"}]}`), []byte(`{"schemaVersion":2,"layers":[{}]}`), false)
	key, err := keys.LoadFile(filepath.Join(dir, "keys", "a.pub"), "")
	if err != nil {
		f.Fatal(err)
	}
	judged := "sha256:8eb0a5e2f7417fc242170868cda2d7b7367aef262c44c39d54e7f8740ea7a94d"
	tag := strings.Replace(judged, ":", "-", 1)
	f.Fuzz(func(t *testing.T, bundle, payload []byte, sig string, rawIndex, rawSig []byte, referrersAPI bool) {
		reg := &fakeRegistry{manifests: map[string][]byte{}, blobs: map[string][]byte{dgst(bundle): bundle, dgst(payload): payload}}
		bm, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
			"config": map[string]any{"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "digest": dgst([]byte("{}"))},
			"layers": []map[string]any{{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "size": len(bundle), "digest": dgst(bundle)}}})
		reg.manifests[dgst(bm)] = bm
		ix, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []map[string]any{{"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": len(bm), "digest": dgst(bm), "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"}}})
		if len(rawIndex) > 0 {
			ix = rawIndex
		}
		if referrersAPI {
			reg.referrers = ix
		} else {
			reg.manifests[tag] = ix
		}
		sm, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
			"layers": []map[string]any{{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "size": len(payload), "digest": dgst(payload),
				"annotations": map[string]string{"dev.cosignproject.cosign/signature": sig}}}})
		if len(rawSig) > 0 {
			sm = rawSig
		}
		reg.manifests[tag+".sig"] = sm
		v := newVerifier(reg, cosign.Options{MaxSignatures: 4})
		res, err := v.Verify(context.Background(), cosign.Request{Image: mustRef(t, "127.0.0.1:5000/demo/x@"+judged), Attestors: cosign.KeyAttestors(true, key)})
		if err != nil {
			t.Fatalf("Verify against a well-behaved registry returned an error: %v", err)
		}
		if res.Allowed && (len(res.Verified) == 0 || res.Reason != "") {
			t.Fatalf("allow without a verified signature: %+v", res)
		}
		if !res.Allowed && res.Reason == "" {
			t.Fatalf("denial without a reason: %+v", res)
		}
	})
}
