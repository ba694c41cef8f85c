package policysync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
)

// statusPatches checks every write the syncers sent: each is a server-side
// apply of one node's own entry to an ImagePolicy's status subresource,
// holding apiVersion, kind, name and status only. It returns them as
// "MANAGER OBJECT GENERATION RESULT: MESSAGE". Updates by the field manager
// "test" are the test's own.
func statusPatches(t *testing.T, dyn *dynamicfake.FakeDynamicClient) []string {
	t.Helper()
	var out []string
	for _, a := range dyn.Actions() {
		if u, ok := a.(k8stesting.UpdateActionImpl); ok && u.UpdateOptions.FieldManager == "test" {
			continue
		}
		if !slices.Contains([]string{"create", "update", "patch", "delete"}, a.GetVerb()) {
			continue
		}
		p, ok := a.(k8stesting.PatchActionImpl)
		if !ok || p.GetResource() != ImagePolicies || p.GetSubresource() != "status" || p.GetPatchType() != types.ApplyPatchType {
			t.Errorf("the syncer wrote something else than its status entry: %s %s/%s", a.GetVerb(), a.GetResource().Resource, a.GetSubresource())
			continue
		}
		var body struct {
			APIVersion string         `json:"apiVersion"`
			Kind       string         `json:"kind"`
			Metadata   map[string]any `json:"metadata"`
			Status     struct {
				Nodes []map[string]any `json:"nodes"`
			} `json:"status"`
		}
		var keys map[string]any
		if err := json.Unmarshal(p.GetPatch(), &body); err != nil || json.Unmarshal(p.GetPatch(), &keys) != nil {
			t.Fatalf("status patch %s: %v", p.GetPatch(), err)
		}
		manager := p.PatchOptions.FieldManager
		if got := slices.Sorted(maps.Keys(keys)); !slices.Equal(got, []string{"apiVersion", "kind", "metadata", "status"}) ||
			body.APIVersion != "criguard.dev/v1alpha1" || body.Kind != "ImagePolicy" ||
			len(body.Metadata) != 1 || body.Metadata["name"] != p.GetName() {
			t.Errorf("status patch %s: want apiVersion, kind, metadata.name and status only", p.GetPatch())
		}
		if len(body.Status.Nodes) != 1 || "criguard-sync/"+fmt.Sprint(body.Status.Nodes[0]["name"]) != manager ||
			p.PatchOptions.Force == nil || !*p.PatchOptions.Force {
			t.Fatalf("status patch by %q (force %v): %s: want the manager's own entry only, forced", manager, p.PatchOptions.Force, p.GetPatch())
		}
		e := body.Status.Nodes[0]
		if m, _ := e["message"].(string); len(m) > maxStatusMessage {
			t.Errorf("status message of %d bytes", len(m))
		}
		if ts, _ := e["time"].(string); ts == "" {
			t.Errorf("status patch %s: no time", p.GetPatch())
		} else if _, err := time.Parse(time.RFC3339, ts); err != nil {
			t.Errorf("status patch time: %v", err)
		}
		out = append(out, fmt.Sprintf("%s %s %v %v: %v", manager, p.GetName(), e["observedGeneration"], e["result"], e["message"]))
	}
	return out
}

// nodeEntries is an ImagePolicy's status.nodes as "NODE GENERATION RESULT".
func nodeEntries(t *testing.T, dyn *dynamicfake.FakeDynamicClient, name string) []string {
	t.Helper()
	o, err := dyn.Resource(ImagePolicies).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range nodesOf(o.Object) {
		out = append(out, fmt.Sprintf("%v %v %v", n["name"], n["observedGeneration"], n["result"]))
	}
	return out
}

func nodesOf(obj map[string]any) []map[string]any {
	st, _ := obj["status"].(map[string]any)
	nodes, _ := st["nodes"].([]any)
	var out []map[string]any
	for _, n := range nodes {
		if m, ok := n.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// resync kicks the syncer as a resync does and waits for it to act.
func (h *harness) resync() {
	for range 3 {
		h.syncer.kick()
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
}

func withStatus(u *unstructured.Unstructured, nodes ...any) *unstructured.Unstructured {
	u.Object["status"] = map[string]any{"nodes": nodes}
	return u
}

func TestStatusReports(t *testing.T) {
	big := imagePolicy("team", 2, strings.Repeat("a", maxFileBytes))
	for _, tc := range []struct {
		name       string
		objs       []runtime.Object
		kyverno    bool
		failStatus bool
		noStatus   bool // --report-status=false
		files      []string
		events     int
		patches    []string            // status applies sent (prefixes), sorted; each once unless failStatus
		status     map[string][]string // ImagePolicy name: its status.nodes afterwards
	}{{
		name:    "synced",
		objs:    []runtime.Object{imagePolicy("team", 1, "registry.example.com/*")},
		files:   []string{"imagepolicy-team.yaml"},
		events:  1,
		patches: []string{"criguard-sync/node-a team 1 Synced: node node-a wrote generation 1 to imagepolicy-team.yaml for criguard to enforce"},
		status:  map[string][]string{"team": {"node-z 1 Synced", "node-a 1 Synced"}},
	}, {
		name:   "rejected",
		objs:   []runtime.Object{imagePolicy("base", 1, "*"), big},
		files:  []string{"imagepolicy-base.yaml"},
		events: 2,
		patches: []string{
			"criguard-sync/node-a base 1 Synced: node node-a wrote generation 1 to imagepolicy-base.yaml for criguard to enforce",
			"criguard-sync/node-a team 2 Rejected: node node-a did not write generation 2: ImagePolicy team is 10", // ... bytes encoded, more than
		},
		status: map[string][]string{"base": {"node-z 1 Synced", "node-a 1 Synced"}, "team": {"node-z 2 Synced", "node-a 2 Rejected"}},
	}, {
		// A restart: the object already says what the node would report.
		name: "already reported",
		objs: []runtime.Object{withStatus(imagePolicy("team", 1, "*"),
			map[string]any{"name": "node-a", "observedGeneration": int64(1), "result": "Synced"})},
		files:  []string{"imagepolicy-team.yaml"},
		events: 1,
		status: map[string][]string{"team": {"node-a 1 Synced"}},
	}, {
		name:    "Kyverno objects get Events only",
		objs:    []runtime.Object{kyvernoPolicy("ClusterPolicy", "", "verify-team", true)},
		kyverno: true,
		files:   []string{"kyverno-clusterpolicy-verify-team.yaml"},
		events:  1,
	}, {
		name:     "status reporting off: Events only",
		objs:     []runtime.Object{imagePolicy("base", 1, "*"), big},
		noStatus: true,
		files:    []string{"imagepolicy-base.yaml"},
		events:   2,
		status:   map[string][]string{"base": {"node-z 1 Synced"}, "team": {"node-z 2 Synced"}},
	}, {
		name:       "a failing status apply keeps the file and is retried",
		objs:       []runtime.Object{imagePolicy("team", 1, "*")},
		failStatus: true,
		files:      []string{"imagepolicy-team.yaml"},
		events:     1,
		patches:    []string{"criguard-sync/node-a team 1 Synced: node node-a wrote generation 1 to imagepolicy-team.yaml for criguard to enforce"},
		status:     map[string][]string{"team": {"node-z 1 Synced", "node-a 1 Synced"}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			dyn := fakeAPIServer(t, tc.objs...)
			var fail atomic.Bool
			fail.Store(tc.failStatus)
			dyn.PrependReactor("patch", "imagepolicies", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if fail.Load() && a.GetSubresource() == "status" {
					return true, nil, errors.New(`imagepolicies.criguard.dev "team" is forbidden: cannot patch resource "imagepolicies/status"`)
				}
				return false, nil, nil
			})
			h := startNode(t, dyn, "node-a", t.TempDir(), tc.kyverno, tc.kyverno, func(o *Options) { o.ReportStatus = !tc.noStatus })
			h.files(t, tc.files...)
			waitFor(t, "events", func() bool { return len(h.eventMessages(t)) == tc.events })
			if tc.failStatus {
				h.resync() // each sync retries
				if n := len(statusPatches(t, dyn)); n < 2 {
					t.Fatalf("%d status applies while failing, want a retry per sync", n)
				}
				if got := nodeEntries(t, dyn, "team"); len(got) != 1 {
					t.Fatalf("status.nodes %q after a failed apply", got)
				}
				if n := h.logs.count("cannot report this node's result"); n != 1 {
					t.Errorf("the same status error logged %d times, want once", n)
				}
				fail.Store(false)
			}
			h.resync()
			// A sync applies its entries after writing files and sending
			// Events: wait for them rather than for a fixed time.
			waitFor(t, "status applies", func() bool { return len(statusPatches(t, dyn)) >= len(tc.patches) })
			got := statusPatches(t, dyn)
			h.resync() // nothing changed: nothing more is applied
			if again := statusPatches(t, dyn); len(again) != len(got) {
				t.Errorf("a resync applied again: %q", again[len(got):])
			}
			slices.Sort(got)
			if !tc.failStatus && len(got) != len(tc.patches) {
				t.Errorf("%d status applies, want %d: %q", len(got), len(tc.patches), got)
			}
			if got = slices.Compact(got); len(got) != len(tc.patches) ||
				slices.ContainsFunc(tc.patches, func(p string) bool {
					return !slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, p) })
				}) {
				t.Errorf("status applies:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.patches, "\n"))
			}
			for name, want := range tc.status {
				if got := nodeEntries(t, dyn, name); !slices.Equal(got, want) {
					t.Errorf("%s status.nodes %q, want %q", name, got, want)
				}
			}
		})
	}
}

// Two nodes report into one object without touching each other's entry,
// a new generation is reported once by each, and a restarted node whose
// entry is current applies nothing.
func TestStatusTwoNodes(t *testing.T) {
	dyn := fakeAPIServer(t, imagePolicy("team", 1, "registry.example.com/*"))
	a := startNode(t, dyn, "node-a", t.TempDir(), false, false)
	b := startNode(t, dyn, "node-b", t.TempDir(), false, false)
	entries := func() []string { got := nodeEntries(t, dyn, "team"); slices.Sort(got); return got }
	waitFor(t, "both nodes' entries", func() bool {
		return slices.Equal(entries(), []string{"node-a 1 Synced", "node-b 1 Synced", "node-z 1 Synced"})
	})
	o, err := dyn.Resource(ImagePolicies).Get(context.Background(), "team", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range []string{"node-a", "node-b"} {
		if got := ownedEntries(t, o.GetManagedFields(), "criguard-sync/"+node); !slices.Equal(got, []string{`k:{"name":"` + node + `"}`}) {
			t.Errorf("criguard-sync/%s owns %q, want its own entry only", node, got)
		}
	}

	next := imagePolicy("team", 2, "registry.example.com/team/*")
	next.Object["status"] = o.Object["status"]
	next.SetResourceVersion(o.GetResourceVersion())
	if _, err := dyn.Resource(ImagePolicies).Update(context.Background(), next, metav1.UpdateOptions{FieldManager: "test"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "generation 2 from both nodes", func() bool {
		return slices.Equal(entries(), []string{"node-a 2 Synced", "node-b 2 Synced", "node-z 1 Synced"})
	})
	a.resync()
	b.resync()
	if got := statusPatches(t, dyn); len(got) != 4 {
		t.Errorf("status applies %q: want one per node and generation", got)
	}

	a.stop()
	a2 := startNode(t, dyn, "node-a", a.dir, false, false)
	a2.files(t, "imagepolicy-team.yaml")
	a2.resync()
	if got := statusPatches(t, dyn); len(got) != 4 {
		t.Errorf("status applies after node-a restarted %q: its entry was current", got)
	}
}

// ownedEntries lists the status.nodes keys manager owns.
func ownedEntries(t *testing.T, mfs []metav1.ManagedFieldsEntry, manager string) []string {
	t.Helper()
	var out []string
	for _, mf := range mfs {
		if mf.Manager != manager {
			continue
		}
		if mf.Subresource != "" && mf.Subresource != "status" {
			t.Errorf("manager %s on subresource %q", manager, mf.Subresource)
		}
		var fields struct {
			Status struct {
				Nodes map[string]any `json:"f:nodes"`
			} `json:"f:status"`
		}
		if mf.FieldsV1 == nil || json.Unmarshal(mf.FieldsV1.Raw, &fields) != nil {
			t.Fatalf("managed fields of %s: %v", manager, mf.FieldsV1)
		}
		for k := range fields.Status.Nodes {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func TestFieldManagerAndClip(t *testing.T) {
	long := strings.Repeat("n", 250)
	for _, tc := range []struct {
		in, want string
	}{
		{"node-a", "criguard-sync/node-a"},
		{long, "criguard-sync/" + strings.Repeat("n", 97) + "-"},
	} {
		got := fieldManager(tc.in)
		if len(got) > maxFieldManager || !strings.HasPrefix(got, tc.want) {
			t.Errorf("fieldManager(%d bytes) = %q", len(tc.in), got)
		}
	}
	if fieldManager(long) == fieldManager(long[1:]+"m") {
		t.Error("two long node names share a field manager")
	}
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"0123456789abc", 10, "0123456..."},
		{"ééééé", 8, "éé..."}, // never half a rune
	} {
		if got := clip(tc.in, tc.n); got != tc.want || len(got) > tc.n {
			t.Errorf("clip(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// Only what goes into a policy file makes every node sync again; other
// nodes' status reports do not.
func TestPolicyChanged(t *testing.T) {
	base := imagePolicy("team", 1, "registry.example.com/*")
	for _, tc := range []struct {
		name string
		mod  func(u *unstructured.Unstructured)
		want bool
	}{
		{"another node's status entry", func(u *unstructured.Unstructured) {
			u.Object["status"] = map[string]any{"nodes": []any{map[string]any{"name": "node-b", "observedGeneration": int64(1), "result": "Synced"}}}
			u.SetResourceVersion("2")
		}, false},
		{"spec", func(u *unstructured.Unstructured) {
			u.Object["spec"].(map[string]any)["unmatchedImages"] = "Allow"
		}, true},
		{"generation", func(u *unstructured.Unstructured) { u.SetGeneration(2) }, true},
		{"label", func(u *unstructured.Unstructured) { u.SetLabels(map[string]string{"team": "a"}) }, true},
		{"annotation", func(u *unstructured.Unstructured) { u.SetAnnotations(map[string]string{"note": "x"}) }, true},
		{"recreated", func(u *unstructured.Unstructured) { u.SetUID("uid-other") }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := base.DeepCopy()
			tc.mod(next)
			if got := policyChanged(base, next); got != tc.want {
				t.Errorf("policyChanged = %v, want %v", got, tc.want)
			}
		})
	}
}

// An API server whose ImagePolicy CRD predates status.nodes (Helm never
// upgrades crds/) accepts the apply and prunes the entry: the node warns
// once, naming the fix, applies the same report no more than once, and
// applies again when the generation changes.
func TestStatusDroppedByOldCRD(t *testing.T) {
	dyn := fakeAPIServer(t, imagePolicy("team", 1, "registry.example.com/*"))
	var prune atomic.Bool
	prune.Store(true)
	dyn.PrependReactor("patch", "imagepolicies", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if !prune.Load() || a.GetSubresource() != "status" {
			return false, nil, nil
		}
		// What the API server returns after pruning: no node-a entry.
		return true, imagePolicy("team", 1, "registry.example.com/*"), nil
	})
	h := startNode(t, dyn, "node-a", t.TempDir(), false, false)
	h.files(t, "imagepolicy-team.yaml")
	waitFor(t, "a status apply", func() bool { return len(statusPatches(t, dyn)) == 1 })
	h.resync()
	if got := statusPatches(t, dyn); len(got) != 1 {
		t.Errorf("status applies %q: a dropped entry must not be applied again every sync", got)
	}
	const warning = "kubectl apply --server-side -f charts/criguard/crds/"
	if n := h.logs.count(warning); n != 1 {
		t.Errorf("the old CRD warned about %d times, want once", n)
	}

	update := func(gen int64) {
		t.Helper()
		o, err := dyn.Resource(ImagePolicies).Get(context.Background(), "team", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		next := imagePolicy("team", gen, fmt.Sprintf("registry.example.com/v%d/*", gen))
		next.Object["status"] = o.Object["status"]
		next.SetResourceVersion(o.GetResourceVersion())
		if _, err := dyn.Resource(ImagePolicies).Update(context.Background(), next, metav1.UpdateOptions{FieldManager: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	update(2)
	waitFor(t, "generation 2 applied", func() bool { return len(statusPatches(t, dyn)) == 2 })
	h.resync()
	if got := statusPatches(t, dyn); len(got) != 2 || h.logs.count(warning) != 1 {
		t.Errorf("status applies %q, %d warnings: want one apply per generation, one warning", got, h.logs.count(warning))
	}

	prune.Store(false) // the operator applied the current CRD
	update(3)
	waitFor(t, "node-a's entry", func() bool {
		return slices.Equal(nodeEntries(t, dyn, "team"), []string{"node-z 1 Synced", "node-a 3 Synced"})
	})
	h.resync()
	if got := statusPatches(t, dyn); len(got) != 3 {
		t.Errorf("status applies %q: want one per generation", got)
	}
}

func TestPrunedRecently(t *testing.T) {
	at := time.Date(2026, 12, 1, 13, 0, 0, 0, time.UTC)
	synced1 := nodeReport{generation: 1, result: resultSynced}
	st := newStatusState()
	st.pruned["uid-team"] = prunedReport{nodeReport: synced1, at: at}
	for _, tc := range []struct {
		name string
		uid  types.UID
		want nodeReport
		now  time.Time
		skip bool
	}{
		{"the same report just dropped", "uid-team", synced1, at.Add(time.Minute), true},
		{"the same report an hour later", "uid-team", synced1, at.Add(prunedRetry), false},
		{"a new generation", "uid-team", nodeReport{generation: 2, result: resultSynced}, at.Add(time.Minute), false},
		{"a new result", "uid-team", nodeReport{generation: 1, result: resultRejected}, at.Add(time.Minute), false},
		{"another object", "uid-base", synced1, at.Add(time.Minute), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := st.prunedRecently(tc.uid, tc.want, tc.now); got != tc.skip {
				t.Errorf("prunedRecently = %v, want %v", got, tc.skip)
			}
		})
	}
}

// deadlineClient records the deadline of each status apply (the fake's
// reactors never see the context).
type deadlineClient struct {
	dynamic.Interface
	mu        sync.Mutex
	deadlines []time.Time
}

func (c *deadlineClient) Resource(gvr schema.GroupVersionResource) dynamic.NamespaceableResourceInterface {
	return deadlineResource{NamespaceableResourceInterface: c.Interface.Resource(gvr), c: c}
}

// IsWatchListSemanticsUnSupported passes on the fake's answer, which the
// informers ask the client for.
func (c *deadlineClient) IsWatchListSemanticsUnSupported() bool { return true }

func (c *deadlineClient) seen() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.deadlines)
}

type deadlineResource struct {
	dynamic.NamespaceableResourceInterface
	c *deadlineClient
}

func (r deadlineResource) ApplyStatus(ctx context.Context, name string, obj *unstructured.Unstructured, o metav1.ApplyOptions) (*unstructured.Unstructured, error) {
	d, ok := ctx.Deadline()
	if !ok {
		d = time.Time{}
	}
	r.c.mu.Lock()
	r.c.deadlines = append(r.c.deadlines, d)
	r.c.mu.Unlock()
	time.Sleep(5 * time.Millisecond) // a per-apply timeout would end later for the next one
	return r.NamespaceableResourceInterface.ApplyStatus(ctx, name, obj, o)
}

// The applies of one sync share one deadline, statusTimeout from its start:
// a slow API server delays the next sync by statusTimeout, not by
// statusTimeout per object.
func TestStatusOneDeadlinePerSync(t *testing.T) {
	dyn := fakeAPIServer(t, imagePolicy("base", 1, "*"), imagePolicy("team", 1, "*"), imagePolicy("zeta", 1, "*"))
	c := &deadlineClient{Interface: dyn}
	before := time.Now()
	h := startNode(t, dyn, "node-a", t.TempDir(), false, false, func(o *Options) { o.Client = c })
	h.files(t, "imagepolicy-base.yaml", "imagepolicy-team.yaml", "imagepolicy-zeta.yaml")
	waitFor(t, "three status applies", func() bool { return len(c.seen()) == 3 })
	got := c.seen()
	if got[0].IsZero() || got[0].Before(before.Add(statusTimeout)) || got[0].After(time.Now().Add(statusTimeout)) {
		t.Fatalf("status apply deadline %v, want statusTimeout after the sync started", got[0])
	}
	if len(slices.Compact(slices.Clone(got))) != 1 {
		t.Errorf("status apply deadlines %v: want one for the whole sync", got)
	}
}
