package validate

import (
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestOverlayReplacesPolicy builds the overlay an operator (and e2e/kind/run.sh)
// writes: daemonset/ as a base, its policy replaced and a keys ConfigMap added,
// both under the fixed names the DaemonSet mounts.
func TestOverlayReplacesPolicy(t *testing.T) {
	base, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// kustomize takes bases by relative path only.
	rel, err := filepath.Rel(dir, base)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"policy.yaml": "apiVersion: criguard.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: mine}\nspec: {rules: []}\n",
		"team.pub":    "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n",
		"kustomization.yaml": `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: criguard-system
resources:
- ` + rel + `
configMapGenerator:
- name: criguard-policy
  behavior: replace
  files: [policy.yaml]
  options: {disableNameSuffixHash: true}
- name: criguard-keys
  files: [team.pub]
  options: {disableNameSuffixHash: true}
`,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cms := map[string]*corev1.ConfigMap{}
	for _, o := range build(t, dir) {
		if cm, ok := o.(*corev1.ConfigMap); ok {
			cms[cm.Name] = cm
		}
	}
	if p := cms["criguard-policy"]; p == nil || len(p.Data) != 1 || p.Data["policy.yaml"] != files["policy.yaml"] {
		t.Errorf("policy ConfigMap not replaced: %+v", p)
	}
	if k := cms["criguard-keys"]; k == nil || k.Namespace != namespace || k.Data["team.pub"] != files["team.pub"] {
		t.Errorf("keys ConfigMap: %+v", k)
	}
}
