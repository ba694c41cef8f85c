// Package fixtureregistry serves the repository's registry fixture dumps
// (testdata/cosign: images signed with keys by the real cosign CLI;
// testdata/sigstore: keyless, Rekor-backed and attestation fixtures) from
// go-containerregistry's in-memory registry, byte for byte, for tests.
// Test-only: nothing in the production tree imports it.
package fixtureregistry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
)

// The fixture sets under the repository's testdata/.
const (
	Cosign   = "cosign"
	Sigstore = "sigstore"
)

// Dir is testdata/<set> of the module found above the working directory
// (tests run in their package's folder, so this works from any of them).
func Dir(set string) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			fx := filepath.Join(d, "testdata", set)
			if _, err := os.Stat(filepath.Join(fx, "registry", "tags.json")); err != nil {
				return "", fmt.Errorf("fixture set %q not found at %s: %w", set, fx, err)
			}
			return fx, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s to locate testdata/%s from", wd, set)
		}
	}
}

// Registry is a running registry holding the fixtures.
type Registry struct {
	Host string // 127.0.0.1:PORT
	Dir  string // the fixture dump
	// Tags is repository -> tag -> manifest digest, from registry/tags.json.
	Tags map[string]map[string]string
	srv  *httptest.Server
}

// Key returns the path of a fixture public key ("a", "b", "rsa").
func (r *Registry) Key(name string) string { return filepath.Join(r.Dir, "keys", name+".pub") }

// Ref returns HOST/repo:tag.
func (r *Registry) Ref(repo, tag string) string { return r.Host + "/" + repo + ":" + tag }

// URL is the registry's base URL (http://HOST).
func (r *Registry) URL() string { return r.srv.URL }

// Serve starts an in-memory registry (with or without the referrers API),
// loads the cosign fixtures into it and stops it when the test ends. wrap, if
// not nil, wraps the registry's handler (to inject faults).
func Serve(tb testing.TB, referrers bool, wrap func(http.Handler) http.Handler) *Registry {
	tb.Helper()
	return ServeSet(tb, Cosign, referrers, wrap)
}

// ServeSet is Serve for any fixture set (Cosign, Sigstore).
func ServeSet(tb testing.TB, set string, referrers bool, wrap func(http.Handler) http.Handler) *Registry {
	tb.Helper()
	dir, err := Dir(set)
	if err != nil {
		tb.Fatalf("fixtures: %v", err)
	}
	var h http.Handler = registry.New(registry.WithReferrersSupport(referrers), registry.Logger(log.New(io.Discard, "", 0)))
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	r := &Registry{Host: u.Host, Dir: dir, srv: srv}
	if r.Tags, err = Load(tb.Context(), dir, srv.URL); err != nil {
		tb.Fatalf("loading fixtures into %s: %v", srv.URL, err)
	}
	return r
}

// Load pushes the fixture dump in dir into the registry at baseURL
// (http://HOST): blobs, then manifests by digest (indexes after their
// members), then tags. It returns tags.json: repository -> tag -> digest.
func Load(ctx context.Context, dir, baseURL string) (map[string]map[string]string, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "registry", "tags.json"))
	if err != nil {
		return nil, err
	}
	var tags map[string]map[string]string
	if err := json.Unmarshal(raw, &tags); err != nil {
		return nil, fmt.Errorf("tags.json: %w", err)
	}
	blobs, err := os.ReadDir(filepath.Join(dir, "registry", "blobs", "sha256"))
	if err != nil {
		return nil, err
	}
	repos := make([]string, 0, len(tags))
	for repo := range tags {
		repos = append(repos, repo)
	}
	sort.Strings(repos)
	for _, repo := range repos {
		for _, b := range blobs {
			data, err := os.ReadFile(filepath.Join(dir, "registry", "blobs", "sha256", b.Name()))
			if err != nil {
				return nil, err
			}
			if err := pushBlob(ctx, baseURL, repo, "sha256:"+b.Name(), data); err != nil {
				return nil, err
			}
		}
		mdir := filepath.Join(dir, "registry", "repos", repo, "manifests")
		entries, err := os.ReadDir(mdir)
		if err != nil {
			return nil, err
		}
		// Image manifests before indexes, so index members exist when pushed.
		type mf struct {
			digest, mediaType string
			data              []byte
			index             bool
		}
		var ms []mf
		for _, e := range entries {
			data, err := os.ReadFile(filepath.Join(mdir, e.Name()))
			if err != nil {
				return nil, err
			}
			var head struct {
				MediaType string `json:"mediaType"`
			}
			if err := json.Unmarshal(data, &head); err != nil {
				return nil, fmt.Errorf("%s: %w", e.Name(), err)
			}
			ms = append(ms, mf{strings.Replace(e.Name(), "-", ":", 1), head.MediaType, data, strings.Contains(head.MediaType, "index") || strings.Contains(head.MediaType, "list")})
		}
		sort.SliceStable(ms, func(i, j int) bool { return !ms[i].index && ms[j].index })
		byDigest := map[string]mf{}
		for _, m := range ms {
			if err := putManifest(ctx, baseURL, repo, m.digest, m.mediaType, m.data); err != nil {
				return nil, err
			}
			byDigest[m.digest] = m
		}
		tagNames := make([]string, 0, len(tags[repo]))
		for t := range tags[repo] {
			tagNames = append(tagNames, t)
		}
		sort.Strings(tagNames)
		for _, t := range tagNames {
			m, ok := byDigest[tags[repo][t]]
			if !ok {
				return nil, fmt.Errorf("%s:%s names %s, which is not in the dump", repo, t, tags[repo][t])
			}
			if err := putManifest(ctx, baseURL, repo, t, m.mediaType, m.data); err != nil {
				return nil, err
			}
		}
	}
	return tags, nil
}

func pushBlob(ctx context.Context, base, repo, digest string, data []byte) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("starting upload of %s to %s: %s", digest, repo, resp.Status)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = base + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodPut, loc+sep+"digest="+url.QueryEscape(digest), bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	return expect(req, http.StatusCreated)
}

func putManifest(ctx context.Context, base, repo, ref, mediaType string, data []byte) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, base+"/v2/"+repo+"/manifests/"+ref, bytes.NewReader(data))
	req.Header.Set("Content-Type", mediaType)
	return expect(req, http.StatusCreated)
}

func expect(req *http.Request, code int) error {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != code {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL, resp.Status, b)
	}
	return nil
}

// PushBlob uploads data into repo and returns its digest.
func (r *Registry) PushBlob(repo string, data []byte) (string, error) {
	d := fmt.Sprintf("sha256:%x", sha256.Sum256(data))
	return d, pushBlob(context.Background(), r.srv.URL, repo, d, data)
}

// PutManifest stores a manifest in repo under ref (a tag or its digest) and
// returns its digest.
func (r *Registry) PutManifest(repo, ref, mediaType string, data []byte) (string, error) {
	d := fmt.Sprintf("sha256:%x", sha256.Sum256(data))
	if ref == "" {
		ref = d
	}
	return d, putManifest(context.Background(), r.srv.URL, repo, ref, mediaType, data)
}

// Verdicts reads a fixture set's verdicts.md table (testdata/sigstore): the
// header (first cell "image (tag 1.0)", then one column per verification) and
// one row per image: repository, then "pass" or "fail" per column.
func Verdicts(dir string) (header []string, rows [][]string, err error) {
	b, err := os.ReadFile(filepath.Join(dir, "verdicts.md"))
	if err != nil {
		return nil, nil, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") {
			continue
		}
		var cells []string
		for _, c := range strings.Split(strings.Trim(line, "| "), "|") {
			cells = append(cells, strings.TrimSpace(c))
		}
		if header == nil {
			header = cells
			continue
		}
		if len(cells) != len(header) {
			return nil, nil, fmt.Errorf("verdicts.md: row %q has %d cells, the header %d", line, len(cells), len(header))
		}
		rows = append(rows, cells)
	}
	return header, rows, nil
}
