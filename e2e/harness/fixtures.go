package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/criguard/criguard/internal/fixtureregistry"
)

// Fixtures is testdata/cosign (images signed by the real cosign CLI) or
// testdata/sigstore (signed by a real Sigstore stack) as loaded into a
// Registry.
//
// Their image configs have an empty os and architecture. Measured with
// containerd 2.4.2: a tag or digest naming a single image manifest
// (demo/signed-bundle, demo/moved, ...) pulls fine, because containerd does not
// match the platform of a lone manifest; demo/multi, an index whose descriptors
// carry no platform field, is refused with "no match for platform in manifest".
// Images pushed by PushImage are linux/amd64 and pull everywhere.
type Fixtures struct {
	// Dir is the fixtures directory (holding keys/ and registry/).
	Dir string
	// Keys maps "a", "b", "rsa" (cosign) or "t" (sigstore) to the public key
	// files in Dir/keys.
	Keys map[string]string
	// Tags is registry/tags.json: repository -> tag -> manifest digest.
	Tags map[string]map[string]string

	reg *Registry
}

// Ref names a fixture repository (e.g. "demo/signed-bundle") in the registry.
func (f *Fixtures) Ref(repo, tagOrDigest string) string { return f.reg.Ref(repo, tagOrDigest) }

// Digest is the manifest digest that repo:tag names in the fixtures.
func (f *Fixtures) Digest(repo, tag string) string { return f.Tags[repo][tag] }

// LoadCosignFixtures pushes testdata/cosign byte for byte (blobs, manifests
// by digest with index members first, then tags) into the registry.
func (r *Registry) LoadCosignFixtures(t T) *Fixtures {
	t.Helper()
	dir, err := fixtureregistry.Dir(fixtureregistry.Cosign)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	f := &Fixtures{Dir: dir, Keys: map[string]string{}, reg: r}
	for _, k := range []string{"a", "b", "rsa"} {
		f.Keys[k] = filepath.Join(dir, "keys", k+".pub")
	}
	if f.Tags, err = fixtureregistry.Load(t.Context(), dir, "http://"+r.Host); err != nil {
		t.Fatalf("harness: loading %s into %s: %v", dir, r.Host, err)
	}
	return f
}

// LoadSigstoreFixtures pushes testdata/sigstore (keyless, Rekor-logged and
// attested images signed by a real Sigstore stack) into the registry, as
// LoadCosignFixtures does; Keys holds "t", and TrustedRoot is the stack's
// trusted_root.json.
func (r *Registry) LoadSigstoreFixtures(t T) *Fixtures {
	t.Helper()
	dir, err := fixtureregistry.Dir(fixtureregistry.Sigstore)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	f := &Fixtures{Dir: dir, Keys: map[string]string{"t": filepath.Join(dir, "keys", "t.pub")}, reg: r}
	if f.Tags, err = fixtureregistry.Load(t.Context(), dir, "http://"+r.Host); err != nil {
		t.Fatalf("harness: loading %s into %s: %v", dir, r.Host, err)
	}
	return f
}

// TrustedRoot is the fixture set's Sigstore trusted root file ("" for the
// cosign fixtures, which have none).
func (f *Fixtures) TrustedRoot() string {
	p := filepath.Join(f.Dir, "trusted_root.json")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// manifestMediaType reads a manifest's own mediaType, guessing OCI types when
// the field is absent (it is optional in OCI).
func manifestMediaType(body []byte) string {
	var m struct {
		MediaType string            `json:"mediaType"`
		Manifests []json.RawMessage `json:"manifests"`
	}
	_ = json.Unmarshal(body, &m)
	switch {
	case m.MediaType != "":
		return m.MediaType
	case m.Manifests != nil:
		return "application/vnd.oci.image.index.v1+json"
	default:
		return "application/vnd.oci.image.manifest.v1+json"
	}
}

func httpDo(ctx context.Context, method, url, contentType string, body []byte, want int) error {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, url, resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	return nil
}
