package uninstallhook

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DaemonSets is the part of client-go's DaemonSetInterface the hook uses.
type DaemonSets interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*appsv1.DaemonSet, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

// Pods is the part of client-go's PodInterface the hook uses: the pods of a
// DaemonSet that is not ready yet are listed to name their nodes.
type Pods interface {
	List(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error)
}

// Hook acts on DaemonSets in one namespace (the release's).
type Hook struct {
	DaemonSets DaemonSets
	Pods       Pods
	// Interval between polls; zero means 2s.
	Interval time.Duration
	Logger   *slog.Logger
}

func (h Hook) interval() time.Duration {
	if h.Interval > 0 {
		return h.Interval
	}
	return 2 * time.Second
}

// Remove deletes DaemonSet name with foreground propagation and returns once
// the API server no longer has it: the garbage collector removes the owner
// only after its pods are gone from every node. A DaemonSet that is already
// gone is not an error (a re-run after a failed uninstall).
func (h Hook) Remove(ctx context.Context, name string) error {
	fg := metav1.DeletePropagationForeground
	if err := h.DaemonSets.Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &fg}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete DaemonSet %s: %w", name, err)
	}
	h.Logger.Info("deleting DaemonSet; waiting for its pods to be gone", "daemonset", name)
	return h.poll(ctx, func(ctx context.Context) (bool, string, error) {
		ds, err := h.DaemonSets.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		if err != nil {
			return false, "", err
		}
		// Not the DaemonSet's status: its controller stops updating that
		// once the DaemonSet is being deleted.
		return false, fmt.Sprintf("DaemonSet %s is being deleted; pods left: %s", name, h.podsOf(ctx, ds, func(corev1.Pod) bool { return true })), nil
	})
}

// WaitReady returns once DaemonSet name has its current template Ready on
// every node it is scheduled on. When ctx ends first, the error names the
// nodes whose pod is not Ready.
func (h Hook) WaitReady(ctx context.Context, name string) error {
	h.Logger.Info("waiting for DaemonSet to be Ready on every node", "daemonset", name)
	return h.poll(ctx, func(ctx context.Context) (bool, string, error) {
		ds, err := h.DaemonSets.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, "", fmt.Errorf("get DaemonSet %s: %w", name, err)
		}
		if done, progress := rolledOut(ds); !done {
			return false, progress + "; not Ready: " + h.podsOf(ctx, ds, func(p corev1.Pod) bool { return !podReady(p) }), nil
		}
		return true, "", nil
	})
}

// rolledOut is `kubectl rollout status` for a DaemonSet: the controller saw
// the current generation, and every scheduled pod runs it and is Ready.
func rolledOut(ds *appsv1.DaemonSet) (bool, string) {
	s := ds.Status
	if s.ObservedGeneration < ds.Generation {
		return false, fmt.Sprintf("DaemonSet %s: generation %d not yet observed", ds.Name, ds.Generation)
	}
	if s.UpdatedNumberScheduled < s.DesiredNumberScheduled || s.NumberReady < s.DesiredNumberScheduled {
		return false, fmt.Sprintf("DaemonSet %s: %d of %d nodes Ready (%d updated)", ds.Name, s.NumberReady, s.DesiredNumberScheduled, s.UpdatedNumberScheduled)
	}
	return true, ""
}

// podsOf names, for the operator, the pods of ds that pick selects and
// their nodes; "none" when there are none, "unknown" when they cannot be listed.
func (h Hook) podsOf(ctx context.Context, ds *appsv1.DaemonSet, pick func(corev1.Pod) bool) string {
	if ds.Spec.Selector == nil {
		return "unknown"
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return "unknown"
	}
	pods, err := h.Pods.List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	var found []string
	for _, p := range pods.Items {
		if pick(p) {
			found = append(found, fmt.Sprintf("%s (pod %s, %s)", p.Spec.NodeName, p.Name, p.Status.Phase))
		}
	}
	if len(found) == 0 {
		return "none"
	}
	sort.Strings(found)
	return strings.Join(found, ", ")
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// poll calls check every interval until it reports done or ctx ends. API
// errors are retried (the API server may blink while kubelets restart); the
// last progress or error is what a timeout reports.
func (h Hook) poll(ctx context.Context, check func(context.Context) (bool, string, error)) error {
	t := time.NewTicker(h.interval())
	defer t.Stop()
	var last string
	for {
		done, progress, err := check(ctx)
		if done {
			return nil
		}
		if err != nil {
			progress = err.Error()
		}
		if progress != last {
			last = progress
			h.Logger.Info("waiting", "status", progress)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s", ctx.Err(), last)
		case <-t.C:
		}
	}
}
