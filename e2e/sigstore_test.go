//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/criguard/criguard/e2e/harness"
	"github.com/criguard/criguard/internal/fixtureregistry"
)

// sigstoreEnv is a node enforcing a Kyverno policy from
// testdata/policies/sigstore against the Sigstore fixtures, with their
// trusted root.
type sigstoreEnv struct {
	r   *harness.Registry
	f   *harness.Fixtures
	c   *harness.Containerd
	dir string
}

func newSigstoreEnv(t *testing.T) *sigstoreEnv {
	t.Helper()
	harness.RequireRoot(t)
	e := &sigstoreEnv{dir: harness.TempDir(t, "pol")}
	e.r = harness.StartRegistry(t, false) // as the fixtures were made: no referrers API
	e.f = e.r.LoadSigstoreFixtures(t)
	e.c = harness.StartContainerd(t, harness.ContainerdOptions{Registry: e.r})
	return e
}

// guard starts criguard with the named policy of testdata/policies/sigstore,
// unchanged, and the fixtures' trusted root.
func (e *sigstoreEnv) guard(t *testing.T, name string) *harness.Criguard {
	t.Helper()
	dir, err := fixtureregistry.Dir(fixtureregistry.Sigstore)
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(filepath.Join(filepath.Dir(dir), "policies", "sigstore", name))
	if err != nil {
		t.Fatal(err)
	}
	pol := filepath.Join(e.dir, name)
	writePolicy(t, pol, string(text))
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	g := harness.StartCriguard(t, e.c.Socket, "--policy", pol, "--trusted-root", e.f.TrustedRoot(), "--metrics-address", addr, "--log-format", "json")
	harness.Eventually(t, 20*time.Second, "criguard ready", func() error {
		code, body, err := httpGet(t.Context(), "http://"+addr+"/readyz")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("/readyz %d: %s", code, body)
		}
		return nil
	})
	return g
}

// pullAndRun pulls repo:1.0 through criguard, then runs it in a pod through
// criguard and reads the /etc/marker that names the fixture; it returns the
// refusal of the pull, if any.
func (e *sigstoreEnv) pullAndRun(t *testing.T, g *harness.Criguard, repo string) error {
	t.Helper()
	ref := e.f.Ref(repo, "1.0")
	if _, err := harness.Crictl(t, g.Endpoint(), "pull", ref); err != nil {
		return err
	}
	name := strings.ReplaceAll(repo, "/", "-")
	pod, ctr := filepath.Join(e.dir, name+"-pod.json"), filepath.Join(e.dir, name+"-ctr.json")
	harness.WriteFile(t, pod, harness.HostNetworkPod(name, "default", ""))
	harness.WriteFile(t, ctr, harness.ContainerConfig("main", ref, "sleep", "3600"))
	podID := strings.TrimSpace(harness.MustCrictl(t, g.Endpoint(), "runp", pod))
	t.Cleanup(func() {
		_, _ = harness.Crictl(t, e.c.Endpoint(), "stopp", podID)
		_, _ = harness.Crictl(t, e.c.Endpoint(), "rmp", podID)
	})
	ctrID := strings.TrimSpace(harness.MustCrictl(t, g.Endpoint(), "create", podID, ctr, pod))
	harness.MustCrictl(t, g.Endpoint(), "start", ctrID)
	harness.Eventually(t, 20*time.Second, repo+" running", func() error {
		st := harness.MustCrictl(t, e.c.Endpoint(), "inspect", "-o", "go-template", "--template", "{{.status.state}}", ctrID)
		if !strings.Contains(st, "RUNNING") {
			return fmt.Errorf("state %s", st)
		}
		return nil
	})
	if out := harness.MustCrictl(t, e.c.Endpoint(), "exec", ctrID, "cat", "/etc/marker"); strings.TrimSpace(out) != markers[repo] {
		t.Errorf("%s: /etc/marker says %q, want %q", repo, out, markers[repo])
	}
	return nil
}

// TestSigstoreKyvernoKeyPolicy is issue 10's proof on a real node: the Kyverno
// sample library's "Verify Image" ClusterPolicy, as written (one
// keys.publicKeys attestor, no rekor field, so Kyverno requires a Rekor
// entry), enforces through criguard on containerd: the Rekor-logged bundle and
// legacy signatures pull and run; the signature without a log entry and the
// unsigned image are refused with SignatureValidationFailed.
func TestSigstoreKyvernoKeyPolicy(t *testing.T) {
	e := newSigstoreEnv(t)
	g := e.guard(t, "verify-image.yaml")
	for _, repo := range []string{"fx/key-tlog-bundle", "fx/key-tlog-legacy"} {
		if err := e.pullAndRun(t, g, repo); err != nil {
			t.Fatalf("%s refused: %v\n%s", repo, err, g.Logs())
		}
	}
	for _, repo := range []string{"fx/key-no-tlog", "fx/unsigned"} {
		out, err := harness.Crictl(t, g.Endpoint(), "pull", e.f.Ref(repo, "1.0"))
		mustRefuse(t, err, out, "pull of "+repo)
		if e.holdsRepo(t, repo) {
			t.Errorf("%s was refused but containerd holds it", repo)
		}
	}
	if !strings.Contains(g.Logs(), "no transparency-log entry") {
		t.Errorf("the denial of fx/key-no-tlog does not say it lacks a transparency-log entry:\n%s", g.Logs())
	}
}

// TestSigstoreKyvernoKeylessPolicy: a keyless ClusterPolicy for alice allows
// her bundle-signed image and refuses bob's.
func TestSigstoreKyvernoKeylessPolicy(t *testing.T) {
	e := newSigstoreEnv(t)
	g := e.guard(t, "keyless-alice.yaml")
	if err := e.pullAndRun(t, g, "fx/keyless-bundle"); err != nil {
		t.Fatalf("fx/keyless-bundle refused: %v\n%s", err, g.Logs())
	}
	out, err := harness.Crictl(t, g.Endpoint(), "pull", e.f.Ref("fx/keyless-bob", "1.0"))
	mustRefuse(t, err, out, "pull of fx/keyless-bob")
	if e.holdsRepo(t, "fx/keyless-bob") {
		t.Error("fx/keyless-bob was refused but containerd holds it")
	}
	if !strings.Contains(g.Logs(), "another identity") {
		t.Errorf("the denial of fx/keyless-bob does not name the identity mismatch:\n%s", g.Logs())
	}
}

// holdsRepo reports whether containerd holds any image of repo.
func (e *sigstoreEnv) holdsRepo(t *testing.T, repo string) bool {
	t.Helper()
	return (&enforceEnv{c: e.c}).holds(t, e.r.Host+"/"+repo)
}

// markers is what /etc/marker says in each fixture image.
var markers = map[string]string{"fx/key-tlog-bundle": "ktb", "fx/key-tlog-legacy": "ktl", "fx/keyless-bundle": "kb", "fx/key-attest": "ka"}

// TestSigstoreKyvernoAttestationPolicy: a ClusterPolicy requiring key t's
// signature and its vulnerability attestation with no critical findings
// allows fx/key-attest to pull and run, and refuses fx/key-tlog-bundle,
// signed by the same key but without the attestation.
func TestSigstoreKyvernoAttestationPolicy(t *testing.T) {
	e := newSigstoreEnv(t)
	g := e.guard(t, "attest-vuln.yaml")
	if err := e.pullAndRun(t, g, "fx/key-attest"); err != nil {
		t.Fatalf("fx/key-attest refused: %v\n%s", err, g.Logs())
	}
	out, err := harness.Crictl(t, g.Endpoint(), "pull", e.f.Ref("fx/key-tlog-bundle", "1.0"))
	mustRefuse(t, err, out, "pull of fx/key-tlog-bundle")
	if !strings.Contains(g.Logs(), "no attestation of type https://cosign.sigstore.dev/attestation/vuln/v1") {
		t.Errorf("the denial of fx/key-tlog-bundle does not name the missing attestation:\n%s", g.Logs())
	}
}
