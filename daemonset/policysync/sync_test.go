package policysync

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/criguard/criguard/verifier/policy"
)

func imagePolicy(name string, gen int64, images ...string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "criguard.dev/v1alpha1",
		"kind":       "ImagePolicy",
		"metadata": map[string]any{
			"name": name, "generation": gen, "uid": "uid-" + name, "resourceVersion": "1",
			"annotations": map[string]any{lastApplied: `{"huge":"copy"}`},
		},
		"spec": map[string]any{
			"unmatchedImages": "Deny",
			"rules":           []any{map[string]any{"name": "r", "images": toAny(images), "action": "Allow"}},
		},
		// Another node's report: never written to a file, never changed here.
		"status": map[string]any{"nodes": []any{map[string]any{"name": "node-z", "observedGeneration": gen, "result": "Synced"}}},
	}}
	return u
}

func kyvernoPolicy(kind, ns, name string, verify bool) *unstructured.Unstructured {
	rule := map[string]any{"name": "check", "match": map[string]any{"any": []any{map[string]any{"resources": map[string]any{"kinds": []any{"Pod"}}}}}}
	if verify {
		rule["verifyImages"] = []any{map[string]any{
			"imageReferences": []any{"registry.example.com/*"},
			"attestors":       []any{map[string]any{"entries": []any{map[string]any{"keys": map[string]any{"publicKeys": pem(), "rekor": map[string]any{"ignoreTlog": true}}}}}},
		}}
	} else {
		rule["validate"] = map[string]any{"message": "x", "pattern": map[string]any{"spec": map[string]any{}}}
	}
	meta := map[string]any{"name": name, "generation": int64(3), "uid": "uid-" + name}
	if ns != "" {
		meta["namespace"] = ns
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kyverno.io/v1", "kind": kind, "metadata": meta,
		"spec": map[string]any{"validationFailureAction": "Enforce", "rules": []any{rule}},
	}}
}

func pem() string {
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "cosign", "keys", "a.pub"))
	if err != nil {
		panic(err)
	}
	return string(b)
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

var listKinds = map[schema.GroupVersionResource]string{
	ImagePolicies:        "ImagePolicyList",
	KyvernoClusterPolicy: "ClusterPolicyList",
	KyvernoPolicy:        "PolicyList",
}

type harness struct {
	dir    string
	dyn    *dynamicfake.FakeDynamicClient
	events *fake.Clientset
	syncer *Syncer
	cancel context.CancelFunc
	done   chan error
	logs   *logBuffer
}

// logBuffer collects the syncer's log lines (written from its goroutine).
type logBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, string(p))
	return len(p), nil
}

// count is how many lines contain s.
func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, l := range b.lines {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

func start(t *testing.T, kyverno, installed bool, objs ...runtime.Object) *harness {
	t.Helper()
	return startNode(t, fakeAPIServer(t, objs...), "node-a", t.TempDir(), kyverno, installed)
}

// startNode runs node's syncer on dyn, writing into dir.
func startNode(t *testing.T, dyn *dynamicfake.FakeDynamicClient, node, dir string, kyverno, installed bool, opts ...func(*Options)) *harness {
	t.Helper()
	h := &harness{dir: dir, dyn: dyn, events: fake.NewClientset(), done: make(chan error, 1), logs: &logBuffer{}}
	var err error
	h.syncer, err = New(Options{
		Client: h.dyn, Dir: h.dir, Kyverno: kyverno, Node: node, ReportStatus: true, Resync: time.Hour,
		KyvernoInstalled: func(context.Context) (bool, error) { return installed, nil },
		Events:           ClientsetEvents{Client: h.events.CoreV1()},
		Logger:           slog.New(slog.NewTextHandler(h.logs, nil)),
	}.with(opts))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.syncer.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	if h.cancel != nil {
		h.cancel()
		<-h.done
		h.cancel = nil
	}
}

// files waits until the directory holds exactly want (names), returning contents.
func (h *harness) files(t *testing.T, want ...string) map[string]string {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := map[string]string{}
		var names []string
		ents, _ := os.ReadDir(h.dir)
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(h.dir, e.Name()))
			got[e.Name()] = string(b)
			names = append(names, e.Name())
		}
		if slices.Equal(names, want) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("policy directory holds %v, want %v", names, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) eventMessages(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, ns := range []string{"default", "team"} {
		l, err := h.events.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range l.Items {
			out = append(out, e.InvolvedObject.Kind+"/"+e.InvolvedObject.Name+" "+e.Reason+": "+e.Message)
		}
	}
	slices.Sort(out)
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSyncWritesUpdatesAndRemoves(t *testing.T) {
	h := start(t, false, false, imagePolicy("team", 1, "registry.example.com/*"), imagePolicy("base", 2, "registry.k8s.io/*"))
	got := h.files(t, "imagepolicy-base.yaml", "imagepolicy-team.yaml")
	team := got["imagepolicy-team.yaml"]
	if !strings.HasPrefix(team, "# ImagePolicy team generation 1 (uid uid-team)") || strings.Contains(team, "status") ||
		strings.Contains(team, lastApplied) || strings.Contains(team, "resourceVersion") {
		t.Errorf("written file:\n%s", team)
	}
	// What is written is what criguard loads.
	set, err := policy.Load(h.dir)
	if err != nil || len(set.Policies) != 2 {
		t.Fatalf("criguard's loader on the written directory: %v (%d policies)", err, len(set.Policies))
	}
	waitFor(t, "two PolicySynced events", func() bool { return len(h.eventMessages(t)) == 2 })
	if ev := h.eventMessages(t); !strings.Contains(ev[1], "ImagePolicy/team PolicySynced: node node-a wrote generation 1 to imagepolicy-team.yaml") {
		t.Errorf("events %q", ev)
	}
	if !h.syncer.Ready() {
		t.Error("not ready after the first sync")
	}

	// A new generation is rewritten and reported.
	ctx := context.Background()
	if _, err := h.dyn.Resource(ImagePolicies).Update(ctx, imagePolicy("team", 2, "registry.example.com/team/*"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "generation 2 on disk", func() bool {
		b, _ := os.ReadFile(filepath.Join(h.dir, "imagepolicy-team.yaml"))
		return strings.Contains(string(b), "generation 2") && strings.Contains(string(b), "registry.example.com/team/*")
	})
	waitFor(t, "a third event", func() bool { return len(h.eventMessages(t)) == 3 })

	// A deleted object's file goes; the last one's stays (no empty policy).
	if err := h.dyn.Resource(ImagePolicies).Delete(ctx, "base", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.files(t, "imagepolicy-team.yaml")
	if err := h.dyn.Resource(ImagePolicies).Delete(ctx, "team", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the deletion event is handled; nothing may change
	h.files(t, "imagepolicy-team.yaml")
}

func TestSyncKyverno(t *testing.T) {
	objs := []runtime.Object{
		imagePolicy("own", 1, "*"),
		kyvernoPolicy("ClusterPolicy", "", "verify-team", true),
		kyvernoPolicy("ClusterPolicy", "", "validate-only", false),
		kyvernoPolicy("Policy", "team", "verify-ns", true),
	}
	h := start(t, true, true, objs...)
	h.files(t, "imagepolicy-own.yaml", "kyverno-clusterpolicy-verify-team.yaml", "kyverno-policy-team.verify-ns.yaml")
	if _, err := policy.Load(h.dir); err != nil {
		t.Fatalf("criguard's loader on the written directory: %v", err)
	}
	waitFor(t, "three events", func() bool { return len(h.eventMessages(t)) == 3 })
	if ev := h.eventMessages(t); !slices.ContainsFunc(ev, func(s string) bool { return strings.HasPrefix(s, "Policy/verify-ns PolicySynced") }) {
		t.Errorf("no event on the namespaced Policy: %q", ev)
	}
	h.stop()

	// Without Kyverno's CRDs only ImagePolicies are watched (listing the
	// missing resources would never sync).
	h2 := start(t, true, false, objs...)
	h2.files(t, "imagepolicy-own.yaml")
}

// The API server down from the start: nothing is written, files from an
// earlier run stay and make the node ready; once it answers, the directory
// follows it.
func TestSyncKeepsFilesWhileAPIServerDown(t *testing.T) {
	dir := t.TempDir()
	old := "# from an earlier run\n"
	if err := os.WriteFile(filepath.Join(dir, "imagepolicy-old.yaml"), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "operator-notes.yaml"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds, imagePolicy("new", 1, "*"))
	var down atomic.Bool
	down.Store(true)
	dyn.PrependReactor("list", "imagepolicies", func(k8stesting.Action) (bool, runtime.Object, error) {
		if down.Load() {
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	})
	s, err := New(Options{Client: dyn, Dir: dir, Resync: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	time.Sleep(300 * time.Millisecond)
	if b, _ := os.ReadFile(filepath.Join(dir, "imagepolicy-old.yaml")); string(b) != old {
		t.Fatalf("the last policy changed while the API server was down: %q", b)
	}
	if !s.Ready() {
		t.Error("not ready although the node holds a policy from an earlier run")
	}
	cancel()
	if err := <-done; err == nil {
		t.Error("Run returned no error although it never listed")
	}
	// A fresh node (no files) is not ready while it cannot list.
	s2, _ := New(Options{Client: dyn, Dir: t.TempDir()})
	if s2.Ready() {
		t.Error("a node with no policy is ready")
	}
	// The API server answers: the directory follows it; the operator's file stays.
	down.Store(false)
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, errOld := os.Stat(filepath.Join(dir, "imagepolicy-old.yaml"))
		_, errNew := os.Stat(filepath.Join(dir, "imagepolicy-new.yaml"))
		if errors.Is(errOld, os.ErrNotExist) && errNew == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("directory did not follow the API server (old: %v, new: %v)", errOld, errNew)
		}
		time.Sleep(50 * time.Millisecond) // the informer retries with backoff
	}
	if _, err := os.Stat(filepath.Join(dir, "operator-notes.yaml")); err != nil {
		t.Errorf("a file the syncer does not own was removed: %v", err)
	}
	cancel()
	<-done
}

// An object too large to write keeps its previous file and is reported.
func TestSyncKeepsLastGoodFileOfARejectedObject(t *testing.T) {
	h := start(t, false, false, imagePolicy("team", 1, "registry.example.com/*"))
	before := h.files(t, "imagepolicy-team.yaml")["imagepolicy-team.yaml"]
	big := imagePolicy("team", 2, strings.Repeat("a", maxFileBytes))
	if _, err := h.dyn.Resource(ImagePolicies).Update(context.Background(), big, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a PolicyRejected event", func() bool {
		return slices.ContainsFunc(h.eventMessages(t), func(s string) bool {
			return strings.Contains(s, "PolicyRejected: node node-a did not write generation 2")
		})
	})
	if got := h.files(t, "imagepolicy-team.yaml")["imagepolicy-team.yaml"]; got != before {
		t.Errorf("the last good file changed:\n%s", got)
	}
}

func TestRelay(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		w.Write([]byte("criguard_decisions_total{operation=\"PullImage\",result=\"allow\"} 3\n"))
	}))
	defer up.Close()
	var ready atomic.Bool
	srv := httptest.NewServer(Relay{Upstream: up.URL, Ready: ready.Load}.Handler())
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b := new(strings.Builder)
		_, _ = io.Copy(b, resp.Body)
		return resp.StatusCode, b.String()
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "criguard_decisions_total") {
		t.Errorf("/metrics: %d %q", code, body)
	}
	if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before the first sync: %d", code)
	}
	ready.Store(true)
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz: %d", code)
	}
	up.Close() // criguard down on the node: the scrape fails (up == 0)
	if code, body := get("/metrics"); code != http.StatusServiceUnavailable || !strings.Contains(body, "does not answer") {
		t.Errorf("/metrics with criguard down: %d %q", code, body)
	}
}

func (o Options) with(mods []func(*Options)) Options {
	for _, m := range mods {
		m(&o)
	}
	return o
}

// One object criguard would refuse must not reach the node: criguard refuses
// the whole directory for one bad file, which would freeze every node's policy
// (and keep a new node from being guarded at all). Such an object, like one
// whose file name is too long to write, keeps its previous file and is
// reported; every other object still syncs.
func TestSyncRefusesWhatCriguardWouldRefuse(t *testing.T) {
	long := strings.Repeat("n", 240) // with its temporary name, over 255 bytes
	h := startNode(t, fakeAPIServer(t, imagePolicy("team", 1, "registry.example.com/*"), imagePolicy(long, 1, "registry.example.com/*")),
		"node-a", t.TempDir(), false, false, func(o *Options) {
			o.Check = func(name string, data []byte) error { return policy.Check("/etc/criguard/policy/"+name, data) }
		})
	before := h.files(t, "imagepolicy-team.yaml")["imagepolicy-team.yaml"]
	waitFor(t, "a PolicyRejected event for the long name", func() bool {
		return slices.ContainsFunc(h.eventMessages(t), func(s string) bool {
			return strings.Contains(s, "PolicyRejected") && strings.Contains(s, "give the object a shorter name")
		})
	})
	// Generation 2 names a key file the node does not have.
	bad := imagePolicy("team", 2, "registry.example.com/*")
	bad.Object["spec"].(map[string]any)["rules"] = []any{map[string]any{"name": "r", "images": []any{"*"},
		"attestors": map[string]any{"entries": []any{map[string]any{"key": map[string]any{"file": "/nonexistent/criguard-test.pub"}}}}}}
	if _, err := h.dyn.Resource(ImagePolicies).Update(context.Background(), bad, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a PolicyRejected event for generation 2", func() bool {
		return slices.ContainsFunc(h.eventMessages(t), func(s string) bool {
			return strings.Contains(s, "PolicyRejected: node node-a did not write generation 2") && strings.Contains(s, "criguard-test.pub")
		})
	})
	if got := h.files(t, "imagepolicy-team.yaml")["imagepolicy-team.yaml"]; got != before {
		t.Errorf("the last good file changed:\n%s", got)
	}
}

// Kyverno installed after the sidecar started: Run ends with an error, so the
// process restarts and syncs Kyverno's policies too.
func TestSyncNoticesKyvernoInstalledLater(t *testing.T) {
	var installed atomic.Bool
	h := startNode(t, fakeAPIServer(t, imagePolicy("team", 1, "registry.example.com/*")), "node-a", t.TempDir(), true, false, func(o *Options) {
		o.Resync = 20 * time.Millisecond
		o.KyvernoInstalled = func(context.Context) (bool, error) { return installed.Load(), nil }
	})
	h.files(t, "imagepolicy-team.yaml")
	select {
	case err := <-h.done:
		t.Fatalf("Run ended before Kyverno was installed: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	installed.Store(true)
	select {
	case err := <-h.done:
		if err == nil || !strings.Contains(err.Error(), "Kyverno's CRDs are installed now") {
			t.Fatalf("Run = %v; want the restart error", err)
		}
		h.cancel = nil // already stopped
	case <-time.After(10 * time.Second):
		t.Fatalf("Run did not notice Kyverno's CRDs; log:\n%s", strings.Join(h.logs.lines, ""))
	}
	h.files(t, "imagepolicy-team.yaml") // the directory stays
}
