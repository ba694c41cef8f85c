package nodeinstall

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/criguard/criguard/systemd/unit"
)

const starterPolicy = `apiVersion: criguard.dev/v1alpha1
kind: ImagePolicy
metadata: {name: default}
spec:
  mode: Enforce
  unmatchedImages: Deny
  rules:
  - name: system
    images: ["registry.k8s.io/*"]
    action: Allow
`

type fixture struct {
	root, policyDir, keysDir, binary string
	svc                              *fakeServices
	ready                            *fakeReady
	log                              bytes.Buffer
}

func newFixture(t *testing.T, n node) *fixture {
	t.Helper()
	f := &fixture{root: newRoot(t, n)}
	src := t.TempDir()
	f.policyDir = filepath.Join(src, "policy")
	f.keysDir = filepath.Join(src, "keys")
	configMapDir(t, f.policyDir, map[string]string{"policy.yaml": starterPolicy})
	configMapDir(t, f.keysDir, map[string]string{"team.pub": "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"})
	f.binary = filepath.Join(src, "criguard")
	writeFile(t, f.binary, "\x7fELF criguard v1")
	f.svc = newFakeServices(f.root)
	f.ready = &fakeReady{svc: f.svc}
	return f
}

func (f *fixture) opts() Options {
	return Options{
		HostRoot:     f.root,
		Binary:       f.binary,
		PolicyDir:    f.policyDir,
		KeysDir:      f.keysDir,
		Services:     f.svc,
		Ready:        f.ready,
		ReadyTimeout: 2 * time.Second,
		Log:          &f.log,
	}
}

// endpoints returns every endpoint setting kubelet would read on the host:
// KubeletConfiguration keys and flags in its EnvironmentFiles.
func endpoints(t *testing.T, root string) map[string]string {
	t.Helper()
	h, err := openHost(root, true, func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lay, err := discover(h, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range lay.EnvFiles {
		b, ok, _ := h.readFile(e, maxHostFile)
		if !ok {
			continue
		}
		_, found, err := editEnv(b, func(_, v string) (string, error) { return v, nil })
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range found {
			got[e+" --"+k] = v
		}
	}
	for _, c := range []string{lay.Config, lay.InstanceConfig} {
		b, ok, _ := h.readFile(c, maxHostFile)
		if !ok {
			continue
		}
		var m map[string]any
		if err := yaml.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range configKeys {
			if v, ok := m[k]; ok {
				got[c+" "+k] = v.(string)
			}
		}
	}
	return got
}

func TestInstallUninstallLayouts(t *testing.T) {
	for _, n := range nodes {
		t.Run(n.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, n)
			before := snapshot(t, f.root)
			beforeEP := endpoints(t, f.root)
			if len(beforeEP) == 0 {
				t.Fatal("fixture sets no endpoint")
			}

			res, err := Install(ctx, f.opts())
			if err != nil {
				t.Fatalf("install: %v\n%s", err, f.log.String())
			}
			if res.Unchanged() {
				t.Fatal("first install reported unchanged")
			}
			// Files criguard runs from.
			if got := readHost(t, f.root, unit.BinaryPath); got != "\x7fELF criguard v1" {
				t.Errorf("binary = %q", got)
			}
			if got := readHost(t, f.root, unit.UnitPath); got != string(unit.Unit()) {
				t.Errorf("unit differs from the embedded one")
			}
			if got := readHost(t, f.root, unit.PolicyDir+"/policy.yaml"); got != starterPolicy {
				t.Errorf("policy = %q", got)
			}
			if _, err := os.Stat(filepath.Join(f.root, unit.KeysDir, "team.pub")); err != nil {
				t.Errorf("key not copied: %v", err)
			}
			if st, err := os.Stat(filepath.Join(f.root, unit.BinaryPath)); err != nil || st.Mode().Perm() != 0o755 {
				t.Errorf("binary mode: %v %v", st, err)
			}
			// Every endpoint kubelet reads now names criguard's socket.
			afterEP := endpoints(t, f.root)
			if len(afterEP) < len(beforeEP) {
				t.Errorf("endpoints lost: before %v after %v", beforeEP, afterEP)
			}
			for k, v := range afterEP {
				if v != unit.Endpoint {
					t.Errorf("%s = %q, want %s", k, v, unit.Endpoint)
				}
			}
			// Only the endpoint values changed in kubelet's files.
			for hostPath := range n.files {
				orig, _ := os.ReadFile(filepath.Join("testdata", n.files[hostPath]))
				now := readHost(t, f.root, hostPath)
				if err := onlyEndpointsDiffer(string(orig), now); err != nil {
					t.Errorf("%s: %v", hostPath, err)
				}
			}
			wantCalls := []string{"daemon-reload", "enable criguard.service", "start criguard.service", "restart kubelet.service"}
			if got := f.svc.Calls(); !reflect.DeepEqual(got, wantCalls) {
				t.Errorf("service calls = %q, want %q", got, wantCalls)
			}

			// Idempotent: nothing changes, nothing restarts.
			installed := snapshot(t, f.root)
			res, err = Install(ctx, f.opts())
			if err != nil {
				t.Fatalf("second install: %v", err)
			}
			if !res.Unchanged() {
				t.Errorf("second install changed %q", res.Changes)
			}
			if got := f.svc.Calls(); len(got) != 0 {
				t.Errorf("second install called %q", got)
			}
			if d := diffSnapshots(installed, snapshot(t, f.root)); len(d) > 0 {
				t.Errorf("second install touched %v", d)
			}
			if err := Status(ctx, f.opts()); err != nil {
				t.Errorf("status after install: %v", err)
			}
			if err := Uninstalled(ctx, f.opts()); err == nil {
				t.Errorf("Uninstalled() passed while installed")
			}

			// Uninstall: kubelet first, then criguard; the host is as it was,
			// except /etc/criguard, which is the operator's.
			if _, err := Uninstall(ctx, f.opts()); err != nil {
				t.Fatalf("uninstall: %v\n%s", err, f.log.String())
			}
			wantCalls = []string{"restart kubelet.service", "stop criguard.service", "disable criguard.service", "daemon-reload"}
			if got := f.svc.Calls(); !reflect.DeepEqual(got, wantCalls) {
				t.Errorf("uninstall calls = %q, want %q", got, wantCalls)
			}
			if d := diffSnapshots(before, snapshot(t, f.root, unit.ConfigDir)); len(d) > 0 {
				t.Errorf("uninstall left the host different: %v", d)
			}
			if _, err := os.Stat(filepath.Join(f.root, unit.PolicyDir, "policy.yaml")); err != nil {
				t.Errorf("uninstall without --purge removed the policy: %v", err)
			}
			if err := Uninstalled(ctx, f.opts()); err != nil {
				t.Errorf("Uninstalled() after uninstall: %v", err)
			}
			// Uninstall again: nothing to do.
			res, err = Uninstall(ctx, f.opts())
			if err != nil || !res.Unchanged() {
				t.Errorf("second uninstall: %v %q", err, res.Changes)
			}
			f.purgeRestores(t, before)
		})
	}
}

// onlyEndpointsDiffer checks that after equals before with endpoint values
// replaced (or one containerRuntimeEndpoint line appended).
func onlyEndpointsDiffer(before, after string) error {
	norm := func(s string) string {
		for _, ep := range []string{"unix:///var/run/containerd/containerd.sock", "unix:///run/containerd/containerd.sock", "/run/containerd/containerd.sock", unit.Endpoint} {
			s = strings.ReplaceAll(s, ep, "EP")
		}
		return strings.ReplaceAll(s, "unix://EP", "EP")
	}
	a, b := norm(before), norm(after)
	if a == b {
		return nil
	}
	if b == a+keyRuntime+`: "EP"`+"\n" {
		return nil
	}
	return errors.New("differs beyond the endpoint values:\n--- before\n" + before + "\n--- after\n" + after)
}

func TestUpgradeRestartsOnlyCriguard(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, nodes[0])
	if _, err := Install(ctx, f.opts()); err != nil {
		t.Fatal(err)
	}
	f.svc.Calls()
	kubeletBefore := readHost(t, f.root, "/var/lib/kubelet/kubeadm-flags.env")
	writeFile(t, f.binary, "\x7fELF criguard v2")
	res, err := Install(ctx, f.opts())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changes) != 2 { // replace binary + restart
		t.Errorf("upgrade changes = %q", res.Changes)
	}
	if got := readHost(t, f.root, unit.BinaryPath); got != "\x7fELF criguard v2" {
		t.Errorf("binary = %q", got)
	}
	if got, want := f.svc.Calls(), []string{"restart criguard.service"}; !reflect.DeepEqual(got, want) {
		t.Errorf("upgrade calls = %q, want %q", got, want)
	}
	if readHost(t, f.root, "/var/lib/kubelet/kubeadm-flags.env") != kubeletBefore {
		t.Error("upgrade edited kubelet's flags again")
	}
	// An install with the unit stopped (crashed, or stopped by hand) starts it.
	f.svc.set(unit.UnitName, false)
	if _, err := Install(ctx, f.opts()); err != nil {
		t.Fatal(err)
	}
	if got, want := f.svc.Calls(), []string{"start criguard.service"}; !reflect.DeepEqual(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
}

func TestDryRunTouchesNothing(t *testing.T) {
	ctx := context.Background()
	for _, n := range nodes {
		t.Run(n.name, func(t *testing.T) {
			f := newFixture(t, n)
			before := snapshot(t, f.root)
			o := f.opts()
			o.DryRun = true
			res, err := Install(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			if d := diffSnapshots(before, snapshot(t, f.root)); len(d) > 0 {
				t.Errorf("dry-run install touched %v", d)
			}
			if got := f.svc.Calls(); len(got) != 0 {
				t.Errorf("dry-run install called %q", got)
			}
			out := f.log.String()
			for _, want := range []string{
				"would write " + unit.BinaryPath,
				"would write " + unit.UnitPath,
				"would write " + unit.PolicyDir + "/policy.yaml",
				"would systemctl enable criguard.service",
				"would systemctl start criguard.service",
				" -> unix:///run/criguard/criguard.sock",
				"would systemctl restart kubelet.service",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("dry-run output lacks %q:\n%s", want, out)
				}
			}
			if len(res.Changes) < 7 {
				t.Errorf("dry run listed %d changes", len(res.Changes))
			}

			// And a dry-run uninstall of a real install.
			if _, err := Install(ctx, f.opts()); err != nil {
				t.Fatal(err)
			}
			f.svc.Calls()
			installed := snapshot(t, f.root)
			f.log.Reset()
			if _, err := Uninstall(ctx, o); err != nil {
				t.Fatal(err)
			}
			if d := diffSnapshots(installed, snapshot(t, f.root)); len(d) > 0 {
				t.Errorf("dry-run uninstall touched %v", d)
			}
			if got := f.svc.Calls(); len(got) != 0 {
				t.Errorf("dry-run uninstall called %q", got)
			}
			if !strings.Contains(f.log.String(), "(kubelet endpoint restored") {
				t.Errorf("dry-run uninstall output:\n%s", f.log.String())
			}
		})
	}
}

func TestKubeletNeverReadyRollsBack(t *testing.T) {
	ctx := context.Background()
	for _, n := range nodes {
		t.Run(n.name, func(t *testing.T) {
			f := newFixture(t, n)
			before := snapshot(t, f.root)
			f.ready.kubeletErr = errors.New("healthz: connection refused")
			o := f.opts()
			o.ReadyTimeout = 600 * time.Millisecond
			_, err := Install(ctx, o)
			if err == nil || !strings.Contains(err.Error(), "restored") {
				t.Fatalf("install with an unhealthy kubelet: %v", err)
			}
			calls := f.svc.Calls()
			if calls[len(calls)-2] != "restart kubelet.service" || calls[len(calls)-1] != "restart kubelet.service" {
				t.Errorf("calls = %q: want kubelet restarted on criguard, then again on containerd", calls)
			}
			// kubelet's files are byte for byte as before; criguard's own
			// files stay, so the next attempt (the pod restarting) is cheap.
			after := snapshot(t, f.root, unit.ConfigDir, unit.StateDir, unit.BinaryPath, unit.UnitPath, "/etc/systemd/system/kubelet.service.wants")
			if d := diffSnapshots(before, after); len(d) > 0 {
				t.Errorf("rollback left %v", d)
			}
			// Recoverable: once kubelet is healthy the install completes, and
			// uninstall still restores the originals.
			f.ready.kubeletErr = nil
			if _, err := Install(ctx, f.opts()); err != nil {
				t.Fatalf("install after rollback: %v", err)
			}
			f.purgeRestores(t, before)
		})
	}
}

func TestCriguardNeverReadyLeavesKubeletAlone(t *testing.T) {
	f := newFixture(t, nodes[1])
	f.svc.fail = map[string]error{"start criguard.service": errors.New("Job for criguard.service failed")}
	cfg := readHost(t, f.root, "/var/lib/kubelet/config.yaml")
	_, err := Install(context.Background(), f.opts())
	if err == nil || !strings.Contains(err.Error(), "Job for criguard.service failed") {
		t.Fatalf("err = %v", err)
	}
	if readHost(t, f.root, "/var/lib/kubelet/config.yaml") != cfg {
		t.Error("kubelet's configuration was edited although criguard never started")
	}
	for _, c := range f.svc.Calls() {
		if strings.Contains(c, "kubelet") {
			t.Errorf("kubelet touched: %q", c)
		}
	}
}

func TestUninstallKeepsLaterKubeletChanges(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, nodes[1])
	if _, err := Install(ctx, f.opts()); err != nil {
		t.Fatal(err)
	}
	// An operator (or kubeadm upgrade) edits the config after install.
	cfgPath := filepath.Join(f.root, "/var/lib/kubelet/config.yaml")
	cur := readHost(t, f.root, "/var/lib/kubelet/config.yaml")
	writeFile(t, cfgPath, strings.Replace(cur, "maxPods: 50", "maxPods: 70", 1))
	if _, err := Uninstall(ctx, f.opts()); err != nil {
		t.Fatal(err)
	}
	got := readHost(t, f.root, "/var/lib/kubelet/config.yaml")
	orig, _ := os.ReadFile("testdata/kubeadm-config.yaml")
	want := strings.Replace(string(orig), "maxPods: 50", "maxPods: 70", 1)
	if got != want {
		t.Errorf("config after uninstall:\n%s\nwant:\n%s", got, want)
	}
}

func TestUninstallWithoutStatePointsBackAtContainerd(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, nodes[0])
	if _, err := Install(ctx, f.opts()); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(f.root, unit.StateDir)); err != nil {
		t.Fatal(err)
	}
	if _, err := Uninstall(ctx, f.opts()); err != nil {
		t.Fatal(err)
	}
	for k, v := range endpoints(t, f.root) {
		if v != unit.UpstreamEndpoint {
			t.Errorf("%s = %q after uninstall without state", k, v)
		}
	}
}

func TestRefusals(t *testing.T) {
	ctx := context.Background()
	noCA := `{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`
	cases := []struct {
		name   string
		modify func(t *testing.T, f *fixture)
		want   string
	}{
		{"endpoint flag in the unit itself", func(t *testing.T, f *fixture) {
			writeFile(t, filepath.Join(f.root, "/etc/systemd/system/kubelet.service.d/20-eks.conf"),
				"[Service]\nExecStart=\nExecStart=/usr/bin/kubelet --container-runtime-endpoint unix:///run/containerd/containerd.sock\n")
		}, "passes --container-runtime-endpoint itself"},
		{"another runtime", func(t *testing.T, f *fixture) {
			writeFile(t, filepath.Join(f.root, "/var/lib/kubelet/kubeadm-flags.env"),
				`KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///var/run/crio/crio.sock"`+"\n")
		}, "not containerd's socket"},
		{"no kubelet configuration", func(t *testing.T, f *fixture) {
			os.Remove(filepath.Join(f.root, "/var/lib/kubelet/config.yaml"))
			os.Remove(filepath.Join(f.root, "/var/lib/kubelet/kubeadm-flags.env"))
		}, "not found on the host"},
		{"empty policy ConfigMap", func(t *testing.T, f *fixture) {
			configMapDir(t, f.policyDir, map[string]string{})
		}, "no policy files"},
		{"not a binary", func(t *testing.T, f *fixture) {
			writeFile(t, f.binary, "#!/bin/sh\n")
		}, "not an ELF"},
		{"broken state", func(t *testing.T, f *fixture) {
			writeFile(t, filepath.Join(f.root, unit.StateDir, "install-state.json"), `{"version":1,"files":[],"extra":1}`)
		}, "install-state.json"},
		{"config is a list", func(t *testing.T, f *fixture) {
			writeFile(t, filepath.Join(f.root, "/var/lib/kubelet/config.yaml"), "- a\n- b\n")
		}, "not a single YAML mapping"},
		// A trusted root serve could not load (criguard would not start).
		{"not JSON in the ConfigMap", func(t *testing.T, f *fixture) {
			configMapDir(t, f.keysDir, map[string]string{"team.pub": testKey, unit.TrustedRootFile: "-----BEGIN PUBLIC KEY-----"})
		}, "keys/trusted_root.json: not a Sigstore trusted root"},
		{"unknown field in the ConfigMap", func(t *testing.T, f *fixture) {
			configMapDir(t, f.keysDir, map[string]string{unit.TrustedRootFile: strings.Replace(privateRoot(t), "{", `{"surprise": 1,`, 1)})
		}, "keys/trusted_root.json: not a Sigstore trusted root"},
		{"trusts nothing", func(t *testing.T, f *fixture) {
			configMapDir(t, f.keysDir, map[string]string{unit.TrustedRootFile: noCA})
		}, "keys/trusted_root.json: trusted root lists no certificate authority"},
		{"unreadable in the ConfigMap", func(t *testing.T, f *fixture) {
			if err := os.Symlink("..data/absent", filepath.Join(f.keysDir, unit.TrustedRootFile)); err != nil {
				t.Fatal(err)
			}
		}, "keys/trusted_root.json: no such file"},
		{"invalid on the host, no keys ConfigMap", func(t *testing.T, f *fixture) {
			configMapDir(t, f.keysDir, map[string]string{})
			writeFile(t, filepath.Join(f.root, unit.TrustedRootPath), noCA)
		}, unit.TrustedRootPath + " on the host: trusted root lists no certificate authority"},
		{"not a file on the host", func(t *testing.T, f *fixture) {
			configMapDir(t, f.keysDir, map[string]string{})
			if err := os.MkdirAll(filepath.Join(f.root, unit.TrustedRootPath), 0o755); err != nil {
				t.Fatal(err)
			}
		}, unit.TrustedRootPath + " on the host: not a regular file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, nodes[0])
			c.modify(t, f)
			before := snapshot(t, f.root)
			_, err := Install(ctx, f.opts())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			if d := diffSnapshots(before, snapshot(t, f.root)); len(d) > 0 {
				t.Errorf("refused install changed %v", d)
			}
			if got := f.svc.Calls(); len(got) != 0 {
				t.Errorf("refused install called %q", got)
			}
		})
	}
}

func TestSyncPolicyFollowsConfigMap(t *testing.T) {
	f := newFixture(t, nodes[0])
	o := f.opts()
	configMapDir(t, f.policyDir, map[string]string{"a.yaml": "a1", "b.yaml": "b1"})
	if _, err := SyncPolicy(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	configMapDir(t, f.policyDir, map[string]string{"a.yaml": "a2"})
	res, err := SyncPolicy(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changes) != 2 {
		t.Errorf("changes = %q", res.Changes)
	}
	names, _ := os.ReadDir(filepath.Join(f.root, unit.PolicyDir))
	if len(names) != 1 || readHost(t, f.root, unit.PolicyDir+"/a.yaml") != "a2" {
		t.Errorf("host policy dir = %v", names)
	}
	if res, _ := SyncPolicy(context.Background(), o); !res.Unchanged() {
		t.Errorf("second sync changed %q", res.Changes)
	}
	configMapDir(t, f.policyDir, map[string]string{})
	if _, err := SyncPolicy(context.Background(), o); err == nil {
		t.Error("an empty ConfigMap emptied the host's policy")
	}
	if readHost(t, f.root, unit.PolicyDir+"/a.yaml") != "a2" {
		t.Error("host policy lost")
	}
}

func TestWatchPolicy(t *testing.T) {
	f := newFixture(t, nodes[0])
	o := f.opts()
	o.Log = nil
	startWatch(t, o, WatchOptions{Interval: time.Hour})
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if b, err := os.ReadFile(filepath.Join(f.root, unit.PolicyDir, "policy.yaml")); err == nil && string(b) == want {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("host policy never became %q", want)
	}
	waitFor(starterPolicy)
	// The hour-long interval means only fsnotify can deliver this one.
	configMapDir(t, f.policyDir, map[string]string{"policy.yaml": "changed"})
	waitFor("changed")
}

func TestEmptyKeysConfigMapKeepsHostKeys(t *testing.T) {
	f := newFixture(t, nodes[0])
	writeFile(t, filepath.Join(f.root, unit.KeysDir, "byhand.pub"), "PEM")
	configMapDir(t, f.keysDir, map[string]string{})
	if _, err := Install(context.Background(), f.opts()); err != nil {
		t.Fatal(err)
	}
	if _, err := SyncPolicy(context.Background(), f.opts()); err != nil {
		t.Fatal(err)
	}
	if got := readHost(t, f.root, unit.KeysDir+"/byhand.pub"); got != "PEM" {
		t.Errorf("key placed by hand = %q", got)
	}
	// A keys ConfigMap with content is the source of truth.
	configMapDir(t, f.keysDir, map[string]string{"team.pub": "T"})
	if _, err := SyncPolicy(context.Background(), f.opts()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(f.root, unit.KeysDir, "byhand.pub")); !os.IsNotExist(err) {
		t.Errorf("key not in the ConfigMap kept: %v", err)
	}
}

func TestInstallersSerialize(t *testing.T) {
	f := newFixture(t, nodes[0])
	h, err := openHost(f.root, false, func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	unlock, err := h.lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// While another installer holds the node, an install waits and gives up
	// with its context, having changed nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	before := snapshot(t, f.root)
	if _, err := Install(ctx, f.opts()); err == nil || !strings.Contains(err.Error(), "another criguard installer") {
		t.Fatalf("install under a held lock: %v", err)
	}
	if d := diffSnapshots(before, snapshot(t, f.root)); len(d) > 0 {
		t.Errorf("changed %v", d)
	}
	unlock()
	if _, err := Install(context.Background(), f.opts()); err != nil {
		t.Fatalf("install after the lock is released: %v", err)
	}
}

func TestWatchRepairsDrift(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, nodes[0])
	o := f.opts()
	o.Log = nil
	if _, err := Install(ctx, o); err != nil {
		t.Fatal(err)
	}
	if err := Drift(o); err != nil {
		t.Fatalf("drift right after install: %v", err)
	}
	f.svc.Calls()
	// kubeadm upgrade rewrites kubeadm-flags.env with containerd's socket.
	orig, _ := os.ReadFile("testdata/kind-kubeadm-flags.env")
	writeFile(t, filepath.Join(f.root, "/var/lib/kubelet/kubeadm-flags.env"), string(orig))
	if err := Drift(o); err == nil || !strings.Contains(err.Error(), "kubeadm-flags.env") {
		t.Fatalf("drift not seen: %v", err)
	}
	stop := startWatch(t, o, WatchOptions{Interval: 20 * time.Millisecond, Repair: true})
	deadline := time.Now().Add(10 * time.Second)
	for Drift(o) != nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if err := Drift(o); err != nil {
		t.Fatalf("not repaired: %v", err)
	}
	calls := f.svc.Calls()
	if len(calls) == 0 || calls[len(calls)-1] != "restart kubelet.service" {
		t.Errorf("repair calls %q", calls)
	}
	// The backup now holds the rewritten file, and uninstall restores it.
	if _, err := Uninstall(ctx, o); err != nil {
		t.Fatal(err)
	}
	if got := readHost(t, f.root, "/var/lib/kubelet/kubeadm-flags.env"); got != string(orig) {
		t.Errorf("after uninstall: %q", got)
	}
}

func TestInterruptedRunsFinishTheJob(t *testing.T) {
	ctx := context.Background()
	t.Run("install killed between the edit and kubelet's restart", func(t *testing.T) {
		f := newFixture(t, nodes[1])
		if _, err := Install(ctx, f.opts()); err != nil {
			t.Fatal(err)
		}
		// What a SIGKILL right after the edit leaves: files edited, restart pending.
		p := filepath.Join(f.root, unit.StateDir, "install-state.json")
		b := readHost(t, f.root, unit.StateDir+"/install-state.json")
		writeFile(t, p, strings.Replace(b, `"files"`, `"kubeletRestartPending": true, "files"`, 1))
		f.svc.Calls()
		if _, err := Install(ctx, f.opts()); err != nil {
			t.Fatal(err)
		}
		if got := f.svc.Calls(); !reflect.DeepEqual(got, []string{"restart kubelet.service"}) {
			t.Errorf("calls %q, want kubelet's pending restart", got)
		}
		if strings.Contains(readHost(t, f.root, unit.StateDir+"/install-state.json"), "Pending") {
			t.Error("restart still pending after a healthy kubelet")
		}
	})
	t.Run("install cancelled while waiting for kubelet", func(t *testing.T) {
		f := newFixture(t, nodes[0])
		before := snapshot(t, f.root, unit.ConfigDir, unit.StateDir, unit.BinaryPath, unit.UnitPath, "/etc/systemd/system/kubelet.service.wants")
		f.ready.kubeletErr = errors.New("not yet")
		cctx, cancel := context.WithCancel(ctx)
		o := f.opts()
		o.ReadyTimeout = time.Minute
		go func() {
			// Cancel once kubelet has been restarted on criguard.
			for {
				f.svc.mu.Lock()
				n := len(f.svc.calls)
				f.svc.mu.Unlock()
				if n >= 4 {
					cancel()
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		_, err := Install(cctx, o)
		if err == nil || !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		calls := f.svc.Calls()
		if calls[len(calls)-1] != "restart kubelet.service" || len(calls) != 5 {
			t.Errorf("calls %q: the rollback's kubelet restart must run despite the cancellation", calls)
		}
		after := snapshot(t, f.root, unit.ConfigDir, unit.StateDir, unit.BinaryPath, unit.UnitPath, "/etc/systemd/system/kubelet.service.wants")
		if d := diffSnapshots(before, after); len(d) > 0 {
			t.Errorf("kubelet files after a cancelled install: %v", d)
		}
	})
	t.Run("uninstall killed after restoring the files", func(t *testing.T) {
		f := newFixture(t, nodes[2])
		if _, err := Install(ctx, f.opts()); err != nil {
			t.Fatal(err)
		}
		// The files are back, kubelet was never restarted, state remains.
		for hostPath, src := range nodes[2].files {
			b, _ := os.ReadFile(filepath.Join("testdata", src))
			writeFile(t, filepath.Join(f.root, hostPath), string(b))
		}
		f.svc.Calls()
		if _, err := Uninstall(ctx, f.opts()); err != nil {
			t.Fatal(err)
		}
		calls := f.svc.Calls()
		if len(calls) == 0 || calls[0] != "restart kubelet.service" {
			t.Errorf("calls %q: kubelet must restart before criguard stops", calls)
		}
	})
}

func TestBrokenUpgradeGoesBack(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, nodes[0])
	if _, err := Install(ctx, f.opts()); err != nil {
		t.Fatal(err)
	}
	f.svc.Calls()
	kubeletFiles := snapshot(t, f.root, unit.BinaryPath)
	f.ready.badBinary = "\x7fELF criguard broken"
	writeFile(t, f.binary, f.ready.badBinary)
	o := f.opts()
	o.ReadyTimeout = 300 * time.Millisecond
	_, err := Install(ctx, o)
	if err == nil || !strings.Contains(err.Error(), "previous criguard was restored") {
		t.Fatalf("broken upgrade: %v", err)
	}
	if got := readHost(t, f.root, unit.BinaryPath); got != "\x7fELF criguard v1" {
		t.Errorf("binary after a broken upgrade = %q", got)
	}
	if got, want := f.svc.Calls(), []string{"restart criguard.service", "restart criguard.service"}; !reflect.DeepEqual(got, want) {
		t.Errorf("calls %q, want %q (kubelet untouched)", got, want)
	}
	if d := diffSnapshots(kubeletFiles, snapshot(t, f.root, unit.BinaryPath)); len(d) > 0 {
		t.Errorf("broken upgrade changed %v", d)
	}
}
