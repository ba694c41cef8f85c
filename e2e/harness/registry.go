package harness

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Registry is go-containerregistry's in-memory registry served over plain HTTP
// on 127.0.0.1 from the test process.
type Registry struct {
	// Host is "127.0.0.1:PORT", the registry part of every reference.
	Host string
	// Referrers tells whether the OCI referrers API is served.
	Referrers bool

	srv *http.Server

	mu       sync.Mutex
	busybox  v1.Layer // shared by every pushed image; built once per registry
	pauseRef string
}

// StartRegistry serves an empty registry until the test ends; referrers turns
// on the OCI 1.1 referrers API (cosign v3 bundles are found through it).
func StartRegistry(t T, referrers bool) *Registry {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("harness: registry listen: %v", err)
	}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(referrers))
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return &Registry{Host: l.Addr().String(), Referrers: referrers, srv: srv}
}

// Ref names repo in this registry; tagOrDigest is a tag or "sha256:...".
func (r *Registry) Ref(repo, tagOrDigest string) string {
	if strings.Contains(tagOrDigest, ":") {
		return r.Host + "/" + repo + "@" + tagOrDigest
	}
	return r.Host + "/" + repo + ":" + tagOrDigest
}

// ImageOption changes an image built by PushImage.
type ImageOption func(*imageSpec)

type imageSpec struct {
	entrypoint, cmd []string
	files           map[string]string
	os, arch        string
	labels          map[string]string
}

// WithEntrypoint replaces the default entrypoint ["sleep", "infinity"].
func WithEntrypoint(args ...string) ImageOption {
	return func(s *imageSpec) { s.entrypoint = args }
}

// WithCmd sets the image's Cmd (arguments to the entrypoint).
func WithCmd(args ...string) ImageOption { return func(s *imageSpec) { s.cmd = args } }

// WithFile adds a regular file to the image's unique layer.
func WithFile(path, content string) ImageOption {
	return func(s *imageSpec) { s.files[strings.TrimPrefix(path, "/")] = content }
}

// WithPlatform overrides the config's os and architecture (default linux/amd64;
// empty strings reproduce the cosign fixtures' platform-less configs).
func WithPlatform(os, arch string) ImageOption {
	return func(s *imageSpec) { s.os, s.arch = os, arch }
}

// WithLabel sets a config label.
func WithLabel(k, v string) ImageOption { return func(s *imageSpec) { s.labels[k] = v } }

// PushImage builds a busybox-static image and pushes it as repo:tag (tag may be
// empty: then only by digest). Each call adds a layer with unique content, so two
// pushes never share a digest. It returns the manifest digest "sha256:...".
func (r *Registry) PushImage(t T, repo, tag string, opts ...ImageOption) string {
	t.Helper()
	spec := imageSpec{
		entrypoint: []string{"sleep", "infinity"},
		files:      map[string]string{},
		os:         "linux",
		arch:       "amd64",
		labels:     map[string]string{},
	}
	for _, o := range opts {
		o(&spec)
	}
	base, err := r.busyboxLayer()
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce)
	spec.files["etc/criguard-image"] = fmt.Sprintf("%s:%s %s\n", repo, tag, hex.EncodeToString(nonce))
	uniq, err := layerFromFiles(spec.files, nil)
	if err != nil {
		t.Fatalf("harness: image layer: %v", err)
	}
	img, err := mutate.AppendLayers(empty.Image, base, uniq)
	if err != nil {
		t.Fatalf("harness: image: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("harness: image config: %v", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = spec.os, spec.arch
	cf.Config.Entrypoint, cf.Config.Cmd = spec.entrypoint, spec.cmd
	cf.Config.Env = []string{"PATH=/bin:/usr/bin:/sbin:/usr/sbin"}
	cf.Config.Labels = spec.labels
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatalf("harness: image config: %v", err)
	}
	dig, err := img.Digest()
	if err != nil {
		t.Fatalf("harness: image digest: %v", err)
	}
	target := r.Ref(repo, dig.String())
	if tag != "" {
		target = r.Ref(repo, tag)
	}
	ref, err := name.ParseReference(target, name.Insecure)
	if err != nil {
		t.Fatalf("harness: reference %q: %v", target, err)
	}
	if err := remote.Write(ref, img, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("harness: pushing %s: %v", target, err)
	}
	return dig.String()
}

// PushPause pushes the pause image containerd's sandboxes use (busybox's
// `sleep infinity`) once per registry and returns its reference.
func (r *Registry) PushPause(t T) string {
	t.Helper()
	r.mu.Lock()
	ref := r.pauseRef
	r.mu.Unlock()
	if ref != "" {
		return ref
	}
	r.PushImage(t, "pause", "3.10")
	ref = r.Ref("pause", "3.10")
	r.mu.Lock()
	r.pauseRef = ref
	r.mu.Unlock()
	return ref
}

// Manifest fetches ref's manifest as the registry serves it.
func (r *Registry) Manifest(t T, ref string) (mediaType string, body []byte) {
	t.Helper()
	n, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("harness: reference %q: %v", ref, err)
	}
	d, err := remote.Get(n, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatalf("harness: fetching %s: %v", ref, err)
	}
	return string(d.MediaType), d.Manifest
}

// busyboxLayer is a root filesystem of /bin/busybox (Debian's busybox-static)
// with a symlink per applet, built once per registry.
func (r *Registry) busyboxLayer() (v1.Layer, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.busybox != nil {
		return r.busybox, nil
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return nil, fmt.Errorf("busybox-static is needed for test images (`make tools` installs it): %w", err)
	}
	out, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list: %w", err)
	}
	links := map[string]string{}
	for _, applet := range strings.Fields(string(out)) {
		if applet != "busybox" {
			links["bin/"+applet] = "busybox"
		}
	}
	files := map[string]string{
		"bin/busybox": string(bb),
		"etc/passwd":  "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
		"etc/group":   "root:x:0:\nnogroup:x:65534:\n",
	}
	l, err := layerFromFiles(files, links, "dev", "proc", "sys", "tmp", "root", "var", "run", "etc", "bin")
	if err != nil {
		return nil, err
	}
	r.busybox = l
	return l, nil
}

// layerFromFiles makes a gzip layer of regular files (path -> content), symlinks
// (path -> target) and empty directories, in a stable order so equal input gives
// equal digests. bin/busybox is executable; other files are 0644.
func layerFromFiles(files, links map[string]string, dirs ...string) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Unix(0, 0)
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: mt}); err != nil {
			return nil, err
		}
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		mode := int64(0o644)
		if strings.HasPrefix(n, "bin/") {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: mode, Size: int64(len(files[n])), ModTime: mt}); err != nil {
			return nil, err
		}
		if _, err := io.WriteString(tw, files[n]); err != nil {
			return nil, err
		}
	}
	lnames := make([]string, 0, len(links))
	for n := range links {
		lnames = append(lnames, n)
	}
	sort.Strings(lnames)
	for _, n := range lnames {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: n, Linkname: links[n], Mode: 0o777, ModTime: mt}); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
}
