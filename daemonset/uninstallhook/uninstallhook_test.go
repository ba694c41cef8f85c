package uninstallhook

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const ns = "criguard-system"

func daemonSet(name string, gen, observed int64, desired, updated, ready int32) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Generation: gen},
		Spec:       appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"component": name}}},
		Status: appsv1.DaemonSetStatus{
			ObservedGeneration: observed, DesiredNumberScheduled: desired, CurrentNumberScheduled: desired,
			UpdatedNumberScheduled: updated, NumberReady: ready,
		},
	}
}

func pod(name, node, ds string, ready bool) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"component": ds}},
		Spec:       corev1.PodSpec{NodeName: node},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

func hook(cs *fake.Clientset) Hook {
	return Hook{
		DaemonSets: cs.AppsV1().DaemonSets(ns), Pods: cs.CoreV1().Pods(ns),
		Interval: time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	}
}

func TestWaitReady(t *testing.T) {
	tests := []struct {
		name    string
		objs    []runtime.Object
		ready   bool   // WaitReady returns nil
		wantErr string // else the error says this
	}{
		{"ready on every node", []runtime.Object{daemonSet("u", 1, 1, 2, 2, 2)}, true, ""},
		{"scheduled on no node", []runtime.Object{daemonSet("u", 1, 1, 0, 0, 0)}, true, ""},
		{"one node not clean", []runtime.Object{
			daemonSet("u", 1, 1, 2, 2, 1), pod("u-a", "node-a", "u", true), pod("u-b", "node-b", "u", false),
			pod("other", "node-c", "other", false),
		}, false, "1 of 2 nodes Ready (2 updated); not Ready: node-b (pod u-b, Running)"},
		{"new generation not observed", []runtime.Object{daemonSet("u", 2, 1, 2, 2, 2)}, false, "generation 2 not yet observed"},
		{"old template still ready", []runtime.Object{daemonSet("u", 1, 1, 2, 1, 2)}, false, "2 of 2 nodes Ready (1 updated)"},
		{"no such DaemonSet", nil, false, `get DaemonSet u: daemonsets.apps "u" not found`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			err := hook(fake.NewClientset(tc.objs...)).WaitReady(ctx, "u")
			if tc.ready {
				if err != nil {
					t.Fatalf("WaitReady: %v", err)
				}
				return
			}
			if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("WaitReady = %v; want a timeout saying %q", err, tc.wantErr)
			}
		})
	}
}

// The DaemonSet becomes Ready while the hook waits: it returns then, not at
// its deadline.
func TestWaitReadyBecomesReady(t *testing.T) {
	cs := fake.NewClientset(daemonSet("u", 1, 1, 2, 2, 0))
	var gets atomic.Int32
	cs.PrependReactor("get", "daemonsets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if gets.Add(1) >= 3 {
			return true, daemonSet("u", 1, 1, 2, 2, 2), nil
		}
		return false, nil, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hook(cs).WaitReady(ctx, "u"); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if n := gets.Load(); n != 3 {
		t.Fatalf("returned after %d polls, want 3", n)
	}
}

func TestRemove(t *testing.T) {
	tests := []struct {
		name      string
		objs      []runtime.Object
		lingering int32 // Gets that still find it (foreground deletion in progress)
		deleteErr error
		wantErr   string
	}{
		{"deleted at once", []runtime.Object{daemonSet("i", 1, 1, 2, 2, 2)}, 0, nil, ""},
		{"pods take a while", []runtime.Object{daemonSet("i", 1, 1, 2, 2, 2)}, 3, nil, ""},
		{"already gone", nil, 0, nil, ""},
		{"never goes", []runtime.Object{daemonSet("i", 1, 1, 2, 2, 2), pod("i-a", "node-a", "i", true)}, 1 << 30, nil, "DaemonSet i is being deleted; pods left: node-a (pod i-a, Running)"},
		{"delete refused", []runtime.Object{daemonSet("i", 1, 1, 2, 2, 2)}, 0,
			apierrors.NewForbidden(appsv1.Resource("daemonsets"), "i", errors.New("no RBAC")), "delete DaemonSet i: daemonsets.apps \"i\" is forbidden"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := fake.NewClientset(tc.objs...)
			var propagation metav1.DeletionPropagation
			cs.PrependReactor("delete", "daemonsets", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if p := a.(k8stesting.DeleteAction).GetDeleteOptions().PropagationPolicy; p != nil {
					propagation = *p
				}
				return tc.deleteErr != nil, nil, tc.deleteErr
			})
			var gets atomic.Int32
			cs.PrependReactor("get", "daemonsets", func(k8stesting.Action) (bool, runtime.Object, error) {
				if gets.Add(1) <= tc.lingering {
					return true, daemonSet("i", 1, 1, 2, 2, 2), nil
				}
				return false, nil, nil
			})
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			err := hook(cs).Remove(ctx, "i")
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Remove: %v", err)
				}
				if len(tc.objs) > 0 && propagation != metav1.DeletePropagationForeground {
					t.Fatalf("deleted with propagation %q; want Foreground (the pods must be gone first)", propagation)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Remove = %v; want an error saying %q", err, tc.wantErr)
			}
		})
	}
}
