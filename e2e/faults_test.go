//go:build e2e

package e2e

// Fault tests (issue 6, "Faults"): containerd restarted under criguard,
// criguard restarted under kubelet, the registry going down, the policy file
// broken while serving. Each test says what happened to the pods; the hostile
// registry tests are in hostile_test.go, the socket and credential checks in
// security_test.go. Helpers here are shared by the three files (prefix fault).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criguard/criguard/criproxy/forward"
	"github.com/criguard/criguard/e2e/harness"
)

// faultPolicy is an Enforce ImagePolicy verifying every image of each host
// with key pub (signed by it, or denied), with the failure policy and the
// verification timeout given.
func faultPolicy(failurePolicy, timeout, pub string, hosts ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: criguard.dev/v1alpha1
kind: ImagePolicy
metadata: {name: faults}
spec:
  mode: Enforce
  unmatchedImages: Deny
  failurePolicy: %s
  verificationTimeout: %s
  rules:
`, failurePolicy, timeout)
	for i, h := range hosts {
		fmt.Fprintf(&b, `  - name: host-%d
    images: ["%s/*"]
    action: Verify
    attestors:
      entries:
      - key: {file: %s}
`, i, h, pub)
	}
	return b.String()
}

// faultPull pulls image through the CRI connection with a generous deadline
// (a hang shows up as DeadlineExceeded, not as a stuck test).
func faultPull(t testing.TB, conn *grpc.ClientConn, image string, auth *runtimeapi.AuthConfig) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	resp, err := runtimeapi.NewImageServiceClient(conn).PullImage(ctx, &runtimeapi.PullImageRequest{
		Image: &runtimeapi.ImageSpec{Image: image}, Auth: auth,
	})
	return resp.GetImageRef(), err
}

// faultDenied reports whether err is criguard's policy denial.
func faultDenied(err error) bool {
	return err != nil && strings.Contains(status.Convert(err).Message(), strings.TrimSpace(forward.DeniedPrefix))
}

// faultMemory returns VmHWM and VmRSS of pid in KiB.
func faultMemory(t testing.TB, pid int) (hwm, rss int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("reading criguard's memory: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "VmHWM:":
			hwm = v
		case "VmRSS:":
			rss = v
		}
	}
	if hwm == 0 {
		t.Fatalf("no VmHWM in /proc/%d/status", pid)
	}
	return hwm, rss
}

// faultContainers lists every container containerd holds (asked straight).
type faultContainer struct {
	ID       string `json:"id"`
	PodID    string `json:"podSandboxId"`
	State    string `json:"state"`
	ImageRef string `json:"imageRef"`
	Image    struct {
		Image string `json:"image"`
	} `json:"image"`
	Metadata struct {
		Name    string `json:"name"`
		Attempt int    `json:"attempt"`
	} `json:"metadata"`
	Labels map[string]string `json:"labels"`
}

func faultContainers(t testing.TB, c *harness.Containerd) []faultContainer {
	t.Helper()
	out := harness.MustCrictl(t, c.Endpoint(), "ps", "-a", "-o", "json")
	var list struct {
		Containers []faultContainer `json:"containers"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("crictl ps: %v\n%s", err, out)
	}
	return list.Containers
}

// faultImageID lists the IDs of the images containerd holds under repository
// repo (asked straight).
func faultImageID(t testing.TB, e *enforceEnv, repo string) []string {
	t.Helper()
	var ids []string
	for _, im := range e.images(t) {
		for _, r := range append(im.RepoTags, im.RepoDigests...) {
			if strings.HasPrefix(r, repo+":") || strings.HasPrefix(r, repo+"@") {
				ids = append(ids, im.ID)
				break
			}
		}
	}
	return ids
}

// faultLayers returns the layer digests of the image manifest at ref.
func faultLayers(t testing.TB, r *harness.Registry, ref string) []string {
	t.Helper()
	_, body := r.Manifest(t, ref)
	var m struct {
		Layers []struct {
			Digest string `json:"digest"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(body, &m); err != nil || len(m.Layers) == 0 {
		t.Fatalf("manifest of %s: %v\n%s", ref, err, body)
	}
	var out []string
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out
}

// faultCreate creates (not starts) container name from image in pod.
func faultCreate(ctx context.Context, rt runtimeapi.RuntimeServiceClient, podID string, pod *runtimeapi.PodSandboxConfig, name string, attempt uint32, image string) (string, error) {
	resp, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: podID,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: name, Attempt: attempt},
			Image:    &runtimeapi.ImageSpec{Image: image},
			Linux:    &runtimeapi.LinuxContainerConfig{},
		},
		SandboxConfig: pod,
	})
	return resp.GetContainerId(), err
}

// TestFaultContainerdRestart: containerd is restarted while a pull it is
// doing through criguard is half way (a layer held back by the registry), and
// again while containers are being created through criguard. Each call fails
// cleanly or succeeds; criguard stays the same process and needs no restart;
// an unsigned image hammered through criguard the whole time is never pulled
// nor run; afterwards signed pulls and creates work and unsigned ones are
// refused.
//
// Pods: the pod sandbox made before the restart survives it; containers
// created from the signed image before, during or after the restart are the
// only ones containerd holds.
func TestFaultContainerdRestart(t *testing.T) {
	e := newEnforceEnv(t)
	front := harness.StartFrontRegistry(t, e.r)
	front.AddTo(t, e.c)
	pol := filepath.Join(e.dir, "policy.yaml")
	writePolicy(t, pol, faultPolicy("Fail", "30s", e.pub, e.r.Host, front.Host))
	g, base := e.guard(t, pol)
	pid := criguardPid(t, g.Socket)
	conn := harness.DialCRI(t, g.Socket)

	const repo = "restart/pull"
	dg := e.r.PushImage(t, repo, "1.0")
	e.cs.Sign(t, e.key, front.Ref(repo, dg), false)
	unsignedRef, _ := e.unsigned(t, "restart/unsigned")

	// Hammer: unsigned pulls and creates through criguard during both restarts.
	var hammerAllowed atomic.Int64
	var hammerCodes sync.Map
	hammerCtx, stopHammer := context.WithCancel(t.Context())
	var hammerDone sync.WaitGroup
	hammerDone.Add(1)
	go func() {
		defer hammerDone.Done()
		for hammerCtx.Err() == nil {
			ctx, cancel := context.WithTimeout(hammerCtx, time.Minute)
			_, err := runtimeapi.NewImageServiceClient(conn).PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: unsignedRef}})
			cancel()
			if hammerCtx.Err() != nil {
				return
			}
			if err == nil {
				hammerAllowed.Add(1)
			}
			n, _ := hammerCodes.LoadOrStore(status.Code(err).String(), new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
			select {
			case <-hammerCtx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()

	// 1. A restart during a pull: containerd has asked for a layer the registry holds back.
	asked := front.DelayBlobs(20*time.Second, faultLayers(t, e.r, e.r.Ref(repo, dg))...)
	type pullResult struct {
		ref string
		err error
	}
	pulled := make(chan pullResult, 1)
	go func() {
		ref, err := faultPull(t, conn, front.Ref(repo, "1.0"), nil)
		pulled <- pullResult{ref, err}
	}()
	select {
	case p := <-asked:
		t.Logf("containerd is fetching %s; restarting containerd", p)
	case r := <-pulled:
		t.Fatalf("the pull ended before containerd asked for a layer: %q, %v\n%s", r.ref, r.err, g.Logs())
	case <-time.After(3 * time.Minute):
		t.Fatalf("containerd never asked for a layer of %s\n%s", repo, g.Logs())
	}
	e.c.Restart(t)
	front.DelayBlobs(0)
	r := <-pulled
	switch {
	case r.err == nil:
		t.Logf("the pull in flight across the containerd restart succeeded: %s", r.ref)
	case faultDenied(r.err):
		t.Errorf("the signed pull in flight was refused by policy instead of failing or succeeding: %v", r.err)
	default:
		t.Logf("the pull in flight across the containerd restart failed cleanly: %v", r.err)
	}
	// The same criguard pulls it now, by digest, and records kubelet's tag.
	harness.Eventually(t, 2*time.Minute, "signed pull through criguard after the containerd restart", func() error {
		_, err := faultPull(t, conn, front.Ref(repo, "1.0"), nil)
		return err
	})
	if err := e.hasTag(t, front.Ref(repo, "1.0"), dg); err != nil {
		t.Errorf("after the restart: %v", err)
	}
	// containerd's image list: the unsigned image hammered through criguard
	// during the first restart never got in.
	if e.holds(t, e.r.Host+"/restart/unsigned") {
		t.Fatal("the unsigned image reached containerd through criguard during the containerd restart")
	}

	// 2. A restart while containers are created through criguard.
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	pod := benchPodConfig("restart-create", "uid-restart-create")
	pod.Metadata.Namespace = "default"
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	podResp, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
	cancel()
	if err != nil {
		t.Fatalf("RunPodSandbox through criguard: %v", err)
	}
	podID := podResp.GetPodSandboxId()
	harness.MustCrictl(t, e.c.Endpoint(), "pull", unsignedRef) // behind criguard's back
	signedImage := front.Ref(repo, "1.0")

	var mu sync.Mutex
	signedOK, signedErr, unsignedOK := 0, map[string]int{}, 0
	restarted := make(chan struct{})
	createDone := make(chan struct{})
	go func() {
		defer close(createDone)
		deadline := time.Now().Add(3 * time.Minute)
		okAfter := 0
		for attempt := uint32(0); time.Now().Before(deadline); attempt++ {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			_, err := faultCreate(ctx, rt, podID, pod, "signed", attempt, signedImage)
			_, uerr := faultCreate(ctx, rt, podID, pod, "unsigned", attempt, unsignedRef)
			cancel()
			mu.Lock()
			if err == nil {
				signedOK++
			} else {
				signedErr[status.Code(err).String()]++
			}
			if uerr == nil {
				unsignedOK++
			}
			mu.Unlock()
			select {
			case <-restarted:
				if err == nil {
					okAfter++
				}
			default:
			}
			if okAfter >= 2 {
				return
			}
			time.Sleep(50 * time.Millisecond) // pacing, not an assertion
		}
	}()
	harness.Eventually(t, 2*time.Minute, "a signed container created before the restart", func() error {
		mu.Lock()
		defer mu.Unlock()
		if signedOK == 0 {
			return fmt.Errorf("none yet (errors %v)", signedErr)
		}
		return nil
	})
	e.c.Restart(t)
	close(restarted)
	<-createDone
	stopHammer()
	hammerDone.Wait()

	mu.Lock()
	t.Logf("creates through criguard across the restart: signed ok %d, signed errors by code %v, unsigned allowed %d",
		signedOK, signedErr, unsignedOK)
	mu.Unlock()
	var hammer []string
	hammerCodes.Range(func(k, v any) bool {
		hammer = append(hammer, fmt.Sprintf("%s=%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	t.Logf("unsigned pulls through criguard during both restarts, by code: %v", hammer)

	if unsignedOK > 0 {
		t.Errorf("%d creates of the unsigned image were allowed across the containerd restart", unsignedOK)
	}
	if n := hammerAllowed.Load(); n > 0 {
		t.Errorf("%d pulls of the unsigned image were allowed across the containerd restarts", n)
	}
	if signedOK < 2 {
		t.Errorf("signed creates did not resume after the restart (ok %d, errors %v)", signedOK, signedErr)
	}
	// What containerd holds: only containers of the signed image.
	signedIDs := faultImageID(t, e, front.Host+"/"+repo)
	unsignedIDs := faultImageID(t, e, e.r.Host+"/restart/unsigned")
	inPod := 0
	for _, c := range faultContainers(t, e.c) {
		if c.PodID != podID {
			continue
		}
		inPod++
		if c.Metadata.Name != "signed" || slices.Contains(unsignedIDs, c.ImageRef) || !slices.Contains(signedIDs, c.ImageRef) {
			t.Errorf("containerd holds a container criguard should not have let through: %+v (signed image IDs %v, unsigned %v)", c, signedIDs, unsignedIDs)
		}
	}
	// A create judged and forwarded just as containerd went down may have
	// been done by containerd without its answer getting back: more
	// containers than successful calls is fine, fewer is not; all of them
	// are of the signed image (checked above).
	mu.Lock()
	if inPod < signedOK {
		t.Errorf("containerd holds %d containers in the pod; criguard reported %d creates done", inPod, signedOK)
	} else if inPod > signedOK {
		t.Logf("containerd holds %d containers in the pod for %d creates reported done: %d finished as containerd went down, their answers lost", inPod, signedOK, inPod-signedOK)
	}
	mu.Unlock()
	// criguard: same process, no restart, still judging.
	if g.Exited() || criguardPid(t, g.Socket) != pid {
		t.Fatalf("criguard restarted or exited across the containerd restarts\n%s", g.Logs())
	}
	_, err = faultPull(t, conn, unsignedRef, nil)
	if !faultDenied(err) {
		t.Errorf("unsigned pull after the restarts: %v, want a denial", err)
	}
	if got := metric(t, base, `criguard_decisions_total{operation="CreateContainer",result="allow"}`); got < 2 {
		t.Errorf("allowed creates counted %v", got)
	}
	t.Logf("criguard upstream errors counted: PullImage %v, CreateContainer %v, ImageStatus %v",
		metric(t, base, `criguard_upstream_errors_total{operation="PullImage"}`),
		metric(t, base, `criguard_upstream_errors_total{operation="CreateContainer"}`),
		metric(t, base, `criguard_upstream_errors_total{operation="ImageStatus"}`))
}

// TestFaultCriguardRestart: kubelet runs static pods through criguard;
// criguard is stopped with SIGTERM, then killed with SIGKILL, and started
// again each time. The running container is untouched (same ID, same PID,
// never restarted), kubelet reconnects by itself (a new signed static pod
// comes up after each restart) and no pod is lost; an unsigned static pod
// never gets a container, before or after.
func TestFaultCriguardRestart(t *testing.T) {
	e := newEnforceEnv(t)
	pol := filepath.Join(e.dir, "policy.yaml")
	writePolicy(t, pol, e.nativePolicy("Enforce"))
	g, _ := e.guard(t, pol)
	k := harness.StartKubelet(t, harness.KubeletOptions{RuntimeEndpoint: g.Endpoint()})

	signedRef, _ := e.signed(t, "restart/kubelet", false)
	unsignedRef, _ := e.unsigned(t, "restart/kubelet-unsigned")
	k.WriteStaticPod(t, "web", harness.StaticPod("web", "default", signedRef))
	k.WriteStaticPod(t, "bad", harness.StaticPod("bad", "default", unsignedRef))
	first := proxyWaitRunning(t, e.c, "web-"+k.NodeName, 3*time.Minute)
	firstPid := proxyContainerPid(t, e.c, first)
	pods := []string{"web-" + k.NodeName}

	for i, how := range []string{"SIGTERM", "SIGKILL"} {
		before := criguardPid(t, g.Socket)
		switch how {
		case "SIGTERM":
			g.Stop(t)
		case "SIGKILL":
			g.Kill(t)
			if _, err := os.Stat(g.Socket); err != nil {
				t.Logf("after SIGKILL the socket file is gone: %v", err)
			}
		}
		// While criguard is down, the container runs on (asked straight).
		if id := proxyWaitRunning(t, e.c, "web-"+k.NodeName, 30*time.Second); id != first {
			t.Fatalf("with criguard down (%s) the container changed: %s -> %s", how, first, id)
		}
		g.Restart(t)
		after := criguardPid(t, g.Socket)
		if after == before {
			t.Fatalf("criguard was not restarted (pid %d)", after)
		}
		// kubelet reconnects: a static pod written now comes up through criguard.
		name := fmt.Sprintf("web%d", i+2)
		k.WriteStaticPod(t, name, harness.StaticPod(name, "default", signedRef))
		proxyWaitRunning(t, e.c, name+"-"+k.NodeName, 3*time.Minute)
		pods = append(pods, name+"-"+k.NodeName)
		t.Logf("criguard %s (pid %d -> %d): kubelet reconnected, static pod %s running", how, before, after, name)
	}

	// Every pod is still there and the first container was never touched.
	for _, p := range pods {
		proxyWaitRunning(t, e.c, p, time.Minute)
	}
	if id := proxyWaitRunning(t, e.c, "web-"+k.NodeName, time.Minute); id != first {
		t.Errorf("container of web changed across criguard restarts: %s -> %s", first, id)
	} else if pid := proxyContainerPid(t, e.c, id); pid != firstPid {
		t.Errorf("container of web restarted: pid %d -> %d", firstPid, pid)
	}
	for _, c := range faultContainers(t, e.c) {
		if c.Metadata.Attempt > 0 {
			t.Errorf("kubelet restarted a container across criguard restarts: %+v", c)
		}
		if strings.HasPrefix(c.Labels["io.kubernetes.pod.name"], "bad-") {
			t.Errorf("the unsigned static pod got a container: %+v", c)
		}
	}
	if e.holds(t, e.r.Host+"/restart/kubelet-unsigned") {
		t.Error("the unsigned image reached containerd")
	}
	if k.Exited() {
		t.Fatal("kubelet exited")
	}
	harness.Eventually(t, time.Minute, "kubelet's log showing SignatureValidationFailed for the unsigned pod", func() error {
		if !strings.Contains(k.Logs(), "SignatureValidationFailed") {
			return errors.New("not yet")
		}
		return nil
	})
}

// TestFaultRegistryDown: the registry (a proxy in front of it, serving both
// containerd and criguard) goes down.
//
//   - failurePolicy Fail: a pull needing verification is refused with a reason
//     that says the registry could not be reached; a container of an image
//     pulled and verified before (verdict cached) is created and runs; a
//     container of an image on the node that was never verified is refused.
//   - failurePolicy Ignore (reloaded while down): that container is allowed and
//     counted as failed_open; a pull by digest is let through by criguard
//     (counted) and then fails in containerd, which cannot reach the registry.
func TestFaultRegistryDown(t *testing.T) {
	e := newEnforceEnv(t)
	front := harness.StartFrontRegistry(t, e.r)
	front.AddTo(t, e.c)
	pol := filepath.Join(e.dir, "policy.yaml")
	writePolicy(t, pol, faultPolicy("Fail", "10s", e.pub, front.Host))
	g, base := e.guard(t, pol)
	conn := harness.DialCRI(t, g.Socket)
	rt := runtimeapi.NewRuntimeServiceClient(conn)

	sign := func(repo string) (string, string) {
		dg := e.r.PushImage(t, repo, "1.0")
		e.cs.Sign(t, e.key, front.Ref(repo, dg), false)
		return front.Ref(repo, "1.0"), dg
	}
	verifiedRef, _ := sign("down/verified") // pulled through criguard: verdict cached
	sideRef, _ := sign("down/sideloaded")   // pulled behind criguard's back: never judged
	newRef, newDg := sign("down/new")       // not on the node
	if _, err := faultPull(t, conn, verifiedRef, nil); err != nil {
		t.Fatalf("signed pull through criguard: %v\n%s", err, g.Logs())
	}
	harness.MustCrictl(t, e.c.Endpoint(), "pull", sideRef)

	front.SetDown(t, true)
	t.Logf("registry %s is down", front.Host)

	start := time.Now()
	_, err := faultPull(t, conn, newRef, nil)
	took := time.Since(start)
	if !faultDenied(err) {
		t.Fatalf("pull needing verification with the registry down: %v; want a SignatureValidationFailed denial", err)
	}
	msg := status.Convert(err).Message()
	if !strings.Contains(msg, "could not complete") && !strings.Contains(msg, "unreachable") && !strings.Contains(msg, "refused") {
		t.Errorf("the denial does not say the registry could not be reached: %s", msg)
	}
	t.Logf("registry down, failurePolicy Fail: pull of %s refused in %s: %s", newRef, took.Round(time.Millisecond), msg)

	pod := benchPodConfig("registry-down", "uid-registry-down")
	pod.Metadata.Namespace = "default"
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	podResp, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	podID := podResp.GetPodSandboxId()
	id, err := faultCreate(ctx, rt, podID, pod, "verified", 0, verifiedRef)
	if err != nil {
		t.Fatalf("registry down: create from the verified (cached) image refused: %v", err)
	}
	if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("start: %v", err)
	}
	harness.Eventually(t, time.Minute, "the verified container running", func() error {
		st := harness.MustCrictl(t, e.c.Endpoint(), "inspect", "-o", "go-template", "--template", "{{.status.state}}", id)
		if !strings.Contains(st, "RUNNING") {
			return fmt.Errorf("state %s", st)
		}
		return nil
	})
	if got := metric(t, base, `criguard_verdict_cache_hits_total{operation="CreateContainer"}`); got < 1 {
		t.Errorf("the verified image's create was not answered from the cache (hits %v)", got)
	}
	_, err = faultCreate(ctx, rt, podID, pod, "sideloaded", 0, sideRef)
	if !faultDenied(err) || status.Code(err) != codes.PermissionDenied {
		t.Fatalf("registry down, Fail: create of a never-verified image: %v; want PermissionDenied SignatureValidationFailed", err)
	}
	t.Logf("registry down, failurePolicy Fail: never-verified image refused: %s", status.Convert(err).Message())
	failedOpen := `criguard_decisions_total{operation="CreateContainer",result="failed_open"}`
	if got := metric(t, base, failedOpen); got != 0 {
		t.Errorf("failed_open counted %v under failurePolicy Fail", got)
	}

	// failurePolicy Ignore, still down.
	okReloads := metric(t, base, `criguard_policy_reloads_total{result="ok"}`)
	writePolicy(t, pol, faultPolicy("Ignore", "10s", e.pub, front.Host))
	harness.Eventually(t, 30*time.Second, "the Ignore policy in force", func() error {
		if metric(t, base, `criguard_policy_reloads_total{result="ok"}`) <= okReloads {
			return errors.New("not reloaded yet")
		}
		return nil
	})
	if _, err := faultCreate(ctx, rt, podID, pod, "sideloaded", 0, sideRef); err != nil {
		t.Fatalf("registry down, Ignore: create of a never-verified image refused: %v", err)
	}
	if got := metric(t, base, failedOpen); got < 1 {
		t.Errorf("the failed-open create was not counted (%s = %v)", failedOpen, got)
	}
	pullFailedOpen := `criguard_decisions_total{operation="PullImage",result="failed_open"}`
	_, err = faultPull(t, conn, front.Ref("down/new", newDg), nil)
	switch {
	case err == nil:
		t.Errorf("pull by digest succeeded although the registry is down")
	case faultDenied(err):
		t.Errorf("registry down, Ignore: pull by digest refused by criguard: %v", err)
	default:
		t.Logf("registry down, Ignore: pull by digest let through by criguard, then failed in containerd: %v", err)
	}
	// By tag: no digest can be resolved; criguard lets it through as asked
	// (or refuses it), and containerd cannot pull it either.
	_, err = faultPull(t, conn, newRef, nil)
	switch {
	case err == nil:
		t.Errorf("pull by tag succeeded although the registry is down")
	case faultDenied(err):
		t.Logf("registry down, Ignore: pull by tag refused by criguard: %s", status.Convert(err).Message())
	default:
		t.Logf("registry down, Ignore: pull by tag let through by criguard, then failed in containerd: %v", err)
	}
	if got := metric(t, base, pullFailedOpen); got < 1 {
		t.Errorf("the failed-open pull was not counted (%s = %v)", pullFailedOpen, got)
	}
	if strings.Count(g.Logs(), `"decision":"failed_open"`) < 2 {
		t.Errorf("criguard's log lacks the failed_open decisions")
	}

	// The registry back: verification works again.
	front.SetDown(t, false)
	writePolicy(t, pol, faultPolicy("Fail", "10s", e.pub, front.Host))
	harness.Eventually(t, time.Minute, "a signed pull after the registry is back", func() error {
		_, err := faultPull(t, conn, newRef, nil)
		return err
	})
}

// TestFaultPolicyBroken: while criguard serves, the policy file is removed,
// truncated to nothing, cut in the middle of a line, and replaced by invalid
// YAML and by a valid YAML with an unknown field; then a key file the policy
// names disappears and SIGHUP asks for a reload. Each time the reload is
// refused and counted, and the last good policy stays in force: a freshly
// signed image (a new verification, not a cached verdict) is allowed, an
// unsigned one refused. Writing the good policy back is accepted again.
func TestFaultPolicyBroken(t *testing.T) {
	e := newEnforceEnv(t)
	pol := filepath.Join(e.dir, "policy.yaml")
	good := e.nativePolicy("Enforce")
	writePolicy(t, pol, good)
	g, base := e.guard(t, pol)
	conn := harness.DialCRI(t, g.Socket)
	failed := `criguard_policy_reloads_total{result="failed"}`

	cut := strings.LastIndex(good, "key: {file:") + len("key: {file: /tm")
	breakages := []struct {
		name    string
		apply   func()
		restore func()
	}{
		{"removed", func() {
			if err := os.Remove(pol); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"truncated to nothing", func() {
			if err := os.WriteFile(pol, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"cut mid-line", func() { writePolicy(t, pol, good[:cut]) }, nil},
		{"not YAML", func() { writePolicy(t, pol, "spec: [this is: {not yaml\n\t:::\n") }, nil},
		{"unknown field", func() {
			writePolicy(t, pol, strings.Replace(good, "  mode: Enforce\n", "  mode: Enforce\n  enforcementt: Off\n", 1))
		}, nil},
		// A key the policy names disappears (a Secret rotated badly): the
		// good policy text is written back and SIGHUP sent; the reload cannot
		// read the key and is refused, the keys in memory still verify.
		{"key file gone, SIGHUP", func() {
			if err := os.Rename(e.pub, e.pub+".moved"); err != nil {
				t.Fatal(err)
			}
			writePolicy(t, pol, good)
			if err := syscall.Kill(criguardPid(t, g.Socket), syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		}, func() {
			if err := os.Rename(e.pub+".moved", e.pub); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for i, b := range breakages {
		before := metric(t, base, failed)
		b.apply()
		harness.Eventually(t, 30*time.Second, "the broken policy ("+b.name+") refused and counted", func() error {
			if metric(t, base, failed) <= before {
				return errors.New("no failed reload counted yet")
			}
			return nil
		})
		signedRef, signedDg := e.signed(t, fmt.Sprintf("broken/signed%d", i), i%2 == 1)
		if _, err := faultPull(t, conn, signedRef, nil); err != nil {
			t.Errorf("policy %s: signed pull refused: %v", b.name, err)
		} else if err := e.hasTag(t, signedRef, signedDg); err != nil {
			t.Errorf("policy %s: %v", b.name, err)
		}
		unsignedRef, _ := e.unsigned(t, fmt.Sprintf("broken/unsigned%d", i))
		if _, err := faultPull(t, conn, unsignedRef, nil); !faultDenied(err) {
			t.Errorf("policy %s: unsigned pull: %v, want a denial", b.name, err)
		}
		t.Logf("policy %s: reload refused (failed reloads %v), the last good policy still decides", b.name, metric(t, base, failed))
		if b.restore != nil {
			b.restore()
		}
	}
	if strings.Count(g.Logs(), "reload refused") < len(breakages) {
		t.Errorf("criguard logged fewer refused reloads than the %d breakages", len(breakages))
	}
	okBefore := metric(t, base, `criguard_policy_reloads_total{result="ok"}`)
	writePolicy(t, pol, strings.Replace(good, "name: e2e", "name: e2e-fixed", 1))
	harness.Eventually(t, 30*time.Second, "the good policy accepted again", func() error {
		if metric(t, base, `criguard_policy_reloads_total{result="ok"}`) <= okBefore {
			return errors.New("not reloaded yet")
		}
		return nil
	})
	if g.Exited() {
		t.Fatal("criguard exited")
	}
}

// TestFaultContainerdDownAtStart: criguard (with a policy) starts before
// containerd, as it may at boot. It serves anyway: /readyz says not ready and
// why, a signed pull is judged and then fails with Unavailable (nothing is
// allowed without the runtime), an unsigned one is denied. When containerd's
// socket appears, the same criguard process becomes ready and pulls and tags
// through it.
func TestFaultContainerdDownAtStart(t *testing.T) {
	e := newEnforceEnv(t)
	pol := filepath.Join(e.dir, "policy.yaml")
	writePolicy(t, pol, e.nativePolicy("Enforce"))
	link := filepath.Join(harness.TempDir(t, "late"), "containerd.sock") // not there yet
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	g := harness.StartCriguard(t, link, "--policy", pol, "--metrics-address", addr, "--log-format", "json")
	base := "http://" + addr
	pid := criguardPid(t, g.Socket)
	conn := harness.DialCRI(t, g.Socket)

	harness.Eventually(t, 30*time.Second, "/readyz answering not ready", func() error {
		code, body, err := httpGet(t.Context(), base+"/readyz")
		if err != nil {
			return err
		}
		if code != 503 {
			return fmt.Errorf("/readyz %d: %s", code, body)
		}
		return nil
	})
	signedRef, signedDg := e.signed(t, "late/signed", false)
	unsignedRef, _ := e.unsigned(t, "late/unsigned")
	_, err := faultPull(t, conn, signedRef, nil)
	if err == nil || faultDenied(err) {
		t.Fatalf("signed pull with containerd down: %v; want a failure that is not a policy denial", err)
	}
	t.Logf("containerd down at start: signed pull failed with %v", err)
	if _, err := faultPull(t, conn, unsignedRef, nil); !faultDenied(err) {
		t.Fatalf("unsigned pull with containerd down: %v; want a denial", err)
	}

	if err := os.Symlink(e.c.Socket, link); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, "criguard ready once containerd's socket is there", func() error {
		code, body, err := httpGet(t.Context(), base+"/readyz")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("/readyz %d: %s", code, body)
		}
		return nil
	})
	harness.Eventually(t, time.Minute, "a signed pull through the same criguard", func() error {
		_, err := faultPull(t, conn, signedRef, nil)
		return err
	})
	if err := e.hasTag(t, signedRef, signedDg); err != nil {
		t.Error(err)
	}
	if _, err := faultPull(t, conn, unsignedRef, nil); !faultDenied(err) {
		t.Errorf("unsigned pull once containerd is up: %v; want a denial", err)
	}
	if g.Exited() || criguardPid(t, g.Socket) != pid {
		t.Fatal("criguard exited or restarted")
	}
}

// TestFaultCriguardStopDuringPull: criguard gets SIGTERM while a pull it
// allowed is in flight in containerd (the registry holds a layer back). It
// stops taking calls, lets the pull run for --drain-timeout (3 s here), then
// cuts it: the caller gets an error well before the layer would have come, and
// criguard exits cleanly. Started again, the same pull succeeds.
func TestFaultCriguardStopDuringPull(t *testing.T) {
	e := newEnforceEnv(t)
	front := harness.StartFrontRegistry(t, e.r)
	front.AddTo(t, e.c)
	pol := filepath.Join(e.dir, "policy.yaml")
	writePolicy(t, pol, faultPolicy("Fail", "20s", e.pub, front.Host))
	g, _ := e.guard(t, pol, "--drain-timeout", "3s")

	const repo = "drain/app"
	dg := e.r.PushImage(t, repo, "1.0")
	e.cs.Sign(t, e.key, front.Ref(repo, dg), false)
	asked := front.DelayBlobs(2*time.Minute, faultLayers(t, e.r, e.r.Ref(repo, dg))...)
	conn := harness.DialCRI(t, g.Socket)
	type result struct {
		err  error
		took time.Duration
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		_, err := faultPull(t, conn, front.Ref(repo, "1.0"), nil)
		done <- result{err, time.Since(start)}
	}()
	select {
	case <-asked:
	case r := <-done:
		t.Fatalf("the pull ended before containerd asked for a layer: %v", r.err)
	case <-time.After(2 * time.Minute):
		t.Fatal("containerd never asked for a layer")
	}
	stopAt := time.Now()
	g.Stop(t) // fails the test if criguard takes over 10 s
	stopped := time.Since(stopAt)
	var r result
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the pull in flight was not ended by criguard's shutdown")
	}
	if r.err == nil {
		t.Fatalf("the pull succeeded although its layer was held back for 2 minutes")
	}
	if code := g.ExitCode(time.Second); code != 0 {
		t.Errorf("criguard exited %d after SIGTERM, want 0", code)
	}
	t.Logf("SIGTERM with a pull in flight: criguard exited after %s; the caller got %v after %s",
		stopped.Round(time.Millisecond), status.Code(r.err), r.took.Round(time.Millisecond))
	if !strings.Contains(g.Logs(), "drain timeout reached") {
		t.Errorf("criguard's log does not say it cut calls at the drain timeout")
	}

	front.DelayBlobs(0)
	g.Restart(t)
	conn = harness.DialCRI(t, g.Socket)
	harness.Eventually(t, 2*time.Minute, "the same pull after the restart", func() error {
		_, err := faultPull(t, conn, front.Ref(repo, "1.0"), nil)
		return err
	})
	if err := e.hasTag(t, front.Ref(repo, "1.0"), dg); err != nil {
		t.Error(err)
	}
}

// TestFaultSignatureLookupsFail: the registry serves images but its signature
// lookups (referrers API, fallback and .sig tags) answer 503, a broken
// signature store or one hiding signatures from the verifier. With
// failurePolicy Fail a signed image and an unsigned one are both denied (no
// verdict could be reached). With Ignore both are allowed, pulled by digest
// and counted as failed_open: Ignore lets through whatever the registry can
// keep criguard from verifying, which is why it is a trade (docs/reliability.md).
func TestFaultSignatureLookupsFail(t *testing.T) {
	e := newEnforceEnv(t)
	front := harness.StartFrontRegistry(t, e.r)
	front.AddTo(t, e.c)
	pol := filepath.Join(e.dir, "policy.yaml")
	writePolicy(t, pol, faultPolicy("Fail", "10s", e.pub, front.Host))
	g, base := e.guard(t, pol)
	conn := harness.DialCRI(t, g.Socket)

	signedDg := e.r.PushImage(t, "sigfail/signed", "1.0")
	e.cs.Sign(t, e.key, front.Ref("sigfail/signed", signedDg), false)
	unsignedDg := e.r.PushImage(t, "sigfail/unsigned", "1.0")
	front.FailSignatureLookups(true)

	for _, ref := range []string{front.Ref("sigfail/signed", "1.0"), front.Ref("sigfail/unsigned", "1.0")} {
		_, err := faultPull(t, conn, ref, nil)
		if !faultDenied(err) {
			t.Fatalf("Fail, signature lookups failing: pull %s: %v; want a denial", ref, err)
		}
		if msg := status.Convert(err).Message(); !strings.Contains(msg, "could not complete") {
			t.Errorf("the denial of %s does not say the verification could not complete: %s", ref, msg)
		}
	}
	if e.holds(t, front.Host+"/sigfail/unsigned") || e.holds(t, front.Host+"/sigfail/signed") {
		t.Fatal("an image reached containerd under failurePolicy Fail")
	}

	okReloads := metric(t, base, `criguard_policy_reloads_total{result="ok"}`)
	writePolicy(t, pol, faultPolicy("Ignore", "10s", e.pub, front.Host))
	harness.Eventually(t, 30*time.Second, "the Ignore policy in force", func() error {
		if metric(t, base, `criguard_policy_reloads_total{result="ok"}`) <= okReloads {
			return errors.New("not reloaded yet")
		}
		return nil
	})
	for _, tc := range []struct{ repo, dg string }{{"sigfail/signed", signedDg}, {"sigfail/unsigned", unsignedDg}} {
		ref := front.Ref(tc.repo, "1.0")
		if _, err := faultPull(t, conn, ref, nil); err != nil {
			t.Fatalf("Ignore, signature lookups failing: pull %s: %v", ref, err)
		}
		if err := e.hasTag(t, ref, tc.dg); err != nil {
			t.Errorf("Ignore: %v", err)
		}
	}
	if got := metric(t, base, `criguard_decisions_total{operation="PullImage",result="failed_open"}`); got != 2 {
		t.Errorf("failed_open pulls counted %v, want 2", got)
	}
	t.Logf("signature store down: Fail denied both images; Ignore let both through by digest, counted failed_open")
}

// TestFaultPolicyDirectoryReplaced: the policy is a directory, and it is
// replaced as a whole (removed and created again, as `rm -rf && cp -r` or
// some configuration tools do) with a stricter policy. The removal is a
// refused reload (nothing to load); the new directory's policy must then take
// effect like any edit, without a SIGHUP: an unsigned image that the old
// policy allowed is refused.
func TestFaultPolicyDirectoryReplaced(t *testing.T) {
	e := newEnforceEnv(t)
	dir := filepath.Join(e.dir, "policy.d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writePolicy(t, filepath.Join(dir, "policy.yaml"), fmt.Sprintf(`apiVersion: criguard.dev/v1alpha1
kind: ImagePolicy
metadata: {name: open}
spec:
  mode: Enforce
  unmatchedImages: Deny
  rules:
  - name: everything-local
    images: ["%s/*"]
    action: Allow
`, e.r.Host))
	g, base := e.guard(t, dir)
	conn := harness.DialCRI(t, g.Socket)
	first, _ := e.unsigned(t, "replaced/first")
	if _, err := faultPull(t, conn, first, nil); err != nil {
		t.Fatalf("the permissive policy refused an unsigned image: %v", err)
	}

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	failed := `criguard_policy_reloads_total{result="failed"}`
	harness.Eventually(t, 30*time.Second, "the removal seen as a refused reload", func() error {
		if metric(t, base, failed) < 1 {
			return errors.New("no failed reload yet")
		}
		return nil
	})
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writePolicy(t, filepath.Join(dir, "policy.yaml"), e.nativePolicy("Enforce"))
	second, _ := e.unsigned(t, "replaced/second")
	harness.Eventually(t, time.Minute, "the stricter policy of the new directory in force", func() error {
		_, err := faultPull(t, conn, second, nil)
		if !faultDenied(err) {
			return fmt.Errorf("unsigned %s: %v (the old permissive policy still decides)", second, err)
		}
		return nil
	})
	signed, _ := e.signed(t, "replaced/signed", false)
	if _, err := faultPull(t, conn, signed, nil); err != nil {
		t.Errorf("signed pull under the new policy: %v", err)
	}
}
