// Package fixturedump writes what a registry serves into the fixture layout of
// testdata/cosign and testdata/sigstore: registry/tags.json, each manifest's
// exact bytes under registry/repos/<repository>/manifests/sha256-<hex>, and
// every blob those manifests name under registry/blobs/sha256/<hex>.
//
// Only what a tag reaches is dumped (the tag's manifest, an index's members,
// their config and layer blobs): a manifest that no tag names any more, such as
// the image a moved tag used to name, is left out, as in the fixtures made by
// hand. A manifest's subject is not followed for the same reason.
package fixturedump

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// maxManifest and maxBlob bound what is read from the registry: fixtures are
// small images, so anything larger is a mistake, not a fixture.
const (
	maxManifest = 4 << 20
	maxBlob     = 64 << 20
	maxDepth    = 4 // index nesting
)

// Dump writes every repository that the registry at host (HOST:PORT, plain
// HTTP) lists, or only repos when given, into dir, which must not hold a
// registry/ folder yet.
func Dump(ctx context.Context, host string, repos []string, dir string) error {
	reg, err := name.NewRegistry(host, name.Insecure)
	if err != nil {
		return fmt.Errorf("registry %q: %w", host, err)
	}
	root := filepath.Join(dir, "registry")
	if _, err := os.Stat(root); err == nil {
		return fmt.Errorf("%s already exists: dump into an empty directory", root)
	}
	if len(repos) == 0 {
		if repos, err = remote.Catalog(ctx, reg, remote.WithContext(ctx)); err != nil {
			return fmt.Errorf("listing the repositories of %s: %w", host, err)
		}
	}
	sort.Strings(repos)
	d := &dumper{ctx: ctx, root: root, blobs: map[string]bool{}}
	tags := map[string]map[string]string{}
	for _, r := range repos {
		repo := reg.Repo(r)
		if tags[r], err = d.repo(repo); err != nil {
			return fmt.Errorf("dumping %s: %w", repo, err)
		}
	}
	raw, err := json.MarshalIndent(tags, "", " ")
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(root, "tags.json"), raw)
}

type dumper struct {
	ctx   context.Context
	root  string
	blobs map[string]bool // hex digests already written
}

// repo dumps every tag of one repository and returns tag -> manifest digest.
func (d *dumper) repo(repo name.Repository) (map[string]string, error) {
	names, err := remote.List(repo, remote.WithContext(d.ctx))
	if err != nil {
		return nil, fmt.Errorf("listing tags: %w", err)
	}
	if len(names) == 0 {
		return nil, errors.New("no tags: a fixture repository is reached through its tags")
	}
	sort.Strings(names)
	tags := map[string]string{}
	for _, t := range names {
		dg, err := d.manifest(repo, repo.Tag(t), 0)
		if err != nil {
			return nil, fmt.Errorf("tag %s: %w", t, err)
		}
		tags[t] = dg
	}
	return tags, nil
}

// manifest writes the manifest that ref names, then what it lists, and returns its digest.
func (d *dumper) manifest(repo name.Repository, ref name.Reference, depth int) (string, error) {
	if depth > maxDepth {
		return "", fmt.Errorf("%s: indexes nested deeper than %d", ref, maxDepth)
	}
	desc, err := remote.Get(ref, remote.WithContext(d.ctx))
	if err != nil {
		return "", err
	}
	raw := desc.Manifest
	if len(raw) > maxManifest {
		return "", fmt.Errorf("%s: manifest of %d bytes (limit %d)", ref, len(raw), maxManifest)
	}
	hexSum := sha256Hex(raw)
	if want := desc.Digest.String(); want != "sha256:"+hexSum {
		return "", fmt.Errorf("%s: registry says %s, bytes hash to sha256:%s", ref, want, hexSum)
	}
	rel, err := repoDir(repo)
	if err != nil {
		return "", err
	}
	if err := writeFile(filepath.Join(d.root, "repos", rel, "manifests", "sha256-"+hexSum), raw); err != nil {
		return "", err
	}
	mt := types.MediaType(desc.MediaType)
	switch {
	case mt.IsIndex():
		idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return "", fmt.Errorf("%s: %w", ref, err)
		}
		for _, m := range idx.Manifests {
			if _, err := d.manifest(repo, repo.Digest(m.Digest.String()), depth+1); err != nil {
				return "", fmt.Errorf("member of %s: %w", ref, err)
			}
		}
	case mt.IsImage() || mt == types.OCIManifestSchema1:
		m, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			return "", fmt.Errorf("%s: %w", ref, err)
		}
		for _, b := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if err := d.blob(repo, b.Digest); err != nil {
				return "", fmt.Errorf("%s: %w", ref, err)
			}
		}
	default:
		return "", fmt.Errorf("%s: manifest media type %q is neither an image nor an index", ref, desc.MediaType)
	}
	return "sha256:" + hexSum, nil
}

// blob writes one blob, checking that its bytes hash to its digest.
func (d *dumper) blob(repo name.Repository, dg v1.Hash) error {
	if dg.Algorithm != "sha256" {
		return fmt.Errorf("blob %s: only sha256 digests are dumped", dg)
	}
	if d.blobs[dg.Hex] {
		return nil
	}
	l, err := remote.Layer(repo.Digest(dg.String()), remote.WithContext(d.ctx))
	if err != nil {
		return fmt.Errorf("blob %s: %w", dg, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return fmt.Errorf("blob %s: %w", dg, err)
	}
	defer rc.Close()
	raw, err := io.ReadAll(io.LimitReader(rc, maxBlob+1))
	if err != nil {
		return fmt.Errorf("blob %s: %w", dg, err)
	}
	if len(raw) > maxBlob {
		return fmt.Errorf("blob %s: larger than %d bytes", dg, maxBlob)
	}
	if got := sha256Hex(raw); got != dg.Hex {
		return fmt.Errorf("blob %s: bytes hash to sha256:%s", dg, got)
	}
	if err := writeFile(filepath.Join(d.root, "blobs", "sha256", dg.Hex), raw); err != nil {
		return err
	}
	d.blobs[dg.Hex] = true
	return nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// repoDir is the repository's folder under registry/repos, refusing names
// that would leave it.
func repoDir(repo name.Repository) (string, error) {
	r := repo.RepositoryStr()
	for _, part := range strings.Split(r, "/") {
		if part == "" || part == "." || part == ".." {
			return "", fmt.Errorf("repository %q cannot be a folder of the dump", r)
		}
	}
	return filepath.FromSlash(r), nil
}

func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
