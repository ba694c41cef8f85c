package nodeinstall

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/criguard/criguard/systemd/unit"
	"github.com/criguard/criguard/verifier/trust"
)

// node lays out a host root like a real node: kubelet's unit and drop-ins,
// its configuration, its flag files, and a containerd socket path.
type node struct {
	name  string
	files map[string]string // host path -> testdata file
}

var nodes = []node{
	{
		// kind (kubeadm before NodeLocalCRISocket): the endpoint is a flag in
		// kubeadm-flags.env; config.yaml has no containerRuntimeEndpoint.
		name: "kind",
		files: map[string]string{
			"/etc/systemd/system/kubelet.service":                   "kubelet.service",
			"/etc/systemd/system/kubelet.service.d/10-kubeadm.conf": "10-kubeadm.conf",
			"/etc/systemd/system/kubelet.service.d/11-kind.conf":    "11-kind.conf",
			"/var/lib/kubelet/config.yaml":                          "kind-config.yaml",
			"/var/lib/kubelet/kubeadm-flags.env":                    "kind-kubeadm-flags.env",
		},
	},
	{
		// kubeadm 1.34 with NodeLocalCRISocket: containerRuntimeEndpoint in
		// config.yaml (and instance-config.yaml), no flag.
		name: "kubeadm-config",
		files: map[string]string{
			"/usr/lib/systemd/system/kubelet.service":                   "kubelet.service",
			"/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf": "10-kubeadm.conf",
			"/var/lib/kubelet/config.yaml":                              "kubeadm-config.yaml",
			"/var/lib/kubelet/instance-config.yaml":                     "instance-config.yaml",
			"/var/lib/kubelet/kubeadm-flags.env":                        "kubeadm-flags.env",
		},
	},
	{
		// kubeadm node whose image passes the endpoints in KUBELET_EXTRA_ARGS
		// (/etc/default/kubelet), and a config without the key.
		name: "kubeadm-extra-args",
		files: map[string]string{
			"/lib/systemd/system/kubelet.service":                   "kubelet.service",
			"/etc/systemd/system/kubelet.service.d/10-kubeadm.conf": "10-kubeadm.conf",
			"/var/lib/kubelet/config.yaml":                          "kind-config.yaml",
			"/var/lib/kubelet/kubeadm-flags.env":                    "kubeadm-flags.env",
			"/etc/default/kubelet":                                  "extra-args-default-kubelet",
		},
	},
}

// newRoot builds a temporary host root for n, plus a policy ConfigMap-like
// directory and a binary, and returns their paths.
func newRoot(t *testing.T, n node) (root string) {
	t.Helper()
	root = t.TempDir()
	for hostPath, src := range n.files {
		b, err := os.ReadFile(filepath.Join("testdata", src))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(root, hostPath), string(b))
	}
	for _, d := range []string{"/run/containerd", "/usr/local/bin", "/etc/systemd/system"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readHost(t *testing.T, root, hostPath string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, hostPath))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// configMapDir lays out a directory the way kubelet mounts a ConfigMap:
// ..<timestamp>/ with the files, ..data -> it, and each key -> ..data/key.
// Calling it again on the same dir swaps ..data atomically, as kubelet does.
func configMapDir(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	gen, err := os.MkdirTemp(dir, "..gen_")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range files {
		if err := os.WriteFile(filepath.Join(gen, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(gen), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			if _, ok := files[e.Name()]; !ok {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	for k := range files {
		link := filepath.Join(dir, k)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", k), link); err != nil {
			t.Fatal(err)
		}
	}
	if old != "" {
		os.RemoveAll(filepath.Join(dir, old))
	}
}

// snapshot maps every file, symlink and directory under root to a digest of
// its content (and mode), so two snapshots compare a whole host.
func snapshot(t *testing.T, root string, skip ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		for _, s := range skip {
			if rel == s || strings.HasPrefix(rel, s+"/") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out[rel] = "link:" + l
		case d.IsDir():
			out[rel] = "dir:" + info.Mode().String()
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(b)
			out[rel] = info.Mode().String() + ":" + hex.EncodeToString(s[:])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffSnapshots(a, b map[string]string) []string {
	var d []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			d = append(d, "removed "+k)
		} else if v != w {
			d = append(d, "changed "+k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			d = append(d, "added "+k)
		}
	}
	sort.Strings(d)
	return d
}

// fakeServices stands in for systemd on the temporary host: it records every
// call, and Enable/Disable create and remove the [Install] symlink the way
// systemctl does, so the installer's file-based checks see real effects.
type fakeServices struct {
	mu     sync.Mutex
	root   string
	calls  []string
	active map[string]bool
	// fail makes the named call ("restart kubelet.service") fail.
	fail map[string]error
}

func newFakeServices(root string) *fakeServices {
	return &fakeServices{root: root, active: map[string]bool{unit.KubeletUnit: true}}
}

func (f *fakeServices) record(call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	return f.fail[call]
}

func (f *fakeServices) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func (f *fakeServices) DaemonReload(context.Context) error { return f.record("daemon-reload") }

func (f *fakeServices) Enable(_ context.Context, name string) error {
	if err := f.record("enable " + name); err != nil {
		return err
	}
	link := filepath.Join(f.root, unit.WantsLink)
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	return os.Symlink(unit.UnitPath, link)
}

func (f *fakeServices) Disable(_ context.Context, name string) error {
	if err := f.record("disable " + name); err != nil {
		return err
	}
	return os.Remove(filepath.Join(f.root, unit.WantsLink))
}

func (f *fakeServices) set(name string, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.active[name] = on
}

func (f *fakeServices) Start(_ context.Context, name string) error {
	if err := f.record("start " + name); err != nil {
		return err
	}
	f.set(name, true)
	return nil
}

func (f *fakeServices) Restart(_ context.Context, name string) error {
	if err := f.record("restart " + name); err != nil {
		return err
	}
	f.set(name, true)
	return nil
}

func (f *fakeServices) Stop(_ context.Context, name string) error {
	if err := f.record("stop " + name); err != nil {
		return err
	}
	f.set(name, false)
	return nil
}

func (f *fakeServices) IsActive(_ context.Context, name string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.active[name], nil
}

// fakeReady: criguard is ready when its unit is active and serve would start
// with the unit's --trusted-root; kubelet when kubeletErr is nil.
type fakeReady struct {
	svc        *fakeServices
	kubeletErr error
	// badBinary, when set, is binary content that never serves (a broken release).
	badBinary string
}

func (r *fakeReady) CriguardReady(ctx context.Context) error {
	if ok, _ := r.svc.IsActive(ctx, unit.UnitName); !ok {
		return errors.New("criguard.service not active")
	}
	if r.badBinary != "" {
		if b, _ := os.ReadFile(filepath.Join(r.svc.root, unit.BinaryPath)); string(b) == r.badBinary {
			return errors.New("connection refused")
		}
	}
	return r.serveStarts()
}

// serveStarts loads the unit's --trusted-root the way serve does at start:
// serve refuses to start when the file is missing or does not load.
func (r *fakeReady) serveStarts() error {
	u, err := os.ReadFile(filepath.Join(r.svc.root, unit.UnitPath))
	if err != nil {
		return fmt.Errorf("criguard.service: %w", err)
	}
	p := unit.TrustedRootOf(u)
	if p == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(r.svc.root, p))
	if err != nil {
		return fmt.Errorf("criguard.service exited: --trusted-root: %w", err)
	}
	if _, err := trust.Parse(b); err != nil {
		return fmt.Errorf("criguard.service exited: --trusted-root %s: %w", p, err)
	}
	return nil
}

func (r *fakeReady) KubeletReady(context.Context) error { return r.kubeletErr }

// startWatch runs Watch in the background; stop ends it and reports its error.
func startWatch(t *testing.T, o Options, wo WatchOptions) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, o, wo) }()
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("watch: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// purgeRestores uninstalls with --purge and checks the host is back to before,
// byte for byte.
func (f *fixture) purgeRestores(t *testing.T, before map[string]string) {
	t.Helper()
	o := f.opts()
	o.Purge = true
	if _, err := Uninstall(context.Background(), o); err != nil {
		t.Fatalf("uninstall --purge: %v", err)
	}
	if d := diffSnapshots(before, snapshot(t, f.root)); len(d) > 0 {
		t.Errorf("uninstall --purge left the host different: %v", d)
	}
}
