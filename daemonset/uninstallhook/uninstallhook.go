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
		return false, fmt.Sprintf("DaemonSet %s still has %d pods", name, ds.Status.CurrentNumberScheduled), nil
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
			return false, progress + h.notReady(ctx, ds), nil
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

// notReady names the nodes of ds whose pod is not Ready, for the operator.
func (h Hook) notReady(ctx context.Context, ds *appsv1.DaemonSet) string {
	if ds.Spec.Selector == nil {
		return ""
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return ""
	}
	pods, err := h.Pods.List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return ""
	}
	var nodes []string
	for _, p := range pods.Items {
		if !podReady(p) {
			nodes = append(nodes, fmt.Sprintf("%s (pod %s, %s)", p.Spec.NodeName, p.Name, p.Status.Phase))
		}
	}
	if len(nodes) == 0 {
		return ""
	}
	sort.Strings(nodes)
	return "; not Ready on " + strings.Join(nodes, ", ")
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
