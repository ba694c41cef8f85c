//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criguard/criguard/e2e/harness"
)

// proxyStep is one crictl call of a parity script and what it answered.
type proxyStep struct {
	name string
	out  string // normalized stdout
	err  string // normalized error ("" on success)
}

// proxyScript runs the crictl sequence (pull, images, inspecti, runp,
// create, start, ps, logs, exec, stop, rm, rmp, rmi) against ep. When cross is
// another endpoint of the same runtime, every read-only call is also made
// there and must answer the same. full=false runs the smoke subset.
func proxyScript(t *testing.T, ep, cross, image, name string, full bool) []proxyStep {
	t.Helper()
	dir := t.TempDir()
	podJSON := filepath.Join(dir, "pod.json")
	ctrJSON := filepath.Join(dir, "ctr.json")
	harness.WriteFile(t, podJSON, harness.HostNetworkPod(name, "parity", harness.TempDir(t, "logs")))
	harness.WriteFile(t, ctrJSON, harness.ContainerConfig("app", image,
		"sh", "-c", "echo hello-stdout; echo hello-stderr >&2; exec sleep 3600"))

	norm := newProxyNormalizer()
	var steps []proxyStep
	run := func(label string, readOnly bool, args ...string) string {
		t.Helper()
		out, err := harness.Crictl(t, ep, args...)
		s := proxyStep{name: label, out: norm.apply(out)}
		if err != nil {
			s.err = norm.apply(proxyCrictlErr(err))
		}
		steps = append(steps, s)
		if readOnly && cross != ep {
			out2, err2 := harness.Crictl(t, cross, args...)
			e1, e2 := "", ""
			if err != nil {
				e1 = proxyCrictlErr(err)
			}
			if err2 != nil {
				e2 = proxyCrictlErr(err2)
			}
			c := newProxyNormalizer()
			if a, b := c.apply(out+e1), c.apply(out2+e2); a != b {
				// Two reads a moment apart may legitimately differ only in times, which
				// the normalizer hides; anything else is a proxy that changed an answer.
				t.Errorf("%s: criguard and containerd answer differently on the same runtime:\n--- through %s\n%s\n--- straight at %s\n%s",
					label, ep, a, cross, b)
			}
		}
		return strings.TrimSpace(out)
	}

	run("version", true, "version")
	if full {
		run("runtime-config", true, "runtime-config")
	}
	run("pull", false, "pull", image)
	run("images", true, "images", "-o", "json")
	run("inspecti", true, "inspecti", "-o", "json", image)
	podID := run("runp", false, "runp", podJSON)
	if podID == "" {
		t.Fatalf("runp through %s gave no pod ID: %+v", ep, steps[len(steps)-1])
	}
	run("pods", true, "pods", "-o", "json")
	steps = append(steps, proxyStep{name: "inspectp.status", out: norm.apply(proxyInspectStatus(t, ep, "inspectp", podID))})
	ctrID := run("create", false, "create", podID, ctrJSON, podJSON)
	if ctrID == "" {
		t.Fatalf("create through %s gave no container ID: %+v", ep, steps[len(steps)-1])
	}
	run("start", false, "start", ctrID)
	harness.Eventually(t, 30*time.Second, "container to run", func() error {
		out, err := harness.Crictl(t, ep, "ps", "--id", ctrID, "--state", "running", "-q")
		if err != nil || strings.TrimSpace(out) == "" {
			return fmt.Errorf("not running: %q %v", out, err)
		}
		return nil
	})
	harness.Eventually(t, 30*time.Second, "container logs", func() error {
		out, err := harness.Crictl(t, ep, "logs", ctrID)
		if err != nil || !strings.Contains(out, "hello-stdout") {
			return fmt.Errorf("no log line yet: %q %v", out, err)
		}
		return nil
	})
	run("ps", true, "ps", "-a", "-o", "json")
	steps = append(steps, proxyStep{name: "inspect.status", out: norm.apply(proxyInspectStatus(t, ep, "inspect", ctrID))})
	// crictl logs writes the container's stderr lines to its own stderr.
	run("logs", true, "logs", ctrID)
	run("exec -s", true, "exec", "-s", ctrID, "sh", "-c", "echo exec-ok; cat /etc/passwd | head -1")
	run("exec -s exit 3", true, "exec", "-s", ctrID, "sh", "-c", "exit 3")
	if full {
		// Exec (not sync): criguard forwards the Exec call; the stream itself
		// goes to the runtime's streaming server at the URL it returned.
		run("exec (stream)", true, "exec", ctrID, "echo", "streamed-ok")
		run("info", true, "info")
	}
	run("stop", false, "stop", ctrID)
	if full {
		run("ps after stop", true, "ps", "-a", "-o", "json")
	}
	run("rm", false, "rm", ctrID)
	run("stopp", false, "stopp", podID)
	run("rmp", false, "rmp", podID)
	run("pods after rmp", true, "pods", "-o", "json")
	run("rmi", false, "rmi", image)
	run("inspecti after rmi", true, "inspecti", image)
	return steps
}

// proxyInspectStatus returns the "status" part of crictl inspect/inspectp -o
// json: "info" carries pids and runtime internals that differ between any two
// runs.
func proxyInspectStatus(t *testing.T, ep, cmd, id string) string {
	t.Helper()
	out := harness.MustCrictl(t, ep, cmd, "-o", "json", id)
	var v struct {
		Status json.RawMessage `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || len(v.Status) == 0 {
		t.Fatalf("crictl %s -o json %s: no status in %q: %v", cmd, id, out, err)
	}
	var buf bytes.Buffer
	_ = json.Indent(&buf, v.Status, "", "  ")
	return buf.String()
}

// proxyCrictlErr keeps what a crictl failure said, without its klog prefix
// (timestamp, pid, source line) that differs between any two runs.
func proxyCrictlErr(err error) string {
	s := err.Error()
	s = regexp.MustCompile(`[EWI]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ [a-z_]+\.go:\d+\] `).ReplaceAllString(s, "")
	return s
}

// proxyNormalizer hides what legitimately differs between two runtimes
// running the same script: pod and container IDs (mapped to <id1>, <id2>... in
// order of appearance, so the same ID maps the same everywhere), times and
// temporary paths. Image IDs and digests (sha256:...) are kept: they must be
// equal.
type proxyNormalizer struct {
	ids map[string]string
}

func newProxyNormalizer() *proxyNormalizer { return &proxyNormalizer{ids: map[string]string{}} }

var (
	proxyIDRe    = regexp.MustCompile(`(sha256:)?\b[0-9a-f]{64}\b`)
	proxyShortRe = regexp.MustCompile(`\b[0-9a-f]{13}\b`)
	proxyNanosRe = regexp.MustCompile(`"\d{16,19}"|\b\d{16,19}\b`)
	proxyTimeRe  = regexp.MustCompile(`\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?`)
	proxyAgoRe   = regexp.MustCompile(`(Less than a second|About a minute|About an hour|\d+ (seconds|minutes|hours)) ago`)
	proxyTmpRe   = regexp.MustCompile(`/tmp/cg-[a-z]+-\d+`)
	proxyPortRe  = regexp.MustCompile(`127\.0\.0\.1:\d+/(exec|attach|portforward)/[A-Za-z0-9_-]+`)
	proxyPidRe   = regexp.MustCompile(`"pid": \d+`)
)

func (n *proxyNormalizer) apply(s string) string {
	s = proxyIDRe.ReplaceAllStringFunc(s, func(m string) string {
		if strings.HasPrefix(m, "sha256:") {
			return m
		}
		return n.id(m)
	})
	s = proxyShortRe.ReplaceAllStringFunc(s, func(m string) string {
		for full, p := range n.ids {
			if strings.HasPrefix(full, m) {
				return p
			}
		}
		return m
	})
	s = proxyNanosRe.ReplaceAllString(s, "<ts>")
	s = proxyTimeRe.ReplaceAllString(s, "<time>")
	s = proxyAgoRe.ReplaceAllString(s, "<ago>")
	s = proxyTmpRe.ReplaceAllString(s, "<tmp>")
	s = proxyPortRe.ReplaceAllString(s, "<stream-url>")
	s = proxyPidRe.ReplaceAllString(s, `"pid": <pid>`)
	// Table columns are padded to the widest cell, and placeholders change widths.
	s = regexp.MustCompile(`[ \t]{2,}`).ReplaceAllString(s, "  ")
	return s
}

func (n *proxyNormalizer) id(full string) string {
	if p, ok := n.ids[full]; ok {
		return p
	}
	p := fmt.Sprintf("<id%d>", len(n.ids)+1)
	n.ids[full] = p
	return p
}

func proxyCompare(t *testing.T, proxied, direct []proxyStep) {
	t.Helper()
	if len(proxied) != len(direct) {
		t.Fatalf("scripts ran %d vs %d steps", len(proxied), len(direct))
	}
	for i := range proxied {
		p, d := proxied[i], direct[i]
		if p.out != d.out || p.err != d.err {
			t.Errorf("step %q differs through criguard:\n--- through criguard: out\n%s\nerr: %s\n--- straight at containerd: out\n%s\nerr: %s",
				p.name, p.out, p.err, d.out, d.err)
		}
	}
}

// TestProxyCrictlParity runs the same crictl script through criguard in
// front of one containerd 2.x and straight at a second, identical one, and
// wants the same answers step by step; every read-only call through criguard
// is also checked against its own containerd directly.
func TestProxyCrictlParity(t *testing.T) {
	harness.RequireRoot(t)
	r := harness.StartRegistry(t, true)
	r.PushImage(t, "parity/app", "1")
	image := r.Ref("parity/app", "1")
	behind := harness.StartContainerd(t, harness.ContainerdOptions{Version: "2", Registry: r})
	alone := harness.StartContainerd(t, harness.ContainerdOptions{Version: "2", Registry: r})
	g := harness.StartCriguard(t, behind.Socket)

	// A stream through criguard (GetContainerEvents) must see the containers
	// this script makes.
	events := proxyStartEvents(t, g.Endpoint())

	proxied := proxyScript(t, g.Endpoint(), behind.Endpoint(), image, "parity", true)
	direct := proxyScript(t, alone.Endpoint(), alone.Endpoint(), image, "parity", true)
	proxyCompare(t, proxied, direct)
	if os.Getenv("CRIGUARD_E2E_DUMP") != "" {
		for _, s := range proxied {
			t.Logf("step %s:\n%s%s", s.name, s.out, s.err)
		}
	}

	for _, want := range []string{"CONTAINER_CREATED_EVENT", "CONTAINER_STARTED_EVENT", "CONTAINER_STOPPED_EVENT", "CONTAINER_DELETED_EVENT"} {
		harness.Eventually(t, 10*time.Second, "event "+want+" through criguard", func() error {
			if !strings.Contains(events(), want) {
				return fmt.Errorf("crictl events through criguard has no %s yet:\n%s", want, events())
			}
			return nil
		})
	}

	if !strings.Contains(proxied[0].out, "RuntimeVersion:  2.") {
		t.Errorf("version through criguard does not name containerd 2.x: %q", proxied[0].out)
	}
	for _, s := range proxied {
		if s.name == "exec -s" && !strings.Contains(s.out, "exec-ok") {
			t.Errorf("exec -s through criguard printed %q, want exec-ok", s.out)
		}
		if s.name == "exec -s exit 3" && !strings.Contains(s.err, "3") {
			t.Errorf("exec -s exit 3 through criguard: err %q, want the exit code", s.err)
		}
		if s.name == "logs" && !strings.Contains(s.out, "hello-stdout") {
			t.Errorf("logs through criguard: %q, want hello-stdout", s.out)
		}
		if s.name == "inspecti after rmi" && s.err == "" {
			t.Errorf("inspecti after rmi through criguard succeeded: %q", s.out)
		}
	}
}

// proxyStartEvents runs `crictl events` against ep until the test ends and
// returns a function reading what it printed so far.
func proxyStartEvents(t *testing.T, ep string) func() string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, harness.Tool(t, "crictl"), "--config", "/dev/null", "-r", ep, "events", "-o", "json")
	var mu sync.Mutex
	var buf bytes.Buffer
	w := proxyLockedWriter{mu: &mu, w: &buf}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("crictl events: %v", err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	// The stream is established once crictl has called GetContainerEvents; give
	// it a moment before the script creates containers.
	time.Sleep(500 * time.Millisecond)
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		return buf.String()
	}
}

type proxyLockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l proxyLockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestProxyCrictlParity16 is the smoke subset against Debian's containerd 1.6.
func TestProxyCrictlParity16(t *testing.T) {
	harness.RequireRoot(t)
	r := harness.StartRegistry(t, true)
	r.PushImage(t, "parity/app", "1")
	image := r.Ref("parity/app", "1")
	behind := harness.StartContainerd(t, harness.ContainerdOptions{Version: "1.6", Registry: r})
	alone := harness.StartContainerd(t, harness.ContainerdOptions{Version: "1.6", Registry: r})
	g := harness.StartCriguard(t, behind.Socket)
	proxied := proxyScript(t, g.Endpoint(), behind.Endpoint(), image, "smoke", false)
	direct := proxyScript(t, alone.Endpoint(), alone.Endpoint(), image, "smoke", false)
	proxyCompare(t, proxied, direct)
	if !strings.Contains(proxied[0].out, "1.6.") {
		t.Errorf("version through criguard does not name containerd 1.6: %q", proxied[0].out)
	}
}

// TestProxyKubeletSurvivesContainerdRestart: a real kubelet whose runtime
// endpoint is criguard runs a hostNetwork static pod; containerd restarts
// under both; the pod's container keeps running untouched and kubelet keeps
// syncing (a second static pod comes up) while criguard stays the same process.
func TestProxyKubeletSurvivesContainerdRestart(t *testing.T) {
	harness.RequireRoot(t)
	r := harness.StartRegistry(t, true)
	r.PushImage(t, "kubelet/app", "1")
	image := r.Ref("kubelet/app", "1")
	c := harness.StartContainerd(t, harness.ContainerdOptions{Version: "2", Registry: r})
	// Debug logging lists every CRI call criguard forwards: proof that kubelet's
	// calls go through it.
	g := harness.StartCriguard(t, c.Socket, "--log-level", "debug")
	k := harness.StartKubelet(t, harness.KubeletOptions{RuntimeEndpoint: g.Endpoint()})

	k.WriteStaticPod(t, "web", harness.StaticPod("web", "default", image))
	first := proxyWaitRunning(t, c, "web-"+k.NodeName, 3*time.Minute)
	pidBefore := proxyContainerPid(t, c, first)

	c.Restart(t)
	logMark := len(g.Logs())

	// kubelet notices the runtime came back and goes on syncing: a new static
	// pod, written after the restart, comes up through criguard.
	k.WriteStaticPod(t, "web2", harness.StaticPod("web2", "default", image))
	proxyWaitRunning(t, c, "web2-"+k.NodeName, 3*time.Minute)

	// Let kubelet run a few sync loops (syncFrequency 5s) against the restarted
	// runtime, then check the first pod's container was never replaced.
	time.Sleep(12 * time.Second)
	after := proxyWaitRunning(t, c, "web-"+k.NodeName, 30*time.Second)
	if after != first {
		t.Errorf("container of static pod web changed across the containerd restart: %s -> %s", first, after)
	}
	if pid := proxyContainerPid(t, c, after); pid != pidBefore {
		t.Errorf("container of static pod web restarted: pid %d -> %d", pidBefore, pid)
	}
	out := harness.MustCrictl(t, c.Endpoint(), "ps", "-a", "--name", "main", "-o", "json")
	if n := strings.Count(out, `"attempt": 1`); n > 0 {
		t.Errorf("kubelet restarted a container after the containerd restart:\n%s", out)
	}
	// The second pod was made by kubelet's calls through criguard after the restart.
	since := g.Logs()[logMark:]
	for _, m := range []string{"RunPodSandbox", "CreateContainer", "StartContainer", "ListPodSandbox"} {
		if !strings.Contains(since, m) {
			t.Errorf("criguard forwarded no %s after the containerd restart; its log since then:\n%s", m, since)
		}
	}
	if g.Exited() || k.Exited() {
		t.Fatalf("criguard exited: %v, kubelet exited: %v", g.Exited(), k.Exited())
	}
	// kubelet talked to criguard (its only endpoint) and saw the runtime healthy again.
	if _, err := harness.Crictl(t, g.Endpoint(), "info"); err != nil {
		t.Errorf("criguard does not answer after the containerd restart: %v", err)
	}
}

// proxyWaitRunning waits until the pod named podName is ready and its
// container "main" runs, and returns that container's ID.
func proxyWaitRunning(t *testing.T, c *harness.Containerd, podName string, timeout time.Duration) string {
	t.Helper()
	var id string
	harness.Eventually(t, timeout, "static pod "+podName+" to run", func() error {
		pods, err := harness.Crictl(t, c.Endpoint(), "pods", "--name", "^"+podName+"$", "--state", "ready", "-q")
		if err != nil {
			return err
		}
		podID := strings.TrimSpace(pods)
		if podID == "" || strings.Contains(podID, "\n") {
			return fmt.Errorf("want one ready pod %s, have %q", podName, podID)
		}
		ctrs, err := harness.Crictl(t, c.Endpoint(), "ps", "--pod", podID, "--name", "^main$", "--state", "running", "-q")
		if err != nil {
			return err
		}
		id = strings.TrimSpace(ctrs)
		if id == "" || strings.Contains(id, "\n") {
			return fmt.Errorf("want one running container in %s, have %q", podName, id)
		}
		return nil
	})
	return id
}

func proxyContainerPid(t *testing.T, c *harness.Containerd, id string) int {
	t.Helper()
	out := harness.MustCrictl(t, c.Endpoint(), "inspect", "-o", "json", id)
	var v struct {
		Info struct {
			Pid int `json:"pid"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Info.Pid == 0 {
		t.Fatalf("no pid in crictl inspect %s: %v\n%s", id, err, out)
	}
	return v.Info.Pid
}

// TestProxyBadUpstream: a missing, dead or wrong upstream gives a clear
// startup error or Unavailable to the caller within seconds, never a hang.
func TestProxyBadUpstream(t *testing.T) {
	harness.RequireRoot(t)
	dir := harness.TempDir(t, "badup")

	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // the socket file stays; nothing listens: connection refused

	regular := filepath.Join(dir, "regular-file")
	harness.WriteFile(t, regular, "not a socket")

	// A socket that accepts and never speaks: a hung runtime.
	mute := filepath.Join(dir, "mute.sock")
	ml, err := net.Listen("unix", mute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ml.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ml.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()

	cases := []struct {
		name, upstream string
		mention        string // the startup error, if criguard refuses to start, names this
	}{
		{"missing socket", filepath.Join(dir, "nothing-here.sock"), "nothing-here.sock"},
		{"stale socket", stale, "stale.sock"},
		{"regular file", regular, "regular-file"},
		{"mute socket", mute, "mute.sock"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			proxyExpectUnavailableOrError(t, "unix://"+tc.upstream, tc.mention)
		})
	}

	t.Run("unsupported scheme", func(t *testing.T) {
		_, stderr, code := harness.RunCriguard(t, "serve", "--listen", filepath.Join(dir, "x.sock"), "--upstream", "tcp://127.0.0.1:1", "--metrics-address=")
		if code == 0 || !strings.Contains(stderr, "tcp://127.0.0.1:1") {
			t.Errorf("criguard serve --upstream tcp://...: exit %d, stderr %q; want a failure naming the endpoint", code, stderr)
		}
	})
}

// proxyExpectUnavailableOrError starts criguard on a bad upstream. Either it
// exits non-zero within 20s with an error naming the upstream, or it serves
// and a CRI call through it fails fast with Unavailable (not a timeout).
func proxyExpectUnavailableOrError(t *testing.T, upstream, mention string) {
	t.Helper()
	dir := harness.TempDir(t, "bad")
	sock := filepath.Join(dir, "criguard.sock")
	cmd := exec.Command(harness.CriguardBinary(t), "serve", "--listen", "unix://"+sock, "--upstream", upstream, "--metrics-address=")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("criguard on upstream %s ignored SIGTERM for 10s", upstream)
		}
	})
	deadline := time.After(20 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			if err == nil {
				t.Fatalf("criguard serve on a bad upstream %s exited 0:\n%s", upstream, out.String())
			}
			if !strings.Contains(out.String(), mention) {
				t.Fatalf("criguard serve on a bad upstream %s failed without naming it:\n%s", upstream, out.String())
			}
			t.Logf("refused at startup (%v): %s", err, strings.TrimSpace(out.String()))
			return
		case <-deadline:
			t.Fatalf("criguard serve on a bad upstream %s neither served nor exited in 20s:\n%s", upstream, out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
	}
	conn := harness.DialCRI(t, sock)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	start := time.Now()
	_, err := runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{})
	took := time.Since(start)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Version through criguard on a bad upstream %s: %v after %s; want Unavailable\n%s", upstream, err, took, out.String())
	}
	if took > 10*time.Second {
		t.Errorf("Unavailable took %s; a dead upstream should fail fast", took)
	}
	t.Logf("serving; Version -> %v in %s", err, took.Round(time.Millisecond))
}

// TestProxyUnusableListenDir: a listen directory criguard cannot use (no
// permission as a non-root user; a file where a directory should be) is a
// clear startup error naming the path, never a hang.
func TestProxyUnusableListenDir(t *testing.T) {
	harness.RequireRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux) is needed to run criguard as a non-root user: %v", err)
	}
	r := harness.StartRegistry(t, true)
	c := harness.StartContainerd(t, harness.ContainerdOptions{Version: "2", Registry: r})
	dir := harness.TempDir(t, "listen")
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// nobody must reach a CRI upstream, so the only problem left is the listen
	// directory: give it a world-connectable forwarder in front of containerd.
	fwd := harness.StartBareForwarder(t, c.Socket, "plain")
	if err := os.Chmod(fwd.Socket, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(fwd.Socket), 0o755); err != nil {
		t.Fatal(err)
	}
	// The binary must be executable by nobody wherever the repo lives.
	bin := filepath.Join(dir, "criguard")
	data, err := os.ReadFile(harness.CriguardBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	rootOnly := filepath.Join(dir, "root-only")
	if err := os.Mkdir(rootOnly, 0o700); err != nil {
		t.Fatal(err)
	}
	fileInWay := filepath.Join(dir, "file-in-the-way")
	harness.WriteFile(t, fileInWay, "x")

	cases := []struct {
		name   string
		listen string
		asUser bool
		want   []string
	}{
		{"no permission (nobody)", filepath.Join(rootOnly, "criguard.sock"), true, []string{"root-only", "permission denied"}},
		{"file in the way", filepath.Join(fileInWay, "criguard.sock"), false, []string{"file-in-the-way", "not a directory"}},
		{"file in the way (nobody)", filepath.Join(fileInWay, "criguard.sock"), true, []string{"file-in-the-way"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{bin, "serve", "--listen", "unix://" + tc.listen, "--upstream", fwd.Endpoint(), "--metrics-address="}
			if tc.asUser {
				args = append([]string{setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups", "--"}, args...)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, args[0], args[1:]...)
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("criguard serve --listen %s hung for 30s:\n%s", tc.listen, out)
			}
			if err == nil {
				t.Fatalf("criguard serve --listen %s exited 0:\n%s", tc.listen, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(strings.ToLower(string(out)), strings.ToLower(w)) {
					t.Errorf("criguard serve --listen %s: error does not say %q:\n%s", tc.listen, w, out)
				}
			}
			t.Logf("%v: %s", err, strings.TrimSpace(string(out)))
		})
	}
}

// TestProxyHarnessTeardown checks the harness's promise that a test leaves
// nothing behind (processes, shims, containers, mounts, sockets, directories,
// kubelet's log links), also when containerd is down at teardown with pods
// still running.
func TestProxyHarnessTeardown(t *testing.T) {
	harness.RequireRoot(t)
	r := harness.StartRegistry(t, true)
	r.PushImage(t, "teardown/app", "1")
	image := r.Ref("teardown/app", "1")
	for _, down := range []bool{false, true} {
		var dirs []string
		t.Run(fmt.Sprintf("containerd down=%v", down), func(t *testing.T) {
			c := harness.StartContainerd(t, harness.ContainerdOptions{Version: "2", Registry: r})
			g := harness.StartCriguard(t, c.Socket)
			k := harness.StartKubelet(t, harness.KubeletOptions{RuntimeEndpoint: g.Endpoint()})
			k.WriteStaticPod(t, "keep", harness.StaticPod("keep", "default", image))
			proxyWaitRunning(t, c, "keep-"+k.NodeName, 2*time.Minute)
			// A second runtime with a pod made by crictl (not beside the kubelet,
			// which would remove a pod it does not know).
			c2 := harness.StartContainerd(t, harness.ContainerdOptions{Version: "2", Registry: r})
			logDir := harness.TempDir(t, "tdlogs")
			dirs = []string{c.Dir, g.Dir, k.Dir, c2.Dir, logDir}
			pod := filepath.Join(logDir, "pod.json")
			ctr := filepath.Join(logDir, "ctr.json")
			harness.WriteFile(t, pod, harness.HostNetworkPod("extra", "default", logDir))
			harness.WriteFile(t, ctr, harness.ContainerConfig("extra", image))
			harness.MustCrictl(t, c2.Endpoint(), "run", ctr, pod)
			if down {
				c2.Stop(t)
				k.Stop(t)
				c.Stop(t)
			}
		})
		for _, d := range dirs {
			if _, err := os.Stat(d); !os.IsNotExist(err) {
				t.Errorf("down=%v: %s still exists after teardown (%v)", down, d, err)
			}
			if pids := proxyPidsMentioning(d); len(pids) > 0 {
				t.Errorf("down=%v: processes still mention %s after teardown: %v", down, d, pids)
			}
			mi, _ := os.ReadFile("/proc/self/mountinfo")
			if strings.Contains(string(mi), d) {
				t.Errorf("down=%v: mounts left under %s", down, d)
			}
			links, _ := os.ReadDir("/var/log/containers")
			for _, l := range links {
				if tgt, _ := os.Readlink(filepath.Join("/var/log/containers", l.Name())); strings.HasPrefix(tgt, d) {
					t.Errorf("down=%v: kubelet log link %s -> %s left", down, l.Name(), tgt)
				}
			}
		}
	}
}

// proxyPidsMentioning lists processes whose command line contains s.
func proxyPidsMentioning(s string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(s)) {
			out = append(out, e.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

// TestProxyLifecycle: the listen socket is 0660; SIGTERM lets an in-flight
// call (a 3s exec) finish before criguard exits 0; after a SIGKILL the stale
// socket file is replaced by the next start.
func TestProxyLifecycle(t *testing.T) {
	harness.RequireRoot(t)
	r := harness.StartRegistry(t, true)
	r.PushImage(t, "life/app", "1")
	image := r.Ref("life/app", "1")
	c := harness.StartContainerd(t, harness.ContainerdOptions{Version: "2", Registry: r})
	g := harness.StartCriguard(t, c.Socket)

	st, err := os.Stat(g.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o660 {
		t.Errorf("listen socket %s has mode %v, want a socket with 0660", g.Socket, st.Mode())
	}

	dir := harness.TempDir(t, "life")
	pod, ctr := filepath.Join(dir, "pod.json"), filepath.Join(dir, "ctr.json")
	harness.WriteFile(t, pod, harness.HostNetworkPod("life", "default", dir))
	harness.WriteFile(t, ctr, harness.ContainerConfig("life", image))
	harness.MustCrictl(t, g.Endpoint(), "pull", image)
	id := strings.TrimSpace(harness.MustCrictl(t, g.Endpoint(), "run", ctr, pod))

	type result struct {
		out string
		err error
		d   time.Duration
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		out, err := harness.Crictl(t, g.Endpoint(), "exec", "-s", id, "sh", "-c", "sleep 3; echo drained-ok")
		done <- result{out, err, time.Since(start)}
	}()
	time.Sleep(time.Second) // the exec is in flight
	g.Stop(t)               // SIGTERM; fails the test if criguard does not exit within 10s
	res := <-done
	if res.err != nil || !strings.Contains(res.out, "drained-ok") {
		t.Errorf("an exec in flight at SIGTERM was cut: %q %v", res.out, res.err)
	}
	if code := g.ExitCode(0); code != 0 {
		t.Errorf("criguard exited %d after SIGTERM, want 0", code)
	}

	g.Restart(t)
	harness.MustCrictl(t, g.Endpoint(), "version")
	g.Kill(t)
	if _, err := os.Stat(g.Socket); err != nil {
		t.Fatalf("after SIGKILL the socket file should be left behind (that is the stale case): %v", err)
	}
	g.Restart(t)
	if out, err := harness.Crictl(t, g.Endpoint(), "ps", "--id", id, "-q"); err != nil || strings.TrimSpace(out) != id {
		t.Errorf("criguard restarted over a stale socket does not answer: %q %v", out, err)
	}
}
