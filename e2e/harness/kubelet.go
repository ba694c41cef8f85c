package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// KubeletOptions configures a standalone kubelet (no API server, static pods).
type KubeletOptions struct {
	// RuntimeEndpoint is containerRuntimeEndpoint, e.g. criguard's Endpoint().
	RuntimeEndpoint string
	// ImageEndpoint is imageServiceEndpoint (default: RuntimeEndpoint).
	ImageEndpoint string
	// StaticPodDir is staticPodPath (default: a new temp dir).
	StaticPodDir string
	// NodeName is --hostname-override (default: a unique name).
	NodeName string
	// ExtraConfig is YAML lines appended to the KubeletConfiguration.
	ExtraConfig string
}

// Kubelet is a running standalone kubelet.
type Kubelet struct {
	StaticPodDir, RootDir, NodeName, ConfigPath, Dir string

	proc *process
}

// Logs returns everything the kubelet logged so far.
func (k *Kubelet) Logs() string { return k.proc.logs() }

// StartKubelet starts kubelet with the KubeletConfiguration from NODE-ENV.md,
// free ports, and a temporary root dir, pod log dir and static pod dir. It
// waits for its healthz endpoint. Cleanup stops it and detaches its volume
// mounts; the pods it made are removed by the runtime's own teardown.
func StartKubelet(t T, opts KubeletOptions) *Kubelet {
	t.Helper()
	RequireRoot(t)
	bin := Tool(t, "kubelet")
	if opts.RuntimeEndpoint == "" {
		t.Fatalf("harness: StartKubelet needs a RuntimeEndpoint")
	}
	opts.RuntimeEndpoint = endpoint(opts.RuntimeEndpoint)
	if opts.ImageEndpoint == "" {
		opts.ImageEndpoint = opts.RuntimeEndpoint
	}
	dir := TempDir(t, "kubelet")
	if opts.StaticPodDir == "" {
		opts.StaticPodDir = filepath.Join(dir, "manifests")
	}
	if opts.NodeName == "" {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		opts.NodeName = "node-" + hex.EncodeToString(b)
	}
	k := &Kubelet{
		StaticPodDir: opts.StaticPodDir,
		RootDir:      filepath.Join(dir, "root"),
		NodeName:     opts.NodeName,
		ConfigPath:   filepath.Join(dir, "config.yaml"),
		Dir:          dir,
	}
	for _, d := range []string{k.StaticPodDir, k.RootDir, filepath.Join(dir, "pods-logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("harness: %v", err)
		}
	}
	port, healthz := FreePort(t), FreePort(t)
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failCgroupV1: false
failSwapOn: false
localStorageCapacityIsolation: false
evictionHard: {}
staticPodPath: %q
fileCheckFrequency: 1s
syncFrequency: 5s
containerRuntimeEndpoint: %q
imageServiceEndpoint: %q
podLogsDir: %q
address: 127.0.0.1
port: %d
healthzBindAddress: 127.0.0.1
healthzPort: %d
readOnlyPort: 0
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
%s
`, k.StaticPodDir, opts.RuntimeEndpoint, opts.ImageEndpoint, filepath.Join(dir, "pods-logs"), port, healthz, opts.ExtraConfig)
	if err := os.WriteFile(k.ConfigPath, []byte(cfg), 0o644); err != nil {
		t.Fatalf("harness: %v", err)
	}
	k.proc = startProcess(t, "kubelet", filepath.Join(dir, "kubelet.log"), os.Environ(), bin,
		"--config", k.ConfigPath, "--root-dir", k.RootDir, "--hostname-override", k.NodeName,
		"--cert-dir", filepath.Join(dir, "pki"), "--v", "2")
	t.Cleanup(func() {
		k.proc.stop(15 * time.Second)
		// kubelet mounts projected/empty-dir volumes under its root dir.
		unmountUnder(t, k.Dir)
		removeLogLinks(t, k.Dir)
	})
	dumpOnFailure(t, k.proc, 60)
	Eventually(t, 90*time.Second, "kubelet healthz", func() error {
		if k.proc.exited() {
			return fmt.Errorf("kubelet exited: %v\n%s", k.proc.waitErr(), tail(k.proc.logs(), 30))
		}
		return httpGetOK(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", healthz))
	})
	return k
}

// Stop stops the kubelet (SIGTERM, then SIGKILL after 15s). Its pods keep running.
func (k *Kubelet) Stop(t T) {
	t.Helper()
	k.proc.stop(15 * time.Second)
}

// Exited reports whether the kubelet process has ended.
func (k *Kubelet) Exited() bool { return k.proc.exited() }

// WriteStaticPod writes manifest (YAML) as <name>.yaml in StaticPodDir
// atomically, so kubelet never reads half a file.
func (k *Kubelet) WriteStaticPod(t T, name, manifest string) {
	t.Helper()
	tmp := filepath.Join(k.Dir, "."+name+".yaml.tmp")
	if err := os.WriteFile(tmp, []byte(manifest), 0o644); err != nil {
		t.Fatalf("harness: %v", err)
	}
	if err := os.Rename(tmp, filepath.Join(k.StaticPodDir, name+".yaml")); err != nil {
		t.Fatalf("harness: %v", err)
	}
}

// RemoveStaticPod deletes <name>.yaml from StaticPodDir.
func (k *Kubelet) RemoveStaticPod(t T, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(k.StaticPodDir, name+".yaml")); err != nil {
		t.Fatalf("harness: %v", err)
	}
}

// StaticPod is a minimal hostNetwork pod manifest running image with command
// (empty: the image's entrypoint).
func StaticPod(name, namespace, image string, command ...string) string {
	cmd := ""
	if len(command) > 0 {
		cmd = "    command: " + compactJSON(command) + "\n"
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: %s
spec:
  hostNetwork: true
  restartPolicy: Always
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: %s
    imagePullPolicy: IfNotPresent
%s`, name, namespace, image, cmd)
}

func compactJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only string slices are encoded
	}
	return string(b)
}

// httpGetOK GETs url with a short timeout and wants 200.
func httpGetOK(t T, url string) error {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return nil
}

// removeLogLinks deletes the symlinks kubelet made in /var/log/containers (a
// path it does not let us move) that point into dir, our pod log directory.
func removeLogLinks(t T, dir string) {
	const linkDir = "/var/log/containers"
	ents, err := os.ReadDir(linkDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		p := filepath.Join(linkDir, e.Name())
		if target, err := os.Readlink(p); err == nil && strings.HasPrefix(target, dir+"/") {
			if err := os.Remove(p); err != nil {
				t.Logf("harness: %v", err)
			}
		}
	}
}
