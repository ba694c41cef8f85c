package policy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/criguard/criguard/internal/fixtureregistry"
)

// waitFor polls cond until it holds or 10 s pass (a deadline, not a timing
// assertion: file events arrive asynchronously).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type reloads struct {
	mu  sync.Mutex
	got []ReloadResult
}

func (r *reloads) add(x ReloadResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, x)
}

func (r *reloads) failures() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, x := range r.got {
		if x.Err != nil {
			n++
		}
	}
	return n
}

func startWatch(t *testing.T, s *Store) chan struct{} {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	trigger := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- s.Watch(ctx, trigger) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("watch: %v", err)
		}
	})
	return trigger
}

func rulesImages(s *Store) string {
	return strings.Join(s.Current().Policies[0].Rules[0].Images, ",")
}

func policyWithImage(image string) string {
	return native("", "  - name: r\n    images: [\""+image+"\"]\n    action: Allow\n")
}

func TestStoreWatchEditAndBrokenFile(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "policy.yaml", policyWithImage("a/*"))
	var rl reloads
	s, err := NewStore(dir, StoreOptions{OnReload: rl.add, Debounce: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	startWatch(t, s)

	// A valid edit takes effect.
	writeFile(t, dir, "policy.yaml", policyWithImage("b/*"))
	waitFor(t, "the edit to load", func() bool { return rulesImages(s) == "b/*" })
	if s.Current().Generation != 2 {
		t.Fatalf("generation %d", s.Current().Generation)
	}

	// An editor's save: write a temp file, rename it over the policy.
	tmp := writeFile(t, dir, ".policy.yaml.swp", policyWithImage("c/*"))
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the renamed file to load", func() bool { return rulesImages(s) == "c/*" })

	// A broken edit is refused; the last good policy stays, the hook hears.
	writeFile(t, dir, "policy.yaml", "apiVersion: criguard.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: p}\nspec: {mode: Sometimes}\n")
	waitFor(t, "the refusal", func() bool { return rl.failures() > 0 })
	if rulesImages(s) != "c/*" || s.Current().Generation != 3 {
		t.Fatalf("old policy not kept: %s gen %d", rulesImages(s), s.Current().Generation)
	}
	// A new file next to it, also broken: still refused.
	writeFile(t, dir, "extra.yaml", "nope: [")
	waitFor(t, "the second refusal", func() bool { return rl.failures() > 1 })
	if rulesImages(s) != "c/*" {
		t.Fatal("old policy not kept")
	}
	// Fixing both loads.
	os.Remove(filepath.Join(dir, "extra.yaml"))
	writeFile(t, dir, "policy.yaml", policyWithImage("d/*"))
	waitFor(t, "the fix to load", func() bool { return rulesImages(s) == "d/*" })
}

// A ConfigMap volume: the files are symlinks through "..data", a symlink to a
// timestamped directory that kubelet swaps atomically.
func TestStoreWatchConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	mk := func(name, image string) {
		d := filepath.Join(dir, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, d, "policy.yaml", policyWithImage(image))
	}
	mk("..2026_01_01_00_00_00.1", "a/*")
	if err := os.Symlink("..2026_01_01_00_00_00.1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/policy.yaml", filepath.Join(dir, "policy.yaml")); err != nil {
		t.Fatal(err)
	}
	s, err := NewStore(dir, StoreOptions{Debounce: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if rulesImages(s) != "a/*" {
		t.Fatal(rulesImages(s))
	}
	startWatch(t, s)
	mk("..2026_01_01_00_01_00.2", "b/*")
	if err := os.Symlink("..2026_01_01_00_01_00.2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_00_00.1"))
	waitFor(t, "the swapped ConfigMap to load", func() bool { return rulesImages(s) == "b/*" })
}

// A single-file path is watched through its directory.
func TestStoreWatchFileAndTrigger(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "policy.yaml", policyWithImage("a/*"))
	var rl reloads
	s, err := NewStore(path, StoreOptions{OnReload: rl.add, Debounce: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	trigger := startWatch(t, s)
	waitFor(t, "the watch to start (its initial reload)", func() bool {
		rl.mu.Lock()
		defer rl.mu.Unlock()
		return len(rl.got) == 1
	})
	// With an hour of debounce only the trigger (SIGHUP) can reload.
	writeFile(t, dir, "policy.yaml", policyWithImage("b/*"))
	trigger <- struct{}{}
	waitFor(t, "the triggered reload", func() bool { return rulesImages(s) == "b/*" })
	rl.mu.Lock()
	last := rl.got[len(rl.got)-1]
	rl.mu.Unlock()
	if !last.Changed || last.Err != nil || last.Generation != 2 {
		t.Fatalf("%+v", last)
	}
}

func TestStoreInvalidAtStart(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "p.yaml", "kind: [")
	if _, err := NewStore(dir, StoreOptions{}); err == nil {
		t.Fatal("started with an invalid policy")
	}
	if err := NewStaticStore(&Set{}).Reload(); err == nil {
		t.Fatal("static store reloaded")
	}
}

// A changed key file is a changed policy, even if no YAML changed.
func TestStoreReloadKeyFileChange(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "k.pub", testKey(t))
	writeFile(t, dir, "p.yaml", native("", "  - name: r\n    images: [\"*\"]\n    attestors:\n      entries:\n      - key: {file: k.pub}\n"))
	s, err := NewStore(dir+"/p.yaml", StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "k.pub", testKey(t))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if s.Current().Generation != 2 {
		t.Fatal("key change not seen")
	}
}

// The policy directory replaced as a whole (rm -rf and mkdir, a new tree
// renamed into place, the parent itself replaced): the watch goes with the
// old directory, so the store must watch the new one, count the missing path
// as a refused reload that keeps the last good policy, and load what the new
// directory holds, again and again, without a trigger (SIGHUP).
func TestStoreWatchDirectoryReplaced(t *testing.T) {
	cases := []struct {
		name string
		file bool // the store's path is policy.yaml, not the directory
		// remove takes the directory away; create puts the new one with
		// image in place.
		remove func(t *testing.T, top, dir string)
		create func(t *testing.T, top, dir, image string)
	}{
		{
			name:   "removed and created again",
			remove: func(t *testing.T, _, dir string) { mustRemoveAll(t, dir) },
			create: func(t *testing.T, _, dir, image string) { mkPolicyDir(t, dir, image) },
		},
		{
			name:   "file path, its directory removed and created again",
			file:   true,
			remove: func(t *testing.T, _, dir string) { mustRemoveAll(t, dir) },
			create: func(t *testing.T, _, dir, image string) { mkPolicyDir(t, dir, image) },
		},
		{
			name: "renamed away, a new tree renamed into place",
			remove: func(t *testing.T, top, dir string) {
				if err := os.Rename(dir, filepath.Join(top, "old-"+time.Now().Format("150405.000000000"))); err != nil {
					t.Fatal(err)
				}
			},
			create: func(t *testing.T, top, dir, image string) {
				tmp := filepath.Join(top, "new-"+image[:1])
				mkPolicyDir(t, tmp, image)
				if err := os.Rename(tmp, dir); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name:   "its parent removed and created again",
			remove: func(t *testing.T, top, dir string) { mustRemoveAll(t, filepath.Dir(dir)) },
			create: func(t *testing.T, _, dir, image string) { mkPolicyDir(t, dir, image) },
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			top := t.TempDir()
			dir := filepath.Join(top, "etc", "policy.d")
			mkPolicyDir(t, dir, "a/*")
			path := dir
			if tc.file {
				path = filepath.Join(dir, "policy.yaml")
			}
			var rl reloads
			s, err := NewStore(path, StoreOptions{OnReload: rl.add, Debounce: 20 * time.Millisecond, Retry: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			startWatch(t, s)
			waitFor(t, "the watch to start (its initial reload)", func() bool {
				rl.mu.Lock()
				defer rl.mu.Unlock()
				return len(rl.got) >= 1
			})
			for i, image := range []string{"b/*", "c/*"} {
				failed := rl.failures()
				tc.remove(t, top, dir)
				waitFor(t, "the missing directory refused as a reload", func() bool { return rl.failures() > failed })
				if got := rulesImages(s); got != []string{"a/*", "b/*"}[i] {
					t.Fatalf("replacement %d: the last good policy was not kept while the directory was missing: %s", i+1, got)
				}
				tc.create(t, top, dir, image)
				waitFor(t, "the new directory's policy "+image+" to load", func() bool { return rulesImages(s) == image })
			}
			// And the watch on the latest directory sees edits inside it.
			writeFile(t, dir, "policy.yaml", policyWithImage("d/*"))
			waitFor(t, "an edit in the new directory to load", func() bool { return rulesImages(s) == "d/*" })
		})
	}
}

func mkPolicyDir(t *testing.T, dir, image string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "policy.yaml", policyWithImage(image))
}

func mustRemoveAll(t *testing.T, path string) {
	t.Helper()
	if err := os.RemoveAll(path); err != nil {
		t.Fatal(err)
	}
}

// TestStoreWatchTrustedRoot: the trusted root file is watched like the
// policy: a replaced root (renamed over it) makes a new generation; a broken
// one is refused and the last good set stays.
func TestStoreWatchTrustedRoot(t *testing.T) {
	polDir, rootDir := t.TempDir(), t.TempDir()
	writeFile(t, polDir, "policy.yaml", policyWithImage("a/*"))
	fx, err := fixtureregistry.Dir(fixtureregistry.Sigstore)
	if err != nil {
		t.Fatal(err)
	}
	fixtureRoot, err := os.ReadFile(filepath.Join(fx, "trusted_root.json"))
	if err != nil {
		t.Fatal(err)
	}
	publicGood, err := os.ReadFile(filepath.Join("..", "trust", "embedded", "public-good.json"))
	if err != nil {
		t.Fatal(err)
	}
	rootPath := writeFile(t, rootDir, "trusted_root.json", string(fixtureRoot))
	var rl reloads
	s, err := NewStore(polDir, StoreOptions{OnReload: rl.add, Debounce: 20 * time.Millisecond, TrustedRoot: rootPath})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.WatchTrustedRoot(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("WatchTrustedRoot: %v", err)
		}
	})
	first := s.Current()
	tmp := writeFile(t, rootDir, ".new", string(publicGood))
	if err := os.Rename(tmp, rootPath); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new root to load", func() bool { return s.Current().Generation > first.Generation })
	if s.Current().Policies[0].Trust == first.Policies[0].Trust {
		t.Fatal("the new set kept the old root")
	}
	gen := s.Current().Generation
	writeFile(t, rootDir, "trusted_root.json", `{"mediaType": "broken"}`)
	waitFor(t, "the broken root to be refused", func() bool { return rl.failures() > 0 })
	if s.Current().Generation != gen {
		t.Fatal("a broken root replaced the set")
	}
}
