package policysync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
)

// The resources read (get, list and watch), and ImagePolicies' status, where
// each node applies its own entry.
var (
	ImagePolicies        = schema.GroupVersionResource{Group: "criguard.dev", Version: "v1alpha1", Resource: "imagepolicies"}
	KyvernoClusterPolicy = schema.GroupVersionResource{Group: "kyverno.io", Version: "v1", Resource: "clusterpolicies"}
	KyvernoPolicy        = schema.GroupVersionResource{Group: "kyverno.io", Version: "v1", Resource: "policies"}
)

// Options configure a Syncer.
type Options struct {
	Client dynamic.Interface
	// Dir is the host directory written (the installer's --policy-dir).
	Dir string
	// Kyverno also syncs Kyverno policies when KyvernoInstalled says their
	// CRDs exist (asked until it answers).
	Kyverno          bool
	KyvernoInstalled func(ctx context.Context) (bool, error)
	// Events reports what this node wrote; nil reports nothing.
	Events EventRecorder
	// Node names this node in Events and in ImagePolicies' status.nodes;
	// empty reports no status.
	Node string
	// ReportStatus applies this node's entry of ImagePolicies' status.nodes
	// (with Node). Each policy change costs one apply per node and, as every
	// node watches every ImagePolicy, nodes x nodes watch events: large
	// clusters turn it off and keep Events and metrics.
	ReportStatus bool
	// Check refuses a policy file that criguard on the node would refuse to
	// load (criguard refuses the whole directory for one bad file, so one
	// object must not freeze every node's policy); nil checks nothing. A
	// refused object is reported PolicyRejected and its previous file stays.
	Check func(name string, data []byte) error
	// Resync rewrites from the informers' caches at least this often (default 1m).
	Resync time.Duration
	Logger *slog.Logger
}

// Syncer keeps Dir in step with the policy objects of the API server.
type Syncer struct {
	opts   Options
	writer dirWriter
	ready  atomic.Bool
	poke   chan struct{}
	// status is touched by Run's loop only.
	status statusState
}

// New checks o and returns a Syncer.
func New(o Options) (*Syncer, error) {
	if o.Client == nil || o.Dir == "" {
		return nil, errors.New("policysync: a dynamic client and a directory are required")
	}
	if o.Kyverno && o.KyvernoInstalled == nil {
		return nil, errors.New("policysync: Kyverno needs KyvernoInstalled")
	}
	if o.Resync <= 0 {
		o.Resync = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Syncer{opts: o, writer: dirWriter{dir: o.Dir}, poke: make(chan struct{}, 1), status: newStatusState()}, nil
}

// Ready reports whether the directory holds what the API server has (once
// synced), or, before that, a policy from an earlier run to keep enforcing.
func (s *Syncer) Ready() bool { return s.ready.Load() || s.writer.present() }

// Run watches until ctx ends. Errors reaching the API server are retried by
// the informers; the directory is left as it is meanwhile. When Kyverno's
// CRDs appear after the start, Run returns an error so that the process
// restarts and watches them too (the directory stays as it is).
func (s *Syncer) Run(ctx context.Context) error {
	gvrs := []schema.GroupVersionResource{ImagePolicies}
	awaitKyverno := false
	if s.opts.Kyverno {
		ok, err := s.kyvernoInstalled(ctx)
		if err != nil {
			return err
		}
		if ok {
			gvrs = append(gvrs, KyvernoClusterPolicy, KyvernoPolicy)
		} else {
			s.opts.Logger.Info("Kyverno's CRDs are not installed: syncing ImagePolicy objects only, and asking again at every resync")
			awaitKyverno = true
		}
	}
	factory := dynamicinformer.NewDynamicSharedInformerFactory(s.opts.Client, s.opts.Resync)
	var listers []cache.GenericLister
	for _, gvr := range gvrs {
		inf := factory.ForResource(gvr)
		if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { s.kick() },
			UpdateFunc: func(oldObj, newObj any) {
				if policyChanged(oldObj, newObj) {
					s.kick()
				}
			},
			DeleteFunc: func(any) { s.kick() },
		}); err != nil {
			return fmt.Errorf("watch %s: %w", gvr.Resource, err)
		}
		listers = append(listers, inf.Lister())
	}
	ctx, cancel := context.WithCancel(ctx)
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	defer cancel() // first: Shutdown waits for the informers to stop
	// Nothing is written before every list completed once: a partial view
	// would remove policies the node enforces.
	for gvr, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("list %s: %w", gvr.Resource, context.Cause(ctx))
		}
	}
	tick := time.NewTicker(s.opts.Resync)
	defer tick.Stop()
	for {
		if err := s.syncOnce(ctx, listers); err != nil {
			s.opts.Logger.Error("writing policies failed; the node keeps its current policy files", "dir", s.opts.Dir, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.poke:
		case <-tick.C:
			if awaitKyverno {
				if ok, err := s.opts.KyvernoInstalled(ctx); err == nil && ok {
					return errors.New("Kyverno's CRDs are installed now: restarting to sync Kyverno policies too")
				}
			}
		}
	}
}

func (s *Syncer) kick() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

func (s *Syncer) kyvernoInstalled(ctx context.Context) (bool, error) {
	for {
		ok, err := s.opts.KyvernoInstalled(ctx)
		if err == nil {
			return ok, nil
		}
		s.opts.Logger.Warn("cannot tell whether Kyverno's CRDs exist; retrying", "err", err)
		select {
		case <-ctx.Done():
			return false, context.Cause(ctx)
		case <-time.After(5 * time.Second):
		}
	}
}

// checkedFile is o as policy file name, when that is a file the node can
// write (a name within the file system's limit) and criguard would load.
func (s *Syncer) checkedFile(name string, o *unstructured.Unstructured) ([]byte, error) {
	if len(name) > maxFileName {
		return nil, fmt.Errorf("the policy file name %s... is %d bytes long, over the %d a node accepts: give the object a shorter name", name[:40], len(name), maxFileName)
	}
	data, err := policyFile(o)
	if err != nil || s.opts.Check == nil {
		return data, err
	}
	if err := s.opts.Check(name, data); err != nil {
		return nil, fmt.Errorf("criguard would refuse it, and with it every policy on the node: %w", err)
	}
	return data, nil
}

// syncOnce writes what the caches hold and reports each file written.
func (s *Syncer) syncOnce(ctx context.Context, listers []cache.GenericLister) error {
	objs, err := collect(listers)
	if err != nil {
		return err
	}
	want := map[string][]byte{}
	byFile := map[string]*unstructured.Unstructured{}
	var reports []statusReport
	for _, o := range objs {
		name := fileName(o)
		data, err := s.checkedFile(name, o)
		if err != nil {
			// Keep this object's last good file, if any.
			s.opts.Logger.Error("policy object not written; its previous file stays", "object", objectName(o), "err", err)
			msg := fmt.Sprintf("node %s did not write generation %d: %v; it keeps the previous file", s.opts.Node, o.GetGeneration(), err)
			s.report(ctx, o, "PolicyRejected", msg)
			reports = append(reports, statusReport{obj: o, result: resultRejected, msg: msg})
			if old, rerr := readBounded(s.opts.Dir + "/" + name); rerr == nil {
				want[name] = old
			}
			continue
		}
		want[name], byFile[name] = data, o
	}
	if len(want) == 0 {
		s.reportStatuses(ctx, reports)
		s.opts.Logger.Warn("no policy objects in the API server; the node keeps its current policy files (delete them by uninstalling)", "dir", s.opts.Dir)
		s.ready.Store(true)
		return nil
	}
	written, err := s.writer.apply(want)
	for _, n := range written {
		if o := byFile[n]; o != nil {
			s.opts.Logger.Info("policy written", "object", objectName(o), "kind", o.GetKind(), "generation", o.GetGeneration(), "file", n)
			s.report(ctx, o, "PolicySynced", s.syncedMessage(o, n))
		}
	}
	// The status says which generation the node's file holds: written now,
	// or earlier (a restart, a resync). After a failed write only what was
	// written is known to be on disk.
	if err != nil {
		byFile = pick(byFile, written)
	}
	for _, n := range slices.Sorted(maps.Keys(byFile)) {
		reports = append(reports, statusReport{obj: byFile[n], result: resultSynced, msg: s.syncedMessage(byFile[n], n)})
	}
	s.reportStatuses(ctx, reports)
	s.status.forget(objs)
	if err != nil {
		return err
	}
	s.ready.Store(true)
	return nil
}

func (s *Syncer) syncedMessage(o *unstructured.Unstructured, file string) string {
	return fmt.Sprintf("node %s wrote generation %d to %s for criguard to enforce", s.opts.Node, o.GetGeneration(), file)
}

func pick(byFile map[string]*unstructured.Unstructured, names []string) map[string]*unstructured.Unstructured {
	out := make(map[string]*unstructured.Unstructured, len(names))
	for _, n := range names {
		if o := byFile[n]; o != nil {
			out[n] = o
		}
	}
	return out
}

// policyChanged reports whether an update may change an object's policy
// file (see policyFile): not a status or bookkeeping update. Without this
// every node would sync once per other node's status report.
func policyChanged(oldObj, newObj any) bool {
	o, ok1 := oldObj.(*unstructured.Unstructured)
	n, ok2 := newObj.(*unstructured.Unstructured)
	if !ok1 || !ok2 {
		return true
	}
	return o.GetUID() != n.GetUID() || o.GetGeneration() != n.GetGeneration() ||
		!maps.Equal(o.GetLabels(), n.GetLabels()) || !maps.Equal(o.GetAnnotations(), n.GetAnnotations()) ||
		!reflect.DeepEqual(o.Object["spec"], n.Object["spec"])
}

// collect lists every cached object: all ImagePolicies, and Kyverno policies
// that have verifyImages rules (criguard enforces nothing else of Kyverno's).
func collect(listers []cache.GenericLister) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for _, l := range listers {
		items, err := l.List(everything)
		if err != nil {
			return nil, fmt.Errorf("list cached policies: %w", err)
		}
		for _, it := range items {
			u, ok := it.(*unstructured.Unstructured)
			if !ok {
				return nil, fmt.Errorf("cached policy of type %T", it)
			}
			if u.GetAPIVersion() == "kyverno.io/v1" && !hasVerifyImages(u) {
				continue
			}
			out = append(out, u)
		}
	}
	sort.Slice(out, func(i, j int) bool { return fileName(out[i]) < fileName(out[j]) })
	return out, nil
}

func hasVerifyImages(u *unstructured.Unstructured) bool {
	rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
	for _, r := range rules {
		if m, ok := r.(map[string]any); ok {
			if vi, ok := m["verifyImages"].([]any); ok && len(vi) > 0 {
				return true
			}
		}
	}
	return false
}
