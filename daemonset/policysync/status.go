package policysync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	// statusTimeout bounds one status apply, so that a slow API server
	// delays the next sync by at most this much.
	statusTimeout = 10 * time.Second
)

// nodeReport is this node's result for one generation of one ImagePolicy.
type nodeReport struct {
	generation int64
	result     string
}

// statusState is what this node applied (per object UID), so that a resync
// applies nothing unchanged, and the last error logged per object, so that a
// failing API server logs each distinct error once.
type statusState struct {
	applied map[types.UID]nodeReport
	failed  map[types.UID]string
}

func newStatusState() statusState {
	return statusState{applied: map[types.UID]nodeReport{}, failed: map[types.UID]string{}}
}

// forget drops objects no longer in the API server.
func (st statusState) forget(objs []*unstructured.Unstructured) {
	live := make(map[types.UID]bool, len(objs))
	for _, o := range objs {
		live[o.GetUID()] = true
	}
	for uid := range st.applied {
		if !live[uid] {
			delete(st.applied, uid)
		}
	}
	for uid := range st.failed {
		if !live[uid] {
			delete(st.failed, uid)
		}
	}
}

// reportStatus server-side applies this node's entry of obj's status.nodes
// when its generation or result differs from what the node last applied or
// what the object already says. Only ImagePolicy objects: Kyverno owns its
// objects' status. Other nodes' entries belong to their own field managers
// and are never sent. A failure is logged, never returned: the policy
// directory is already written and stays as it is.
func (s *Syncer) reportStatus(ctx context.Context, obj *unstructured.Unstructured, result, msg string) {
	if s.opts.Node == "" || obj.GetAPIVersion() != ImagePolicies.GroupVersion().String() || obj.GetKind() != "ImagePolicy" {
		return
	}
	uid := obj.GetUID()
	want := nodeReport{generation: obj.GetGeneration(), result: result}
	if s.status.applied[uid] == want || reported(obj, s.opts.Node) == want {
		s.status.applied[uid] = want
		return
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	_, err := s.opts.Client.Resource(ImagePolicies).ApplyStatus(ctx, obj.GetName(), statusApply(obj, s.opts.Node, want, msg, time.Now()),
		metav1.ApplyOptions{FieldManager: fieldManager(s.opts.Node), Force: true})
	if err != nil {
		e := clip(err.Error(), maxStatusMessage)
		if s.status.failed[uid] != e {
			s.status.failed[uid] = e
			s.opts.Logger.Warn("cannot report this node's result in the ImagePolicy's status (retried on the next sync; the policy file is unaffected); check the ClusterRole grants patch on imagepolicies/status",
				"object", obj.GetName(), "generation", want.generation, "result", result, "err", e)
		}
		return
	}
	delete(s.status.failed, uid)
	s.status.applied[uid] = want
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
