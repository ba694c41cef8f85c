//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/criguard/criguard/e2e/harness"
	"github.com/criguard/criguard/systemd/nodeinstall"
	"github.com/criguard/criguard/systemd/unit"
)

// TestNodeInstall runs `criguard node install` against a real kubelet and
// containerd. The node's host root is a temporary directory laid out like a
// kubeadm node (kubelet's unit and drop-in, /var/lib/kubelet/config.yaml with
// kubelet's real configuration); these machines have no systemd as PID 1, so
// the ServiceManager is nodeServices: "starting criguard.service" runs the
// installed binary with the installed unit's ExecStart (paths mapped into the
// root), and "restarting kubelet.service" restarts the harness kubelet with
// the endpoints the installed config.yaml names. Everything else — the files,
// the edits, the readiness checks through criguard's socket — is the real
// installer on the real components.
func TestNodeInstall(t *testing.T) {
	harness.RequireRoot(t)
	ctx := t.Context()
	reg := harness.StartRegistry(t, true)
	ctd := harness.StartContainerd(t, harness.ContainerdOptions{Registry: reg})

	// Images: one signed with a key the policy trusts, one unsigned.
	signedDigest := reg.PushImage(t, "e2e/signed", "v1")
	reg.PushImage(t, "e2e/unsigned", "v1")
	cs := harness.Cosign(t)
	keyDir := harness.TempDir(t, "keys")
	key, pub := cs.GenerateKeyPair(t, keyDir)
	cs.Sign(t, key, reg.Ref("e2e/signed", signedDigest), false)
	pubPEM, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}

	// The node: kubelet runs on containerd directly, as before any install.
	root := harness.TempDir(t, "node")
	svc := newNodeServices(t, root, ctd)
	svc.startKubelet(t, ctd.Endpoint(), ctd.Endpoint())
	layOutNode(t, root, svc.kubelet.ConfigPath)
	before := nodeSnapshot(t, root)

	// The policy, as the DaemonSet mounts it (a ConfigMap directory). Keys are
	// inline: a key file path would name the real host's /etc/criguard. The
	// keys ConfigMap holds a private Sigstore's trusted root, which serve must
	// be started with.
	cm := harness.TempDir(t, "cm")
	policyDir, keysDir := filepath.Join(cm, "policy"), filepath.Join(cm, "keys")
	for _, d := range []string{policyDir, keysDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	trustedRoot := privateTrustedRoot(t)
	harness.WriteFile(t, filepath.Join(keysDir, unit.TrustedRootFile), trustedRoot)
	policy := fmt.Sprintf(`apiVersion: criguard.dev/v1alpha1
kind: ImagePolicy
metadata: {name: e2e}
spec:
  mode: Enforce
  unmatchedImages: Deny
  failurePolicy: Fail
  rules:
  - name: e2e-signed
    images: [%q]
    action: Verify
    attestors:
      entries:
      - key:
          data: |
%s`, reg.Host+"/e2e/*", nodeIndent(string(pubPEM), 12))
	harness.WriteFile(t, filepath.Join(policyDir, "policy.yaml"), policy)

	binary := harness.CriguardBinary(t)
	opts := nodeinstall.Options{
		HostRoot:     root,
		Binary:       binary,
		PolicyDir:    policyDir,
		KeysDir:      keysDir,
		Services:     svc,
		Ready:        nodeReady{root: root, svc: svc},
		ReadyTimeout: 90 * time.Second,
		Log:          nodeTestLog{t},
	}

	// Install.
	start := time.Now()
	res, err := nodeinstall.Install(ctx, opts)
	t.Logf("install took %s (criguard started, kubelet restarted through it, both ready)", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("install: %v\n--- criguard log ---\n%s", err, svc.criguardLogs())
	}
	if res.Unchanged() {
		t.Fatal("first install changed nothing")
	}
	guardSock := "unix://" + filepath.Join(root, unit.SocketPath)
	if got := svc.kubeletEndpoints(); got != [2]string{guardSock, guardSock} {
		t.Fatalf("kubelet runs on %q, want criguard's socket %s for both endpoints", got, guardSock)
	}
	if err := nodeinstall.Status(ctx, opts); err != nil {
		t.Errorf("status after install: %v", err)
	}
	checkServesTrustedRoot(t, svc, trustedRoot)
	restarts := svc.kubeletStarts

	// Idempotent.
	svc.takeCalls()
	if res, err := nodeinstall.Install(ctx, opts); err != nil || !res.Unchanged() {
		t.Errorf("second install: %v, changes %q", err, res.Changes)
	}
	if calls := svc.takeCalls(); len(calls) != 0 {
		t.Errorf("second install called %q", calls)
	}

	// kubelet, through criguard: the signed static pod runs, the unsigned one
	// never gets a container.
	node := svc.node
	signedImage := reg.Ref("e2e/signed", "v1")
	unsignedImage := reg.Ref("e2e/unsigned", "v1")
	svc.kubelet.WriteStaticPod(t, "signed", harness.StaticPod("signed", "default", signedImage))
	svc.kubelet.WriteStaticPod(t, "unsigned", harness.StaticPod("unsigned", "default", unsignedImage))
	t.Run("signed static pod runs through criguard", func(t *testing.T) {
		harness.Eventually(t, 120*time.Second, "the signed static pod's container running", func() error {
			return nodePodRunning(t, ctd.Endpoint(), "signed-"+node)
		})
	})
	t.Run("unsigned static pod refused", func(t *testing.T) {
		harness.Eventually(t, 120*time.Second, "kubelet reporting SignatureValidationFailed for the unsigned pod", func() error {
			if !strings.Contains(svc.kubelet.Logs(), "SignatureValidationFailed") {
				return errors.New("not in kubelet's log yet")
			}
			return nil
		})
		if err := nodePodRunning(t, ctd.Endpoint(), "unsigned-"+node); err == nil {
			t.Error("the unsigned static pod has a running container")
		}
		if !strings.Contains(svc.criguardLogs(), "e2e/unsigned") {
			t.Errorf("criguard logged no decision on the unsigned image:\n%s", svc.criguardLogs())
		}
		// (crictl images ignores its filter on containerd: ask for the image
		// itself; the signed one, pulled, is the control.)
		if _, err := harness.Crictl(t, ctd.Endpoint(), "inspecti", "-q", signedImage); err != nil {
			t.Errorf("inspecti of the pulled signed image: %v", err)
		}
		if out, err := harness.Crictl(t, ctd.Endpoint(), "inspecti", "-q", unsignedImage); err == nil {
			t.Errorf("the unsigned image was pulled into containerd: %.300s", out)
		}
	})

	// Upgrade: different binary bytes replace the binary and restart only
	// criguard; kubelet keeps running and reconnects.
	upgraded := filepath.Join(harness.TempDir(t, "bin"), "criguard")
	b, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	harness.WriteFile(t, upgraded, string(append(b, []byte("\x00upgrade")...)))
	if err := os.Chmod(upgraded, 0o755); err != nil {
		t.Fatal(err)
	}
	upOpts := opts
	upOpts.Binary = upgraded
	pidBefore := svc.criguardPID()
	start = time.Now()
	if _, err := nodeinstall.Install(ctx, upOpts); err != nil {
		t.Fatalf("upgrade: %v\n%s", err, svc.criguardLogs())
	}
	t.Logf("upgrade took %s", time.Since(start).Round(time.Millisecond))
	if calls := svc.takeCalls(); len(calls) != 1 || calls[0] != "restart criguard.service" {
		t.Errorf("upgrade calls %q, want only a criguard restart", calls)
	}
	if svc.kubeletStarts != restarts || svc.criguardPID() == pidBefore {
		t.Errorf("upgrade: kubelet starts %d -> %d, criguard pid %d -> %d", restarts, svc.kubeletStarts, pidBefore, svc.criguardPID())
	}
	harness.Eventually(t, 60*time.Second, "the signed pod still running after criguard's restart", func() error {
		return nodePodRunning(t, ctd.Endpoint(), "signed-"+node)
	})

	// Uninstall: kubelet goes back to containerd first; then criguard stops
	// and its files go; the node's files are byte for byte what they were.
	start = time.Now()
	if _, err := nodeinstall.Uninstall(ctx, opts); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	t.Logf("uninstall took %s", time.Since(start).Round(time.Millisecond))
	if got := svc.kubeletEndpoints(); got != [2]string{ctd.Endpoint(), ctd.Endpoint()} {
		t.Errorf("after uninstall kubelet runs on %q, want containerd %s", got, ctd.Endpoint())
	}
	if svc.criguardRunning() {
		t.Error("criguard still runs after uninstall")
	}
	after := nodeSnapshot(t, root, unit.ConfigDir)
	if d := nodeSnapshotDiff(before, after); len(d) > 0 {
		t.Errorf("uninstall left the node different: %v", d)
	}
	if err := nodeinstall.Uninstalled(ctx, opts); err != nil {
		t.Errorf("Uninstalled: %v", err)
	}
	// kubelet talks to containerd directly again: nothing judges the
	// unsigned image any more, so its static pod finally runs.
	harness.Eventually(t, 120*time.Second, "the unsigned static pod running with kubelet on containerd directly", func() error {
		return nodePodRunning(t, ctd.Endpoint(), "unsigned-"+node)
	})
}

// TestNodeInstallCLIDryRun runs the real `criguard node install --dry-run`
// binary the way the DaemonSet does (--host-root, --policy-dir), with the real
// systemctl path: chroot into the host root and run the host's nsenter. The
// host's nsenter here is a busybox script that logs its arguments and answers
// is-active like systemctl; the dry run must list every change, ask systemd
// only read-only questions, and leave the host untouched.
func TestNodeInstallCLIDryRun(t *testing.T) {
	harness.RequireRoot(t)
	root := harness.TempDir(t, "clinode")
	cfg := filepath.Join(harness.TempDir(t, "clicfg"), "config.yaml")
	harness.WriteFile(t, cfg, "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"+
		"containerRuntimeEndpoint: \"unix:///tmp/x.sock\"\nimageServiceEndpoint: \"unix:///tmp/x.sock\"\nmaxPods: 17 # kept\n")
	layOutNode(t, root, cfg)
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("static busybox (apt-get install busybox-static, `make tools`): %v", err)
	}
	for _, d := range []string{"bin", "usr/bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	harness.WriteFile(t, filepath.Join(root, "bin/sh"), string(busybox))
	harness.WriteFile(t, filepath.Join(root, "usr/bin/nsenter"),
		"#!/bin/sh\necho \"$@\" >> /nsenter.log\ncase \"${10}\" in is-active) exit 3 ;; esac\nexit 0\n")
	for _, p := range []string{"bin/sh", "usr/bin/nsenter"} {
		if err := os.Chmod(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	policyDir := harness.TempDir(t, "clipol")
	harness.WriteFile(t, filepath.Join(policyDir, "policy.yaml"), "apiVersion: criguard.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: p}\nspec: {unmatchedImages: Deny}\n")
	before := nodeSnapshot(t, root)

	// A trusted root serve could not load is refused, naming the file.
	keysDir := harness.TempDir(t, "clikeys")
	rootFile := filepath.Join(keysDir, unit.TrustedRootFile)
	harness.WriteFile(t, rootFile, `{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`)
	stdout, stderr, code := harness.RunCriguard(t, "node", "install", "--host-root", root, "--policy-dir", policyDir, "--keys-dir", keysDir, "--dry-run")
	if code != 1 || !strings.Contains(stderr, "trusted root "+rootFile+": ") {
		t.Errorf("install with a trusted root that trusts nothing: exit %d\n%s\n%s", code, stdout, stderr)
	}

	harness.WriteFile(t, rootFile, privateTrustedRoot(t))
	stdout, stderr, code = harness.RunCriguard(t, "node", "install", "--host-root", root, "--policy-dir", policyDir, "--keys-dir", keysDir, "--dry-run")
	if code != 0 {
		t.Fatalf("criguard node install --dry-run: exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"would write /usr/local/bin/criguard",
		"would write /etc/systemd/system/criguard.service (systemd unit, serve --trusted-root /etc/criguard/keys/trusted_root.json,",
		"would write /etc/criguard/keys/trusted_root.json",
		"would write /etc/criguard/policy/policy.yaml",
		"would systemctl enable criguard.service",
		"would systemctl start criguard.service",
		"would replace /var/lib/kubelet/config.yaml (kubelet containerRuntimeEndpoint unix:///run/containerd/containerd.sock -> unix:///run/criguard/criguard.sock",
		"would systemctl restart kubelet.service",
		"dry run: ",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("dry-run output lacks %q:\n%s", want, stdout)
		}
	}
	log, err := os.ReadFile(filepath.Join(root, "nsenter.log"))
	if err != nil {
		t.Fatalf("the host's nsenter was never run (chroot into the host root): %v", err)
	}
	if got, want := strings.TrimSpace(string(log)), "--target 1 --mount --uts --ipc --net --pid -- systemctl is-active --quiet criguard.service"; got != want {
		t.Errorf("systemctl calls during a dry run:\n%s\nwant only:\n%s", got, want)
	}
	if err := os.Remove(filepath.Join(root, "nsenter.log")); err != nil {
		t.Fatal(err)
	}
	if d := nodeSnapshotDiff(before, nodeSnapshot(t, root)); len(d) > 0 {
		t.Errorf("dry run changed the host: %v", d)
	}
}

// privateTrustedRoot is the trusted root of the private Sigstore stack that
// signed testdata/sigstore.
func privateTrustedRoot(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(t), "testdata", "sigstore", unit.TrustedRootFile))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkServesTrustedRoot checks that the installed unit passes the host's
// trusted root to serve, and that the criguard it started (serving: install
// waited for CRI through it) runs with it.
func checkServesTrustedRoot(t *testing.T, svc *nodeServices, want string) {
	t.Helper()
	installed, err := os.ReadFile(filepath.Join(svc.root, unit.UnitPath))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(installed), "\nExecStart="+unit.BinaryPath+" serve ") ||
		!strings.Contains(string(installed), " --trusted-root "+unit.TrustedRootPath+"\n") {
		t.Errorf("the installed unit does not pass --trusted-root %s:\n%s", unit.TrustedRootPath, installed)
	}
	if b, err := os.ReadFile(filepath.Join(svc.root, unit.TrustedRootPath)); err != nil || string(b) != want {
		t.Errorf("trusted root on the host: %v (equal to the ConfigMap's: %v)", err, string(b) == want)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", svc.criguardPID()))
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	wantArgs := []string{"--trusted-root", filepath.Join(svc.root, unit.TrustedRootPath)}
	if i := slices.Index(args, wantArgs[0]); i < 0 || i+1 >= len(args) || args[i+1] != wantArgs[1] {
		t.Errorf("running criguard's arguments %q lack %q", args, wantArgs)
	}
}

// layOutNode writes a kubeadm-style node under root: kubelet's unit and
// drop-in, kubeadm-flags.env, and kubelet's real configuration with the
// endpoints written as the host would see them.
func layOutNode(t *testing.T, root, kubeletConfig string) {
	t.Helper()
	cfg, err := os.ReadFile(kubeletConfig)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(cfg, &m); err != nil {
		t.Fatal(err)
	}
	text := string(cfg)
	for _, k := range []string{"containerRuntimeEndpoint", "imageServiceEndpoint"} {
		v, _ := m[k].(string)
		if v == "" {
			t.Fatalf("harness kubelet config has no %s", k)
		}
		text = strings.ReplaceAll(text, fmt.Sprintf("%q", v), unit.UpstreamEndpoint)
	}
	text = "# kubelet configuration of the e2e node (kubeadm layout)\n" + text
	files := map[string]string{
		"/var/lib/kubelet/config.yaml":            text,
		"/var/lib/kubelet/kubeadm-flags.env":      "KUBELET_KUBEADM_ARGS=\"--node-ip=127.0.0.1 --pod-infra-container-image=pause\"\n",
		"/usr/lib/systemd/system/kubelet.service": "[Unit]\nDescription=kubelet\n[Service]\nExecStart=/usr/bin/kubelet\nRestart=always\n[Install]\nWantedBy=multi-user.target\n",
		"/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf": "[Service]\n" +
			"Environment=\"KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml\"\n" +
			"EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env\nEnvironmentFile=-/etc/default/kubelet\n" +
			"ExecStart=\nExecStart=/usr/bin/kubelet $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS\n",
	}
	for p, content := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		harness.WriteFile(t, filepath.Join(root, p), content)
	}
	for _, d := range []string{"/etc/systemd/system", "/usr/local/bin", "/run"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// nodeServices is the node's systemd, played by the harness.
type nodeServices struct {
	t    *testing.T
	root string
	ctd  *harness.Containerd

	mu    sync.Mutex
	calls []string

	// kubelet
	node, staticDir string
	kubelet         *harness.Kubelet
	endpoints       [2]string
	kubeletStarts   int

	// criguard
	guard    *exec.Cmd
	guardLog string
	done     chan struct{}
}

func newNodeServices(t *testing.T, root string, ctd *harness.Containerd) *nodeServices {
	s := &nodeServices{
		t: t, root: root, ctd: ctd,
		node:      "e2e-node-" + filepath.Base(root)[len("cg-node-"):],
		staticDir: filepath.Join(harness.TempDir(t, "static"), "manifests"),
		guardLog:  filepath.Join(harness.TempDir(t, "guardlog"), "criguard.log"),
	}
	s.node = strings.ToLower(strings.ReplaceAll(s.node, "_", "-"))
	t.Cleanup(func() { s.stopGuard() })
	return s
}

func (s *nodeServices) record(c string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, c)
}

func (s *nodeServices) takeCalls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls
	s.calls = nil
	return c
}

func (s *nodeServices) startKubelet(t *testing.T, runtimeEP, imageEP string) {
	if s.kubelet != nil {
		s.kubelet.Stop(t)
	}
	s.kubelet = harness.StartKubelet(t, harness.KubeletOptions{
		RuntimeEndpoint: runtimeEP, ImageEndpoint: imageEP, StaticPodDir: s.staticDir, NodeName: s.node,
	})
	s.endpoints = [2]string{runtimeEP, imageEP}
	s.kubeletStarts++
}

func (s *nodeServices) kubeletEndpoints() [2]string { return s.endpoints }

// hostToReal maps an endpoint written on the node to the socket that really
// serves it: criguard's under the root, containerd's from the harness.
func (s *nodeServices) hostToReal(ep string) (string, error) {
	p := strings.TrimPrefix(ep, "unix://")
	switch filepath.Clean(strings.Replace(p, "/var/run/", "/run/", 1)) {
	case unit.SocketPath:
		return "unix://" + filepath.Join(s.root, unit.SocketPath), nil
	case strings.TrimPrefix(unit.UpstreamEndpoint, "unix://"):
		return s.ctd.Endpoint(), nil
	}
	return "", fmt.Errorf("endpoint %q names no socket on this node", ep)
}

func (s *nodeServices) DaemonReload(context.Context) error {
	s.record("daemon-reload")
	return nil
}

func (s *nodeServices) Enable(_ context.Context, name string) error {
	s.record("enable " + name)
	link := filepath.Join(s.root, unit.WantsLink)
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	return os.Symlink(unit.UnitPath, link)
}

func (s *nodeServices) Disable(_ context.Context, name string) error {
	s.record("disable " + name)
	return os.Remove(filepath.Join(s.root, unit.WantsLink))
}

func (s *nodeServices) Start(ctx context.Context, name string) error {
	s.record("start " + name)
	return s.start(name)
}

func (s *nodeServices) Restart(ctx context.Context, name string) error {
	s.record("restart " + name)
	if name == unit.UnitName {
		s.stopGuard()
	}
	return s.start(name)
}

func (s *nodeServices) start(name string) error {
	switch name {
	case unit.KubeletUnit:
		b, err := os.ReadFile(filepath.Join(s.root, nodeinstall.DefaultKubeletConfig))
		if err != nil {
			return err
		}
		var cfg struct {
			Runtime string `json:"containerRuntimeEndpoint"`
			Image   string `json:"imageServiceEndpoint"`
		}
		if err := yaml.Unmarshal(b, &cfg); err != nil {
			return err
		}
		if cfg.Image == "" {
			cfg.Image = cfg.Runtime
		}
		rt, err := s.hostToReal(cfg.Runtime)
		if err != nil {
			return err
		}
		img, err := s.hostToReal(cfg.Image)
		if err != nil {
			return err
		}
		s.startKubelet(s.t, rt, img)
		return nil
	case unit.UnitName:
		return s.startGuard()
	}
	return fmt.Errorf("unit %s not found", name)
}

// startGuard runs the installed unit's ExecStart, paths mapped into the root,
// the way systemd would (RuntimeDirectory created first).
func (s *nodeServices) startGuard() error {
	if s.criguardRunning() {
		return nil
	}
	installed, err := os.ReadFile(filepath.Join(s.root, unit.UnitPath))
	if err != nil {
		return err
	}
	var argv []string
	for _, line := range strings.Split(string(installed), "\n") {
		if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
			argv = strings.Fields(v)
		}
	}
	if len(argv) == 0 {
		return errors.New("unit has no ExecStart")
	}
	for i, a := range argv {
		switch {
		case i > 0 && argv[i-1] == "--metrics-address":
			argv[i] = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(s.t))
		case i == 0 || a == unit.PolicyDir || a == unit.TrustedRootPath:
			argv[i] = filepath.Join(s.root, a)
		case strings.HasPrefix(a, "unix://"):
			if argv[i], err = s.hostToReal(a); err != nil {
				return err
			}
		}
	}
	if err := os.MkdirAll(filepath.Join(s.root, unit.RuntimeDir), 0o750); err != nil {
		return err
	}
	logf, err := os.OpenFile(s.guardLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	s.mu.Lock()
	s.guard, s.done = cmd, done
	s.mu.Unlock()
	return nil
}

func (s *nodeServices) stopGuard() {
	s.mu.Lock()
	cmd, done := s.guard, s.done
	s.guard = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func (s *nodeServices) Stop(_ context.Context, name string) error {
	s.record("stop " + name)
	if name != unit.UnitName {
		return fmt.Errorf("stop %s: not expected in this test", name)
	}
	s.stopGuard()
	// RuntimeDirectory goes when the unit stops.
	return os.RemoveAll(filepath.Join(s.root, unit.RuntimeDir))
}

func (s *nodeServices) IsActive(_ context.Context, name string) (bool, error) {
	if name == unit.KubeletUnit {
		return s.kubelet != nil && !s.kubelet.Exited(), nil
	}
	return s.criguardRunning(), nil
}

func (s *nodeServices) criguardRunning() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.guard == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

func (s *nodeServices) criguardPID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.guard == nil {
		return 0
	}
	return s.guard.Process.Pid
}

func (s *nodeServices) criguardLogs() string {
	b, _ := os.ReadFile(s.guardLog)
	return string(b)
}

// nodeReady: criguard through its real socket under the root, kubelet
// through the running harness kubelet's healthz.
type nodeReady struct {
	root string
	svc  *nodeServices
}

func (r nodeReady) CriguardReady(ctx context.Context) error {
	return nodeinstall.CRIReady(ctx, filepath.Join(r.root, unit.SocketPath))
}

func (r nodeReady) KubeletReady(ctx context.Context) error {
	return (&nodeinstall.DefaultReadiness{HostRoot: "/", KubeletConfig: r.svc.kubelet.ConfigPath}).KubeletReady(ctx)
}

// podRunning reports whether the pod sandbox named name has a running container.
func nodePodRunning(t *testing.T, endpoint, name string) error {
	pods, err := harness.Crictl(t, endpoint, "pods", "--name", "^"+name+"$", "--state", "ready", "-q")
	if err != nil {
		return err
	}
	for _, id := range strings.Fields(pods) {
		ctrs, err := harness.Crictl(t, endpoint, "ps", "--pod", id, "--state", "running", "-q")
		if err != nil {
			return err
		}
		if strings.TrimSpace(ctrs) != "" {
			return nil
		}
	}
	return fmt.Errorf("no running container in pod %s", name)
}

func nodeIndent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(pad + l + "\n")
	}
	return b.String()
}

type nodeTestLog struct{ t *testing.T }

func (l nodeTestLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// hostSnapshot digests every file, link and directory under root.
func nodeSnapshot(t *testing.T, root string, skip ...string) map[string]string {
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
		case d.Type()&fs.ModeSocket != 0:
			out[rel] = "socket"
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			out[rel] = info.Mode().String() + ":" + hex.EncodeToString(sum[:])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func nodeSnapshotDiff(a, b map[string]string) []string {
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
