package trust

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// tufRepo builds a signed TUF repository (one ed25519 key for every role)
// whose only target is trusted_root.json = target, laid out as a TUF mirror
// with consistent snapshots. It returns the trust anchor and the files.
func tufRepo(t *testing.T, target []byte) ([]byte, map[string][]byte) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := signature.LoadSigner(priv, crypto.Hash(0))
	if err != nil {
		t.Fatal(err)
	}
	key, err := metadata.KeyFromPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	expires := time.Now().Add(24 * time.Hour)
	rootMD := metadata.Root(expires)
	for _, role := range []string{"root", "targets", "snapshot", "timestamp"} {
		if err := rootMD.Signed.AddKey(key, role); err != nil {
			t.Fatal(err)
		}
	}
	targets := metadata.Targets(expires)
	tf, err := metadata.TargetFile().FromBytes(CachedRootFile, target, "sha256")
	if err != nil {
		t.Fatal(err)
	}
	targets.Signed.Targets[CachedRootFile] = tf
	snapshot, timestamp := metadata.Snapshot(expires), metadata.Timestamp(expires)
	files := map[string][]byte{}
	sign := func(name string, sign func(signature.Signer) error, bytes func() ([]byte, error)) {
		if err := sign(signer); err != nil {
			t.Fatal(err)
		}
		b, err := bytes()
		if err != nil {
			t.Fatal(err)
		}
		files[name] = b
	}
	sign("1.root.json", func(s signature.Signer) error { _, err := rootMD.Sign(s); return err }, func() ([]byte, error) { return rootMD.ToBytes(false) })
	sign("1.targets.json", func(s signature.Signer) error { _, err := targets.Sign(s); return err }, func() ([]byte, error) { return targets.ToBytes(false) })
	sign("1.snapshot.json", func(s signature.Signer) error { _, err := snapshot.Sign(s); return err }, func() ([]byte, error) { return snapshot.ToBytes(false) })
	sign("timestamp.json", func(s signature.Signer) error { _, err := timestamp.Sign(s); return err }, func() ([]byte, error) { return timestamp.ToBytes(false) })
	sum := sha256.Sum256(target)
	files["targets/"+hex.EncodeToString(sum[:])+"."+CachedRootFile] = target
	return files["1.root.json"], files
}

func serveFiles(t *testing.T, files map[string][]byte) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[strings.TrimPrefix(r.URL.Path, "/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestRefresh(t *testing.T) {
	good, err := os.ReadFile(fixtureRoot)
	if err != nil {
		t.Fatal(err)
	}
	anchor, files := tufRepo(t, good)
	srv := serveFiles(t, files)
	dir := t.TempDir()
	if _, err := Cached(dir); err == nil {
		t.Fatal("a cache before any refresh")
	}
	tr, err := Refresh(context.Background(), RefreshOptions{CacheDir: dir, MirrorURL: srv.URL, TUFRoot: anchor})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tr.RekorLogs()["4aa8471318ff6e031353e0ca46ef3ac0b3dadb66a13ec408ecdc59b4fe48743d"]; !ok {
		t.Fatal("refreshed root is not the served one")
	}
	cached, err := Cached(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cached.RekorLogs()) != 1 {
		t.Fatal("cached root differs")
	}

	// A mirror serving other bytes than the signed targets metadata says is
	// refused, and the cache keeps the last verified root.
	for name := range files {
		if strings.HasPrefix(name, "targets/") {
			files[name] = bytes.Replace(good, []byte("127.0.0.1:3000"), []byte("127.0.0.1:3001"), 1)
		}
	}
	if _, err := Refresh(context.Background(), RefreshOptions{CacheDir: t.TempDir(), MirrorURL: srv.URL, TUFRoot: anchor}); err == nil {
		t.Fatal("refreshed from a tampered target")
	} else {
		t.Log(err)
	}
	if _, err := Cached(dir); err != nil {
		t.Fatalf("the verified cache was lost: %v", err)
	}

	// Another trust anchor does not accept this repository.
	otherAnchor, _ := tufRepo(t, good)
	if _, err := Refresh(context.Background(), RefreshOptions{CacheDir: t.TempDir(), MirrorURL: srv.URL, TUFRoot: otherAnchor}); err == nil {
		t.Fatal("refreshed from a repository signed by keys the anchor does not trust")
	}
}

func TestRefreshGivesUpWithItsContext(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	anchor, _ := tufRepo(t, []byte("{}"))
	if _, err := Refresh(ctx, RefreshOptions{CacheDir: t.TempDir(), MirrorURL: srv.URL, TUFRoot: anchor, Timeout: 5 * time.Second}); err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("got %v, want the context's deadline", err)
	}
}
