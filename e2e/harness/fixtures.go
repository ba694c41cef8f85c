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
	"sort"
	"strings"
)

// Fixtures is ../shared/fixtures/cosign (images signed by the real cosign CLI)
// as loaded into a Registry.
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
	// Keys maps "a", "b", "rsa" to the public key files in Dir/keys.
	Keys map[string]string
	// Tags is registry/tags.json: repository -> tag -> manifest digest.
	Tags map[string]map[string]string

	reg *Registry
}

// Ref names a fixture repository (e.g. "demo/signed-bundle") in the registry.
func (f *Fixtures) Ref(repo, tagOrDigest string) string { return f.reg.Ref(repo, tagOrDigest) }

// Digest is the manifest digest that repo:tag names in the fixtures.
func (f *Fixtures) Digest(repo, tag string) string { return f.Tags[repo][tag] }

// FixturesDir is $CRIGUARD_COSIGN_FIXTURES, else ../shared/fixtures/cosign
// beside the repository.
func FixturesDir(t T) string {
	t.Helper()
	dir := os.Getenv("CRIGUARD_COSIGN_FIXTURES")
	if dir == "" {
		dir = filepath.Join(RepoRoot(t), "..", "shared", "fixtures", "cosign")
	}
	if _, err := os.Stat(filepath.Join(dir, "registry", "tags.json")); err != nil {
		t.Fatalf("harness: cosign fixtures not found at %s (set CRIGUARD_COSIGN_FIXTURES): %v", dir, err)
	}
	return dir
}

// LoadCosignFixtures pushes the fixtures byte for byte: every blob into every
// repository, then each repository's manifests by digest (children of an
// index before the index), then the tags.
func (r *Registry) LoadCosignFixtures(t T) *Fixtures {
	t.Helper()
	dir := FixturesDir(t)
	f := &Fixtures{Dir: dir, Keys: map[string]string{}, reg: r}
	for _, k := range []string{"a", "b", "rsa"} {
		f.Keys[k] = filepath.Join(dir, "keys", k+".pub")
	}
	raw, err := os.ReadFile(filepath.Join(dir, "registry", "tags.json"))
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	if err := json.Unmarshal(raw, &f.Tags); err != nil {
		t.Fatalf("harness: tags.json: %v", err)
	}
	ctx := t.Context()
	blobDir := filepath.Join(dir, "registry", "blobs", "sha256")
	blobs, err := os.ReadDir(blobDir)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	repoRoot := filepath.Join(dir, "registry", "repos")
	var repos []string
	err = filepath.WalkDir(repoRoot, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == "manifests" {
			rel, _ := filepath.Rel(repoRoot, filepath.Dir(p))
			repos = append(repos, filepath.ToSlash(rel))
		}
		return err
	})
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	sort.Strings(repos)
	for _, repo := range repos {
		for _, b := range blobs {
			data, err := os.ReadFile(filepath.Join(blobDir, b.Name()))
			if err != nil {
				t.Fatalf("harness: %v", err)
			}
			url := fmt.Sprintf("http://%s/v2/%s/blobs/uploads/?digest=sha256:%s", r.Host, repo, b.Name())
			if err := httpDo(ctx, http.MethodPost, url, "application/octet-stream", data, http.StatusCreated); err != nil {
				t.Fatalf("harness: pushing blob %s to %s: %v", b.Name(), repo, err)
			}
		}
		if err := r.pushFixtureManifests(ctx, repo, filepath.Join(repoRoot, repo, "manifests")); err != nil {
			t.Fatalf("harness: %v", err)
		}
		tags := make([]string, 0, len(f.Tags[repo]))
		for tag := range f.Tags[repo] {
			tags = append(tags, tag)
		}
		sort.Strings(tags)
		for _, tag := range tags {
			dgst := f.Tags[repo][tag]
			body, err := os.ReadFile(filepath.Join(repoRoot, repo, "manifests", strings.Replace(dgst, ":", "-", 1)))
			if err != nil {
				t.Fatalf("harness: tag %s:%s: %v", repo, tag, err)
			}
			url := fmt.Sprintf("http://%s/v2/%s/manifests/%s", r.Host, repo, tag)
			if err := httpDo(ctx, http.MethodPut, url, manifestMediaType(body), body, http.StatusCreated); err != nil {
				t.Fatalf("harness: tagging %s:%s: %v", repo, tag, err)
			}
		}
	}
	return f
}

// pushFixtureManifests puts every manifest of a repository by digest, each
// after the manifests it lists (the registry refuses an index whose members
// are missing).
func (r *Registry) pushFixtureManifests(ctx context.Context, repo, dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	bodies := map[string][]byte{} // digest -> bytes
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		bodies[strings.Replace(e.Name(), "-", ":", 1)] = b
	}
	done := map[string]bool{}
	var push func(d string, depth int) error
	push = func(d string, depth int) error {
		if done[d] {
			return nil
		}
		if depth > 8 {
			return fmt.Errorf("manifest %s in %s: index nesting too deep", d, repo)
		}
		var m struct {
			Manifests []struct {
				Digest string `json:"digest"`
			} `json:"manifests"`
		}
		if err := json.Unmarshal(bodies[d], &m); err != nil {
			return fmt.Errorf("manifest %s in %s: %w", d, repo, err)
		}
		for _, c := range m.Manifests {
			if _, ok := bodies[c.Digest]; ok {
				if err := push(c.Digest, depth+1); err != nil {
					return err
				}
			}
		}
		url := fmt.Sprintf("http://%s/v2/%s/manifests/%s", r.Host, repo, d)
		if err := httpDo(ctx, http.MethodPut, url, manifestMediaType(bodies[d]), bodies[d], http.StatusCreated); err != nil {
			return fmt.Errorf("pushing manifest %s to %s: %w", d, repo, err)
		}
		done[d] = true
		return nil
	}
	digests := make([]string, 0, len(bodies))
	for d := range bodies {
		digests = append(digests, d)
	}
	sort.Strings(digests)
	for _, d := range digests {
		if err := push(d, 0); err != nil {
			return err
		}
	}
	return nil
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
