package validate

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const (
	namespace = "criguard-system"
	image     = "ko://github.com/criguard/criguard/cmd/criguard"
	koBinary  = "/ko-app/criguard" // where ko puts the binary in the image
)

// build renders a kustomization as `kustomize build` does and decodes every
// object strictly: an unknown field, a duplicate field or an unknown kind fails.
func build(t *testing.T, dir string) []runtime.Object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := resMap.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	dec := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var objs []runtime.Object
	for i, doc := range strings.Split(string(out), "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		js, err := yaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			t.Fatalf("%s: object %d: %v", dir, i, err)
		}
		obj, gvk, err := dec.Decode(js, nil, nil)
		if err != nil {
			t.Fatalf("%s: object %d (%s) does not decode strictly: %v\n%s", dir, i, gvk, err, doc)
		}
		objs = append(objs, obj)
	}
	return objs
}

func TestInstallManifests(t *testing.T) {
	objs := build(t, "..")
	var ds *appsv1.DaemonSet
	var cm *corev1.ConfigMap
	kinds := map[string]int{}
	for _, o := range objs {
		switch v := o.(type) {
		case *appsv1.DaemonSet:
			ds = v
			kinds["DaemonSet"]++
		case *corev1.ConfigMap:
			cm = v
			kinds["ConfigMap"]++
		case *corev1.Namespace:
			kinds["Namespace"]++
			if v.Name != namespace || v.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
				t.Errorf("namespace %s labels %v", v.Name, v.Labels)
			}
		case *corev1.ServiceAccount:
			kinds["ServiceAccount"]++
			if v.AutomountServiceAccountToken == nil || *v.AutomountServiceAccountToken {
				t.Error("service account mounts a token the installer never uses")
			}
		default:
			t.Errorf("unexpected object %T", o)
		}
		checkMeta(t, o)
	}
	want := map[string]int{"DaemonSet": 1, "ConfigMap": 1, "Namespace": 1, "ServiceAccount": 1}
	for k, n := range want {
		if kinds[k] != n {
			t.Errorf("%d %s objects, want %d", kinds[k], k, n)
		}
	}
	if ds == nil || cm == nil {
		t.Fatal("no DaemonSet or ConfigMap")
	}
	checkNodeAgent(t, ds, "installer")
	c := ds.Spec.Template.Spec.Containers[0]
	for _, a := range []string{"install", "--host-root=/host", "--policy-dir=/config/policy", "--keys-dir=/config/keys", "--watch"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("installer args %q lack %q", c.Args, a)
		}
	}
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType ||
		ds.Spec.UpdateStrategy.RollingUpdate == nil || ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable.IntValue() != 1 {
		t.Errorf("update strategy %+v: one node's kubelet should restart at a time", ds.Spec.UpdateStrategy)
	}
	// The policy ConfigMap the DaemonSet mounts is the generated one, under a
	// fixed name (edits propagate through the mount), holding the starter file.
	mounted := map[string]string{}
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil {
			mounted[v.Name] = v.ConfigMap.Name
		}
	}
	checkKeysReachInstaller(t, ds.Spec.Template.Spec, "criguard-keys")
	if mounted["policy"] != cm.Name || cm.Name != "criguard-policy" {
		t.Errorf("policy volume %q vs ConfigMap %q", mounted["policy"], cm.Name)
	}
	starter, err := os.ReadFile(filepath.Join("..", "policy", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["policy.yaml"] != string(starter) {
		t.Error("ConfigMap policy.yaml differs from daemonset/policy/policy.yaml")
	}
	var pol struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Spec       struct {
			Mode            string `json:"mode"`
			UnmatchedImages string `json:"unmatchedImages"`
			Rules           []struct {
				Name   string   `json:"name"`
				Images []string `json:"images"`
				Action string   `json:"action"`
			} `json:"rules"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(starter, &pol); err != nil {
		t.Fatal(err)
	}
	if pol.APIVersion != "criguard.dev/v1alpha1" || pol.Kind != "ImagePolicy" {
		t.Errorf("starter policy is %s %s", pol.APIVersion, pol.Kind)
	}
	// What a fresh kind cluster runs must be allowed explicitly.
	allowed := map[string]bool{}
	for _, r := range pol.Spec.Rules {
		if r.Action == "Allow" {
			for _, i := range r.Images {
				allowed[i] = true
			}
		}
	}
	for _, p := range []string{"registry.k8s.io/*", "docker.io/kindest/*", "*/github.com/criguard/criguard/cmd/criguard*"} {
		if !allowed[p] {
			t.Errorf("starter policy does not allow %s", p)
		}
	}
}

func TestUninstallManifests(t *testing.T) {
	var ds *appsv1.DaemonSet
	for _, o := range build(t, "../uninstall") {
		checkMeta(t, o)
		if d, ok := o.(*appsv1.DaemonSet); ok {
			ds = d
		}
	}
	if ds == nil {
		t.Fatal("no uninstall DaemonSet")
	}
	checkNodeAgent(t, ds, "uninstall")
	c := ds.Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "uninstall") || !slices.Contains(c.Args, "--hold") {
		t.Errorf("uninstall args %q", c.Args)
	}
	if !slices.Contains(c.ReadinessProbe.Exec.Command, "--expect=uninstalled") {
		t.Errorf("uninstall readiness probe %q does not wait for the node to be clean", c.ReadinessProbe.Exec.Command)
	}
}

// checkNodeAgent checks what a pod that edits its node's kubelet needs.
func checkNodeAgent(t *testing.T, ds *appsv1.DaemonSet, container string) {
	t.Helper()
	spec := ds.Spec.Template.Spec
	if !spec.HostPID || !spec.HostNetwork {
		t.Errorf("%s: hostPID=%v hostNetwork=%v, want both (nsenter into PID 1, kubelet's loopback healthz)", ds.Name, spec.HostPID, spec.HostNetwork)
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("%s: priorityClassName %q", ds.Name, spec.PriorityClassName)
	}
	everyNode := false
	for _, tol := range spec.Tolerations {
		if tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == "" {
			everyNode = true
		}
	}
	if !everyNode {
		t.Errorf("%s: tolerations %+v do not tolerate every taint", ds.Name, spec.Tolerations)
	}
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("%s: selector %s=%s does not match the pod template", ds.Name, k, v)
		}
	}
	if len(spec.Containers) != 1 || spec.Containers[0].Name != container {
		t.Fatalf("%s: containers %+v", ds.Name, spec.Containers)
	}
	c := spec.Containers[0]
	checkAgentContainer(t, ds.Name, c, image)
	if !slices.Contains(c.Args, "--host-root=/host") {
		t.Errorf("%s: args %q lack --host-root=/host", ds.Name, c.Args)
	}
	hostVol := ""
	for _, v := range spec.Volumes {
		if v.HostPath != nil && v.HostPath.Path == "/" {
			hostVol = v.Name
		}
	}
	mountedAt := ""
	for _, m := range c.VolumeMounts {
		if m.Name == hostVol {
			mountedAt = m.MountPath
		}
	}
	if hostVol == "" || mountedAt != "/host" {
		t.Errorf("%s: the node's / is not mounted at /host (volume %q at %q)", ds.Name, hostVol, mountedAt)
	}
	if c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: no memory limit", ds.Name)
	}
}

// trustedRootFile is the key of the keys ConfigMap that `criguard node
// install` passes to serve as --trusted-root (unit.TrustedRootFile in the
// main module, which this one does not import).
const trustedRootFile = "trusted_root.json"

// checkKeysReachInstaller checks that every key of ConfigMap keysCM,
// trusted_root.json among them, is a file in the installer's --keys-dir: the
// installer copies that directory to the host and passes a trusted root in it
// to serve.
func checkKeysReachInstaller(t *testing.T, spec corev1.PodSpec, keysCM string) {
	t.Helper()
	var inst *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == "installer" {
			inst = &spec.Containers[i]
		}
	}
	if inst == nil {
		t.Fatalf("no installer container among %+v", spec.Containers)
	}
	dir := ""
	for _, a := range inst.Args {
		if v, ok := strings.CutPrefix(a, "--keys-dir="); ok {
			dir = v
		}
	}
	if dir == "" {
		t.Fatalf("installer args %q lack --keys-dir", inst.Args)
	}
	vol := ""
	for _, m := range inst.VolumeMounts {
		if m.MountPath == dir && m.SubPath == "" {
			vol = m.Name
		}
	}
	var cm *corev1.ConfigMapVolumeSource
	for _, v := range spec.Volumes {
		if v.Name == vol && vol != "" {
			cm = v.ConfigMap
		}
	}
	switch {
	case cm == nil:
		t.Errorf("--keys-dir=%s is not a mounted ConfigMap (mounts %+v)", dir, inst.VolumeMounts)
	case cm.Name != keysCM:
		t.Errorf("--keys-dir=%s mounts ConfigMap %s, want %s", dir, cm.Name, keysCM)
	case len(cm.Items) > 0:
		t.Errorf("keys volume picks items %+v: %s and keys not listed would never reach the node", cm.Items, trustedRootFile)
	}
}

// checkMeta checks names, labels and the namespace of every object.
func checkMeta(t *testing.T, o runtime.Object) {
	t.Helper()
	m, ok := o.(interface {
		GetName() string
		GetNamespace() string
		GetLabels() map[string]string
	})
	if !ok {
		t.Fatalf("%T has no metadata", o)
	}
	for _, e := range validation.IsDNS1123Subdomain(m.GetName()) {
		t.Errorf("%T %q: %s", o, m.GetName(), e)
	}
	if _, isNS := o.(*corev1.Namespace); !isNS && m.GetNamespace() != namespace {
		t.Errorf("%T %s in namespace %q, want %s", o, m.GetName(), m.GetNamespace(), namespace)
	}
	for k, v := range m.GetLabels() {
		for _, e := range validation.IsQualifiedName(k) {
			t.Errorf("%T %s label %q: %s", o, m.GetName(), k, e)
		}
		for _, e := range validation.IsValidLabelValue(v) {
			t.Errorf("%T %s label %s=%q: %s", o, m.GetName(), k, v, e)
		}
	}
	if m.GetLabels()["app.kubernetes.io/name"] != "criguard" {
		t.Errorf("%T %s lacks app.kubernetes.io/name=criguard", o, m.GetName())
	}
}

// checkAgentContainer checks the container that runs criguard node ...: its
// image, privileges and readiness probe.
func checkAgentContainer(t *testing.T, ds string, c corev1.Container, image string) {
	t.Helper()
	if c.Image != image {
		t.Errorf("%s: image %q, want %q", ds, c.Image, image)
	}
	if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
		t.Errorf("%s: not privileged", ds)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.Exec == nil || c.ReadinessProbe.Exec.Command[0] != koBinary {
		t.Errorf("%s: readiness probe %+v must run %s", ds, c.ReadinessProbe, koBinary)
	}
}
