package fixturedump_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/criguard/criguard/internal/fixturedump"
	"github.com/criguard/criguard/internal/fixtureregistry"
)

func serve(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func push(t *testing.T, ref string, img v1.Image) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func randomImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(64, 2)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// tree maps every file under dir to its bytes.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestDumpFollowsTagsOnly(t *testing.T) {
	host := serve(t)
	old := push(t, host+"/demo/moved:1.0", randomImage(t))
	moved := push(t, host+"/demo/moved:1.0", randomImage(t)) // the tag moves; old is unreachable
	a, b := randomImage(t), randomImage(t)
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: a}, mutate.IndexAddendum{Add: b})
	r, _ := name.ParseReference(host+"/demo/multi:1.0", name.Insecure)
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	idxDigest, _ := idx.Digest()

	out := t.TempDir()
	if err := fixturedump.Dump(t.Context(), host, nil, out); err != nil {
		t.Fatal(err)
	}
	files := tree(t, out)

	want := map[string]map[string]string{
		"demo/moved": {"1.0": moved.String()},
		"demo/multi": {"1.0": idxDigest.String()},
	}
	wantJSON, _ := json.MarshalIndent(want, "", " ")
	if got := files["registry/tags.json"]; got != string(wantJSON) {
		t.Errorf("tags.json:\n%s\nwant:\n%s", got, wantJSON)
	}
	if _, ok := files["registry/repos/demo/moved/manifests/sha256-"+old.Hex]; ok {
		t.Errorf("the manifest the moved tag used to name was dumped")
	}
	for _, img := range []struct {
		repo string
		img  v1.Image
	}{{"demo/multi", a}, {"demo/multi", b}} {
		d, _ := img.img.Digest()
		if _, ok := files["registry/repos/"+img.repo+"/manifests/sha256-"+d.Hex]; !ok {
			t.Errorf("index member %s missing from %s", d, img.repo)
		}
		m, _ := img.img.Manifest()
		for _, l := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if _, ok := files["registry/blobs/sha256/"+l.Digest.Hex]; !ok {
				t.Errorf("blob %s of %s missing", l.Digest, d)
			}
		}
	}
	for p, body := range files {
		dir, file := filepath.Split(p)
		if strings.HasSuffix(dir, "manifests/") {
			file = strings.TrimPrefix(file, "sha256-")
		} else if !strings.HasSuffix(dir, "blobs/sha256/") {
			continue
		}
		sum := sha256.Sum256([]byte(body))
		if hex.EncodeToString(sum[:]) != file {
			t.Errorf("%s: bytes do not hash to the file name", p)
		}
	}
}

// A dump loaded into an empty registry dumps to the same bytes: the dump is
// closed (every byte a tag reaches is in it) and its layout is what the
// loaders read.
func TestDumpLoadRoundTrip(t *testing.T) {
	src := serve(t)
	push(t, src+"/demo/a:1.0", randomImage(t))
	push(t, src+"/demo/a:sha256-x.sig", randomImage(t))
	push(t, src+"/other/b:2", randomImage(t))
	first := t.TempDir()
	if err := fixturedump.Dump(t.Context(), src, nil, first); err != nil {
		t.Fatal(err)
	}
	dst := serve(t)
	if _, err := fixtureregistry.Load(t.Context(), first, "http://"+dst); err != nil {
		t.Fatal(err)
	}
	second := t.TempDir()
	if err := fixturedump.Dump(t.Context(), dst, nil, second); err != nil {
		t.Fatal(err)
	}
	a, b := tree(t, first), tree(t, second)
	if len(a) != len(b) {
		t.Fatalf("first dump has %d files, second %d", len(a), len(b))
	}
	for p, body := range a {
		if !bytes.Equal([]byte(body), []byte(b[p])) {
			t.Errorf("%s differs after a round trip", p)
		}
	}
}

func TestDumpRefuses(t *testing.T) {
	host := serve(t)
	push(t, host+"/demo/a:1.0", randomImage(t))
	for _, tc := range []struct {
		name  string
		setup func(dir string)
		host  string
		repos []string
		want  string
	}{
		{"existing dump", func(dir string) { _ = os.MkdirAll(filepath.Join(dir, "registry"), 0o755) }, host, nil, "already exists"},
		{"repository without tags", func(string) {}, host, []string{"demo/none"}, "demo/none"},
		{"no registry", func(string) {}, "127.0.0.1:1", nil, "listing the repositories"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(dir)
			err := fixturedump.Dump(t.Context(), tc.host, tc.repos, dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
