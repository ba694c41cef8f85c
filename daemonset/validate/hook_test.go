package validate

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
)

// hookOf is one pre-delete hook object: its kind, name and weight.
type hookOf struct {
	kind, name string
	weight     int
}

func hooksOf(t *testing.T, r rendered) []hookOf {
	t.Helper()
	var hs []hookOf
	for _, o := range r.hooks {
		m, err := meta.Accessor(o)
		if err != nil {
			t.Fatal(err)
		}
		a := m.GetAnnotations()
		// The uninstall DaemonSet must outlive a failed wait (Helm deletes
		// the hooks that succeeded, and a DaemonSet succeeds once created):
		// the wait Job deletes it. Everything else goes once all succeeded.
		policy := "before-hook-creation,hook-succeeded"
		if _, ds := o.(*appsv1.DaemonSet); ds {
			policy = "before-hook-creation"
		}
		if a["helm.sh/hook"] != "pre-delete" || a["helm.sh/hook-delete-policy"] != policy {
			t.Errorf("%T %s: hook annotations %v, want pre-delete with delete policy %s", o, m.GetName(), a, policy)
		}
		if _, job := o.(*batchv1.Job); job && a["helm.sh/hook-output-log-policy"] != "hook-failed" {
			t.Errorf("Job %s: Helm does not print its log when it fails (annotations %v)", m.GetName(), a)
		}
		w, err := strconv.Atoi(a["helm.sh/hook-weight"])
		if err != nil {
			t.Errorf("%T %s: hook weight %q", o, m.GetName(), a["helm.sh/hook-weight"])
		}
		hs = append(hs, hookOf{reflect.TypeOf(o).Elem().Name(), m.GetName(), w})
	}
	return hs
}

func hookObject[T runtime.Object](t *testing.T, r rendered, name string) T {
	t.Helper()
	for _, o := range r.hooks {
		if v, ok := o.(T); ok {
			if m, _ := meta.Accessor(o); m.GetName() == name {
				return v
			}
		}
	}
	var zero T
	t.Fatalf("no hook %T %s", zero, name)
	return zero
}

// helm uninstall restores the nodes by itself: pre-delete hooks remove the
// installer, run the uninstall DaemonSet, and wait until every node is clean,
// in that order (Helm runs hooks by ascending weight, each Job to completion).
func TestChartUninstallHook(t *testing.T) {
	const (
		installer = "cg-criguard-installer"
		uninstall = "cg-criguard-uninstall"
		sa        = "cg-criguard-uninstall-hook"
		remove    = "cg-criguard-uninstall-remove"
		wait      = "cg-criguard-uninstall-wait"
	)
	r := render(t)
	hs := hooksOf(t, r)
	weight := map[string]int{}
	for _, h := range hs {
		weight[h.kind+"/"+h.name] = h.weight
	}
	order := []string{"ServiceAccount/" + sa, "Job/" + remove, "DaemonSet/" + uninstall, "Job/" + wait}
	for i, k := range order {
		if _, ok := weight[k]; !ok {
			t.Fatalf("no hook %s among %v", k, hs)
		}
		if i > 0 && weight[order[i-1]] >= weight[k] {
			t.Errorf("hook %s (weight %d) does not run after %s (weight %d)", k, weight[k], order[i-1], weight[order[i-1]])
		}
	}
	for _, k := range []string{"Role/" + sa, "RoleBinding/" + sa} {
		if w, ok := weight[k]; !ok || w != weight[order[0]] {
			t.Errorf("hook %s: weight %d, present %v; want it created with the ServiceAccount", k, w, ok)
		}
	}
	if len(hs) != 6 {
		t.Errorf("hooks %v, want 6", hs)
	}

	// The hook DaemonSet is exactly the one uninstall.enabled renders.
	hookDS := hookObject[*appsv1.DaemonSet](t, r, uninstall)
	plain := find[*appsv1.DaemonSet](render(t, "--set", "uninstall.enabled=true"))[0]
	if !reflect.DeepEqual(hookDS.Spec, plain.Spec) {
		t.Errorf("the hook's uninstall DaemonSet differs from uninstall.enabled's:\n%+v\n%+v", hookDS.Spec, plain.Spec)
	}
	checkChartNodeAgent(t, hookDS, "uninstall", "ghcr.io/criguard/criguard:0.1.0")

	// Each Job runs criguard-sync on the right DaemonSet, within its deadline.
	for _, tc := range []struct{ job, cmd, ds, flag string }{
		{remove, "remove-daemonset", installer, ""},
		{wait, "wait-daemonset", uninstall, "--then-delete"},
	} {
		j := hookObject[*batchv1.Job](t, r, tc.job)
		spec := j.Spec.Template.Spec
		c := spec.Containers[0]
		if c.Image != "ghcr.io/criguard/criguard-sync:0.1.0" || !slices.Equal(c.Command, []string{"/ko-app/criguard-sync"}) {
			t.Errorf("%s: image %s command %q", tc.job, c.Image, c.Command)
		}
		if len(c.Args) == 0 || c.Args[0] != tc.cmd || c.Args[len(c.Args)-1] != tc.ds || !slices.Contains(c.Args, "--namespace="+namespace) ||
			tc.flag != "" && !slices.Contains(c.Args, tc.flag) {
			t.Errorf("%s: args %q, want %s %s ... %s in %s", tc.job, c.Args, tc.cmd, tc.flag, tc.ds, namespace)
		}
		if len(spec.Tolerations) != 0 || spec.PriorityClassName != "" {
			t.Errorf("%s: tolerations %v, priority %q; a hook Job must not land on cordoned nodes nor preempt workloads", tc.job, spec.Tolerations, spec.PriorityClassName)
		}
		var timeout time.Duration
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, "--timeout="); ok {
				timeout, _ = time.ParseDuration(v)
			}
		}
		if timeout <= 0 || j.Spec.ActiveDeadlineSeconds == nil || time.Duration(*j.Spec.ActiveDeadlineSeconds)*time.Second <= timeout {
			t.Errorf("%s: --timeout %v, activeDeadlineSeconds %v: the command must time out (and say why) first", tc.job, timeout, j.Spec.ActiveDeadlineSeconds)
		}
		// Its pod is created while kubelets restart and may not start: retried.
		if j.Spec.BackoffLimit == nil || *j.Spec.BackoffLimit < 1 {
			t.Errorf("%s: backoffLimit %v; a pod that failed to start while kubelet restarted must be retried", tc.job, j.Spec.BackoffLimit)
		}
		if spec.ServiceAccountName != sa || spec.RestartPolicy != "Never" {
			t.Errorf("%s: service account %q restart %q", tc.job, spec.ServiceAccountName, spec.RestartPolicy)
		}
		if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("%s: may run as root", tc.job)
		}
		if sc := c.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: container security context %+v", tc.job, sc)
		}
	}

	// Least privilege: read and delete the two DaemonSets, list pods.
	role := hookObject[*rbacv1.Role](t, r, sa)
	want := []rbacv1.PolicyRule{
		{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, ResourceNames: []string{installer, uninstall}, Verbs: []string{"get", "delete"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}},
	}
	if !reflect.DeepEqual(role.Rules, want) {
		t.Errorf("hook Role rules %+v\nwant %+v", role.Rules, want)
	}
	rb := hookObject[*rbacv1.RoleBinding](t, r, sa)
	if rb.RoleRef.Name != sa || len(rb.Subjects) != 1 || rb.Subjects[0].Name != sa {
		t.Errorf("hook RoleBinding %+v does not bind %s to its Role", rb, sa)
	}

	// A release name at Helm's limit (53): every Job name, which is also its
	// pods' job-name label, stays within 63 characters.
	long := strings.Repeat("r", 53)
	out, err := helmTemplateAs(t, long)
	if err != nil {
		t.Fatalf("helm template %s: %v\n%s", long, err, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if name, ok := strings.CutPrefix(l, "  name: "); ok && strings.Contains(name, "uninstall-") && len(name) > 63 {
			t.Errorf("hook object name %q is %d characters long; a Job's must be <= 63", name, len(name))
		}
	}

	// No hooks where they would be wrong or were turned off.
	for _, set := range []string{"uninstall.enabled=true", "uninstall.onHelmUninstall=false"} {
		if hs := hooksOf(t, render(t, "--set", set)); len(hs) != 0 {
			t.Errorf("--set %s: hooks %v, want none", set, hs)
		}
	}
}
