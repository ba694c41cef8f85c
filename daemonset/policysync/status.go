package policysync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"time"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// Results a node reports in an ImagePolicy's status.nodes (the CRD's enum).
const (
	resultSynced   = "Synced"
	resultRejected = "Rejected"
)

const (
	// maxStatusMessage is the CRD's maxLength of status.nodes[].message.
	maxStatusMessage = 512
	// maxFieldManager is the API server's limit on a field manager's name.
	maxFieldManager = 128
	// statusTimeout bounds all status applies of one sync together (they
	// run one after another), so that a slow API server delays the next
	// sync by at most this much.
	statusTimeout = 10 * time.Second
	// prunedRetry is how long an entry the API server dropped (a CRD older
	// than this binary) waits before it is applied again unchanged: often
	// enough that entries appear within the hour after the operator applies
	// the new CRD, rarely enough that N nodes do not load the API server.
	prunedRetry = time.Hour
)

// nodeReport is this node's result for one generation of one ImagePolicy.
type nodeReport struct {
	generation int64
	result     string
}

// prunedReport is a report the API server accepted but dropped, and when.
type prunedReport struct {
	nodeReport
	at time.Time
}

// statusReport is one status entry a sync wants applied.
type statusReport struct {
	obj         *unstructured.Unstructured
	result, msg string
}

// statusState is what this node applied (per object UID), so that a resync
// applies nothing unchanged; the last error logged per object, so that a
// failing API server logs each distinct error once; and the reports the API
// server dropped, so that an old CRD is warned about once and not hammered.
type statusState struct {
	applied      map[types.UID]nodeReport
	failed       map[types.UID]string
	pruned       map[types.UID]prunedReport
	prunedWarned bool
}

func newStatusState() statusState {
	return statusState{applied: map[types.UID]nodeReport{}, failed: map[types.UID]string{}, pruned: map[types.UID]prunedReport{}}
}

// forget drops objects no longer in the API server.
func (st statusState) forget(objs []*unstructured.Unstructured) {
	live := make(map[types.UID]bool, len(objs))
	for _, o := range objs {
		live[o.GetUID()] = true
	}
	maps.DeleteFunc(st.applied, func(uid types.UID, _ nodeReport) bool { return !live[uid] })
	maps.DeleteFunc(st.failed, func(uid types.UID, _ string) bool { return !live[uid] })
	maps.DeleteFunc(st.pruned, func(uid types.UID, _ prunedReport) bool { return !live[uid] })
}

// prunedRecently reports whether want was dropped by the API server less
// than prunedRetry before now: then applying it again would be dropped too.
func (st statusState) prunedRecently(uid types.UID, want nodeReport, now time.Time) bool {
	p, ok := st.pruned[uid]
	return ok && p.nodeReport == want && now.Sub(p.at) < prunedRetry
}

// reportStatuses applies the entries of one sync under one deadline, when
// status reporting is on.
func (s *Syncer) reportStatuses(ctx context.Context, reports []statusReport) {
	if !s.opts.ReportStatus || s.opts.Node == "" || len(reports) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	now := time.Now()
	for _, r := range reports {
		s.reportStatus(ctx, r, now)
	}
}

// reportStatus server-side applies this node's entry of r.obj's
// status.nodes when its generation or result differs from what the node
// last applied or what the object already says. Only ImagePolicy objects:
// Kyverno owns its objects' status. Other nodes' entries belong to their
// own field managers and are never sent. A failure is logged, never
// returned: the policy directory is already written and stays as it is.
func (s *Syncer) reportStatus(ctx context.Context, r statusReport, now time.Time) {
	obj := r.obj
	if obj.GetAPIVersion() != ImagePolicies.GroupVersion().String() || obj.GetKind() != "ImagePolicy" {
		return
	}
	uid := obj.GetUID()
	want := nodeReport{generation: obj.GetGeneration(), result: r.result}
	if s.status.applied[uid] == want || reported(obj, s.opts.Node) == want {
		s.status.applied[uid] = want
		delete(s.status.pruned, uid)
		return
	}
	if s.status.prunedRecently(uid, want, now) {
		return
	}
	got, err := s.opts.Client.Resource(ImagePolicies).ApplyStatus(ctx, obj.GetName(), statusApply(obj, s.opts.Node, want, r.msg, now),
		metav1.ApplyOptions{FieldManager: fieldManager(s.opts.Node), Force: true})
	if err != nil {
		e := clip(err.Error(), maxStatusMessage)
		if s.status.failed[uid] != e {
			s.status.failed[uid] = e
			s.opts.Logger.Warn("cannot report this node's result in the ImagePolicy's status (retried on the next sync; the policy file is unaffected); check the ClusterRole grants patch on imagepolicies/status",
				"object", obj.GetName(), "generation", want.generation, "result", r.result, "err", e)
		}
		return
	}
	delete(s.status.failed, uid)
	if reported(got, s.opts.Node) != want {
		s.dropped(obj, want, now)
		return
	}
	delete(s.status.pruned, uid)
	s.status.applied[uid] = want
}

// dropped records an apply the API server accepted without keeping the
// entry: its ImagePolicy CRD predates status.nodes (Helm never upgrades a
// chart's crds/), so it prunes the unknown field. Not recorded as applied:
// it is applied again on the next change of the object's generation or
// result, or after prunedRetry, so entries appear once the CRD is updated.
// Warned once per process: every object and node would say the same.
func (s *Syncer) dropped(obj *unstructured.Unstructured, want nodeReport, now time.Time) {
	s.status.pruned[obj.GetUID()] = prunedReport{nodeReport: want, at: now}
	if s.status.prunedWarned {
		return
	}
	s.status.prunedWarned = true
	s.opts.Logger.Warn("the API server dropped this node's entry of the ImagePolicy's status.nodes: its ImagePolicy CRD is older than criguard-sync (helm upgrade never updates CRDs); "+
		"update it with `kubectl apply --server-side -f charts/criguard/crds/` from the chart's version. Entries are applied again at each policy change and hourly; the policy file is unaffected. Logged once",
		"object", obj.GetName(), "generation", want.generation, "result", want.result)
}

// reported is node's entry in obj's status as last seen (zero if none).
func reported(obj *unstructured.Unstructured, node string) nodeReport {
	st, _ := obj.Object["status"].(map[string]any)
	nodes, _ := st["nodes"].([]any)
	for _, n := range nodes {
		e, _ := n.(map[string]any)
		if name, _ := e["name"].(string); name != node {
			continue
		}
		gen, _ := e["observedGeneration"].(int64)
		res, _ := e["result"].(string)
		return nodeReport{generation: gen, result: res}
	}
	return nodeReport{}
}

// statusApply is the apply configuration of node's entry: apiVersion, kind,
// name and status.nodes with that one entry, nothing else.
func statusApply(obj *unstructured.Unstructured, node string, r nodeReport, msg string, now time.Time) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": obj.GetAPIVersion(),
		"kind":       obj.GetKind(),
		"metadata":   map[string]any{"name": obj.GetName()},
		"status": map[string]any{"nodes": []any{map[string]any{
			"name":               node,
			"observedGeneration": r.generation,
			"result":             r.result,
			"message":            clip(msg, maxStatusMessage),
			"time":               now.UTC().Format(time.RFC3339),
		}}},
	}}
}

// fieldManager names the node's manager of its status entry. Node names may
// be longer than a manager's name; those keep a prefix and a hash of the
// whole, so that two nodes never share a manager.
func fieldManager(node string) string {
	m := "criguard-sync/" + node
	if len(m) <= maxFieldManager {
		return m
	}
	sum := sha256.Sum256([]byte(node))
	h := "-" + hex.EncodeToString(sum[:8])
	return clipBytes(m, maxFieldManager-len(h)) + h
}

// clip shortens s to at most n bytes, on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return clipBytes(s, n-len("...")) + "..."
}

func clipBytes(s string, n int) string {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
