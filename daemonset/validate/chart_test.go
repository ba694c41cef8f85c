package validate

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

const (
	chartDir    = "../../charts/criguard"
	kubeVersion = "1.34.4" // what e2e/kind runs
	testDigest  = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// rendered is one `helm template`: typed objects from client-go's scheme and,
// for kinds it does not know (ImagePolicy, the Prometheus Operator's), the
// object as JSON. Helm hooks (helm.sh/hook) are kept apart: Helm creates them
// only for their hook event (hook_test.go).
type rendered struct {
	typed []runtime.Object
	other []map[string]any
	hooks []runtime.Object
}

// helmTemplate renders the chart with the pinned helm (charts/chart.mk).
func helmTemplate(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return helmTemplateAs(t, "cg", args...)
}

// helmTemplateAs renders the chart as release name.
func helmTemplateAs(t *testing.T, release string, args ...string) (string, error) {
	t.Helper()
	helm := os.Getenv("CRIGUARD_HELM")
	if helm == "" {
		t.Fatal("CRIGUARD_HELM is not set: run `make manifests` (it builds the pinned helm) or set it to a helm v3 binary")
	}
	cmd := exec.Command(helm, append([]string{"template", release, chartDir, "--namespace", namespace, "--kube-version", kubeVersion}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return errb.String(), err
	}
	return out.String(), nil
}

// render renders and decodes every object strictly: an unknown or duplicate
// field, or an unknown kind outside the known custom resources, fails.
func render(t *testing.T, args ...string) rendered {
	t.Helper()
	out, err := helmTemplate(t, args...)
	if err != nil {
		t.Fatalf("helm template %v: %v\n%s", args, err, out)
	}
	sch := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{scheme.AddToScheme, apiextensionsv1.AddToScheme} {
		if err := add(sch); err != nil {
			t.Fatal(err)
		}
	}
	dec := serializer.NewCodecFactory(sch, serializer.EnableStrict).UniversalDeserializer()
	var r rendered
	for i, doc := range strings.Split(out, "\n---\n") {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		// The split took the newline that ends a block scalar.
		js, err := yaml.YAMLToJSONStrict([]byte(doc + "\n"))
		if err != nil {
			t.Fatalf("object %d: %v\n%s", i, err, doc)
		}
		var head struct{ APIVersion, Kind string }
		if err := json.Unmarshal(js, &head); err != nil {
			t.Fatal(err)
		}
		switch head.APIVersion {
		case "criguard.dev/v1alpha1", "monitoring.coreos.com/v1":
			var m map[string]any
			if err := utiljson.Unmarshal(js, &m); err != nil {
				t.Fatal(err)
			}
			r.other = append(r.other, m)
			continue
		}
		obj, gvk, err := dec.Decode(js, nil, nil)
		if err != nil {
			t.Fatalf("object %d (%s) does not decode strictly: %v\n%s", i, gvk, err, doc)
		}
		switch obj.(type) {
		case *apiextensionsv1.CustomResourceDefinition, *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding:
			// cluster-scoped
		default:
			checkMeta(t, obj)
		}
		if a, ok := obj.(interface{ GetAnnotations() map[string]string }); ok && a.GetAnnotations()["helm.sh/hook"] != "" {
			r.hooks = append(r.hooks, obj)
			continue
		}
		r.typed = append(r.typed, obj)
	}
	return r
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func find[T runtime.Object](r rendered) []T {
	var out []T
	for _, o := range r.typed {
		if v, ok := o.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func kinds(r rendered) []string {
	var ks []string
	for _, o := range r.typed {
		ks = append(ks, reflect.TypeOf(o).Elem().Name())
	}
	for _, m := range r.other {
		ks = append(ks, m["kind"].(string))
	}
	slices.Sort(ks)
	return ks
}

func container(t *testing.T, spec corev1.PodSpec, name string, init bool) corev1.Container {
	t.Helper()
	cs := spec.Containers
	if init {
		cs = spec.InitContainers
	}
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s (init %v)", name, init)
	return corev1.Container{}
}

func volume(spec corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

func mountsToken(c corev1.Container) bool {
	for _, m := range c.VolumeMounts {
		if m.MountPath == "/var/run/secrets/kubernetes.io/serviceaccount" {
			return true
		}
	}
	return false
}

// The defaults: the starter policy in a ConfigMap the chart owns, the
// installer with the metrics relay, no API access at all.
func TestChartDefaults(t *testing.T) {
	r := render(t)
	if got, want := kinds(r), []string{"ConfigMap", "DaemonSet", "Service", "ServiceAccount"}; !slices.Equal(got, want) {
		t.Fatalf("objects %v, want %v", got, want)
	}
	ds := find[*appsv1.DaemonSet](r)[0]
	spec := ds.Spec.Template.Spec
	checkChartNodeAgent(t, ds, "installer", "ghcr.io/criguard/criguard:0.1.0")
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the pod mounts a service account token; nothing in it talks to the API server by default")
	}
	inst := container(t, spec, "installer", false)
	for _, a := range []string{"install", "--policy-dir=/config/policy", "--keys-dir=/config/keys", "--watch"} {
		if !slices.Contains(inst.Args, a) {
			t.Errorf("installer args %q lack %q", inst.Args, a)
		}
	}
	cm := find[*corev1.ConfigMap](r)[0]
	if v := volume(spec, "policy"); v == nil || v.ConfigMap == nil || v.ConfigMap.Name != cm.Name {
		t.Errorf("policy volume %+v does not mount ConfigMap %s", v, cm.Name)
	}
	starter, err := os.ReadFile(starterFile)
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["policy.yaml"] != string(starter) {
		t.Errorf("policy ConfigMap differs from the starter policy:\n%s", cm.Data["policy.yaml"])
	}
	sync := container(t, spec, "sync", true)
	if sync.RestartPolicy == nil || *sync.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Error("sync is not a native sidecar (restartPolicy Always)")
	}
	if !slices.Contains(sync.Args, "--metrics-upstream=http://127.0.0.1:9464/metrics") || slices.ContainsFunc(sync.Args, func(a string) bool { return strings.HasPrefix(a, "--policy-out") }) {
		t.Errorf("sync args %q: want the metrics relay only", sync.Args)
	}
	if mountsToken(sync) || sync.SecurityContext == nil || sync.SecurityContext.Privileged != nil {
		t.Errorf("sync sidecar: token mounted %v, security context %+v", mountsToken(sync), sync.SecurityContext)
	}
	svc := find[*corev1.Service](r)[0]
	if svc.Spec.Ports[0].Port != 9465 || svc.Spec.Selector["app.kubernetes.io/component"] != "installer" {
		t.Errorf("metrics Service %+v", svc.Spec)
	}
}

// Policies from ImagePolicy objects: a token only for the sidecar, read-only
// RBAC, the host's policy directory, and the starter as an ImagePolicy the
// CRD's schema accepts.
func TestChartImagePolicies(t *testing.T) {
	// A real one: the installer refuses a trusted root serve could not load.
	const rootFile = "../../testdata/sigstore/trusted_root.json"
	trustedRoot, err := os.ReadFile(rootFile)
	if err != nil {
		t.Fatal(err)
	}
	r := render(t, "--include-crds",
		"--set", "policy.source=imagePolicies,policy.kyverno=true",
		"--set", "image.digest="+testDigest+",syncImage.tag=v9",
		"--set", "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,metrics.dashboard.enabled=true",
		"--set", "nodeSelector.kubernetes\\.io/os=linux",
		"--set-json", `tolerations=[{"key":"dedicated","operator":"Equal","value":"edge","effect":"NoSchedule"}]`,
		"--set-string", "keys.team\\.pub=-----BEGIN PUBLIC KEY-----",
		"--set-file", "trustedRoot="+rootFile,
	)
	want := []string{"ClusterRole", "ClusterRoleBinding", "ConfigMap", "ConfigMap", "CustomResourceDefinition", "DaemonSet",
		"ImagePolicy", "PrometheusRule", "Service", "ServiceAccount", "ServiceMonitor"}
	if got := kinds(r); !slices.Equal(got, want) {
		t.Fatalf("objects %v, want %v", got, want)
	}
	ds := find[*appsv1.DaemonSet](r)[0]
	spec := ds.Spec.Template.Spec
	checkChartNodeAgent(t, ds, "installer", "ghcr.io/criguard/criguard@"+testDigest)
	if spec.NodeSelector["kubernetes.io/os"] != "linux" || len(spec.Tolerations) != 1 || spec.Tolerations[0].Key != "dedicated" {
		t.Errorf("nodeSelector %v tolerations %+v not from values", spec.NodeSelector, spec.Tolerations)
	}
	sync := container(t, spec, "sync", true)
	if sync.Image != "ghcr.io/criguard/criguard-sync:v9" {
		t.Errorf("sync image %s", sync.Image)
	}
	for _, a := range []string{"--policy-out=/host-policy", "--kyverno"} {
		if !slices.Contains(sync.Args, a) {
			t.Errorf("sync args %q lack %q", sync.Args, a)
		}
	}
	if !mountsToken(sync) || mountsToken(container(t, spec, "installer", false)) {
		t.Error("the token must be mounted into the sync sidecar only")
	}
	// The sidecar compiles each policy as the node's criguard will, key
	// files included: the keys where criguard reads them, read-only.
	if !slices.ContainsFunc(sync.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == "keys" && m.MountPath == "/etc/criguard/keys" && m.ReadOnly
	}) {
		t.Errorf("sync sidecar mounts %+v; want the keys read-only at /etc/criguard/keys", sync.VolumeMounts)
	}
	// The installer copies what the sidecar wrote on the host.
	if v := volume(spec, "policy"); v == nil || v.HostPath == nil || v.HostPath.Path != "/etc/criguard/cluster-policy" {
		t.Errorf("policy volume %+v, want the host's /etc/criguard/cluster-policy", v)
	}
	checkPolicyReaderRole(t, find[*rbacv1.ClusterRole](r)[0], true)
	// Without status reports, no write access to status either.
	checkPolicyReaderRole(t, find[*rbacv1.ClusterRole](render(t, "--set", "policy.source=imagePolicies,policy.kyverno=true,policy.reportStatus=false"))[0], false)
	cms := map[string]*corev1.ConfigMap{}
	for _, cm := range find[*corev1.ConfigMap](r) {
		cms[cm.Name] = cm
	}
	keys := cms["cg-criguard-keys"]
	if keys == nil {
		t.Fatalf("no keys ConfigMap among %v", cms)
	}
	dash, err := os.ReadFile("../../charts/criguard/files/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if d := cms["cg-criguard-dashboard"]; d == nil || d.Data["criguard.json"] != string(dash) || d.Labels["grafana_dashboard"] != "1" {
		t.Errorf("dashboard ConfigMap %+v", d)
	}
	checkPrometheusRule(t, r)
	if !strings.HasPrefix(keys.Data["team.pub"], "-----BEGIN PUBLIC KEY-----") || keys.Data[trustedRootFile] != string(trustedRoot) {
		t.Errorf("keys ConfigMap %v", keys.Data)
	}
	// The installer sees trusted_root.json in its --keys-dir, so it copies it
	// to the node and passes it to serve.
	checkKeysReachInstaller(t, spec, keys.Name)
	_, schema := loadCRD(t)
	for _, o := range r.other {
		if o["kind"] == "ImagePolicy" {
			if errs := schema.validate(o); len(errs) > 0 {
				t.Errorf("the chart's starter ImagePolicy is refused by the CRD: %v", errs.ToAggregate())
			}
		}
	}
	for _, crd := range find[*apiextensionsv1.CustomResourceDefinition](r) {
		if crd.Name != "imagepolicies.criguard.dev" {
			t.Errorf("CRD %s", crd.Name)
		}
	}
}

// policy.reportStatus reaches the sync sidecar as --report-status, once;
// without ImagePolicies the sidecar (metrics only) syncs nothing to report.
func TestChartReportStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  string
		want []string
	}{
		{"default", "policy.source=imagePolicies", []string{"--report-status=true"}},
		{"on", "policy.source=imagePolicies,policy.reportStatus=true", []string{"--report-status=true"}},
		{"off", "policy.source=imagePolicies,policy.reportStatus=false", []string{"--report-status=false"}},
		{"policy from values", "policy.source=values,policy.reportStatus=true", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := render(t, "--set", tc.set)
			sync := container(t, find[*appsv1.DaemonSet](r)[0].Spec.Template.Spec, "sync", true)
			var got []string
			for _, a := range sync.Args {
				if strings.HasPrefix(a, "--report-status") {
					got = append(got, a)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("sync args %q: want %q", sync.Args, tc.want)
			}
		})
	}
}

// An existing ConfigMap, metrics off: no sidecar, nothing created for the policy.
func TestChartExistingConfigMap(t *testing.T) {
	r := render(t, "--set", "policy.source=configMap,policy.existingConfigMap=my-policy,metrics.enabled=false,existingKeysConfigMap=my-keys")
	if got, want := kinds(r), []string{"DaemonSet", "ServiceAccount"}; !slices.Equal(got, want) {
		t.Fatalf("objects %v, want %v", got, want)
	}
	spec := find[*appsv1.DaemonSet](r)[0].Spec.Template.Spec
	if len(spec.InitContainers) != 0 {
		t.Errorf("init containers %v with neither policy sync nor metrics", spec.InitContainers)
	}
	if v := volume(spec, "policy"); v == nil || v.ConfigMap == nil || v.ConfigMap.Name != "my-policy" {
		t.Errorf("policy volume %+v", v)
	}
	checkKeysReachInstaller(t, spec, "my-keys")
}

// uninstall.enabled: the uninstall DaemonSet replaces the installer.
func TestChartUninstall(t *testing.T) {
	r := render(t, "--set", "uninstall.enabled=true,uninstall.purge=true")
	if got, want := kinds(r), []string{"DaemonSet", "ServiceAccount"}; !slices.Equal(got, want) {
		t.Fatalf("objects %v, want %v", got, want)
	}
	ds := find[*appsv1.DaemonSet](r)[0]
	checkChartNodeAgent(t, ds, "uninstall", "ghcr.io/criguard/criguard:0.1.0")
	c := ds.Spec.Template.Spec.Containers[0]
	for _, a := range []string{"uninstall", "--hold", "--purge"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("uninstall args %q lack %q", c.Args, a)
		}
	}
	if !slices.Contains(c.ReadinessProbe.Exec.Command, "--expect=uninstalled") {
		t.Errorf("readiness probe %q does not wait for a clean node", c.ReadinessProbe.Exec.Command)
	}
	// With policies from the API server, the starter ImagePolicy stays: were it
	// deleted, the installer's sidecar could still write that to the nodes,
	// and their criguard would refuse its own image to the uninstaller (seen
	// on kind by e2e/kind/helm.sh).
	r = render(t, "--set", "uninstall.enabled=true,policy.source=imagePolicies")
	if got, want := kinds(r), []string{"DaemonSet", "ImagePolicy", "ServiceAccount"}; !slices.Equal(got, want) {
		t.Errorf("objects %v, want %v", got, want)
	}
}

// Values the chart must refuse rather than render something half right.
func TestChartRefusesBadValues(t *testing.T) {
	for _, tc := range []struct{ set, want string }{
		{"policy.source=crds", `policy.source "crds"`},
		{"policy.source=configMap", "policy.existingConfigMap is required"},
		{"image.digest=sha256:abc", "is not sha256:<64 hex digits>"},
		{"keys.a/b=y", "is not a plain file name"},
		{"policy.source=imagePolicies,policy.reportStatus=maybe", `policy.reportStatus "maybe": want true or false`},
	} {
		t.Run(tc.set, func(t *testing.T) {
			out, err := helmTemplate(t, "--set", tc.set)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("helm template --set %s: err %v, output %q; want a refusal naming %q", tc.set, err, out, tc.want)
			}
		})
	}
}

// checkChartNodeAgent checks what a pod that edits its node's kubelet needs.
func checkChartNodeAgent(t *testing.T, ds *appsv1.DaemonSet, name, image string) {
	t.Helper()
	spec := ds.Spec.Template.Spec
	if !spec.HostPID || !spec.HostNetwork || spec.PriorityClassName != "system-node-critical" {
		t.Errorf("%s: hostPID=%v hostNetwork=%v priority %q", ds.Name, spec.HostPID, spec.HostNetwork, spec.PriorityClassName)
	}
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("%s: selector %s=%s does not match the pod template", ds.Name, k, v)
		}
	}
	c := container(t, spec, name, false)
	checkAgentContainer(t, ds.Name, c, image)
	if v := volume(spec, "host"); v == nil || v.HostPath == nil || v.HostPath.Path != "/" {
		t.Errorf("%s: no host volume", ds.Name)
	}
	if c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: no memory limit", ds.Name)
	}
}

// The PrometheusRule holds exactly the alert rules of files/alerts.yaml.
func checkPrometheusRule(t *testing.T, r rendered) {
	t.Helper()
	data, err := os.ReadFile("../../charts/criguard/files/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := utiljson.Unmarshal(js, &want); err != nil {
		t.Fatal(err)
	}
	for _, o := range r.other {
		if o["kind"] == "PrometheusRule" {
			if !reflect.DeepEqual(o["spec"], want) {
				t.Errorf("PrometheusRule spec differs from files/alerts.yaml:\n%v", o["spec"])
			}
			return
		}
	}
	t.Error("no PrometheusRule")
}

// checkPolicyReaderRole: the sidecar reads policies, creates Events and
// patches ImagePolicies' status (its node's entry); nothing else.
func checkPolicyReaderRole(t *testing.T, cr *rbacv1.ClusterRole, reportStatus bool) {
	t.Helper()
	want := map[string][]string{
		"criguard.dev/imagepolicies": {"get", "list", "watch"},
		"kyverno.io/clusterpolicies": {"get", "list", "watch"},
		"kyverno.io/policies":        {"get", "list", "watch"},
		"/events":                    {"create"},
	}
	if reportStatus {
		want["criguard.dev/imagepolicies/status"] = []string{"patch"}
	}
	got := map[string][]string{}
	for _, rule := range cr.Rules {
		if len(rule.ResourceNames) > 0 || len(rule.NonResourceURLs) > 0 {
			t.Errorf("rule %+v: want no resourceNames or URLs", rule)
		}
		for _, g := range rule.APIGroups {
			for _, res := range rule.Resources {
				got[g+"/"+res] = append(got[g+"/"+res], rule.Verbs...)
			}
		}
	}
	if !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("ClusterRole %s grants %v, want %v", cr.Name, got, want)
	}
}
