package policysync

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

var everything = labels.Everything()

// EventRecorder stores an Event.
type EventRecorder interface {
	Record(ctx context.Context, ev *corev1.Event) error
}

// ClientsetEvents records Events through the core/v1 client (create only).
type ClientsetEvents struct{ Client corev1client.EventsGetter }

// Record creates ev in its namespace.
func (c ClientsetEvents) Record(ctx context.Context, ev *corev1.Event) error {
	_, err := c.Client.Events(ev.Namespace).Create(ctx, ev, metav1.CreateOptions{})
	return err
}

// report records an Event on obj; Events on a cluster-scoped object live in
// "default", as kubectl describe looks for them. A failure is only logged:
// reporting never holds up enforcement.
func (s *Syncer) report(ctx context.Context, obj *unstructured.Unstructured, reason, msg string) {
	if s.opts.Events == nil {
		return
	}
	ns := obj.GetNamespace()
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	now := metav1.NewTime(time.Now())
	typ := corev1.EventTypeNormal
	if reason != "PolicySynced" {
		typ = corev1.EventTypeWarning
	}
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("%s.%s.%x", obj.GetName(), s.opts.Node, now.UnixNano()),
			Namespace: ns,
		},
		InvolvedObject: corev1.ObjectReference{
			APIVersion: obj.GetAPIVersion(), Kind: obj.GetKind(), Name: obj.GetName(), Namespace: obj.GetNamespace(),
			UID: obj.GetUID(), ResourceVersion: obj.GetResourceVersion(),
		},
		Reason:              reason,
		Message:             msg,
		Type:                typ,
		Source:              corev1.EventSource{Component: "criguard-sync", Host: s.opts.Node},
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
		ReportingController: "criguard.dev/criguard-sync",
		ReportingInstance:   s.opts.Node,
	}
	if err := s.opts.Events.Record(ctx, ev); err != nil {
		s.opts.Logger.Warn("cannot record an Event", "object", objectName(obj), "reason", reason, "err", err)
	}
}
