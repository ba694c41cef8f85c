//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criguard/criguard/e2e/harness"
)

// TestHostileRegistries: a registry that answers one byte every 2 seconds,
// one that never answers, one that redirects forever, one that streams a
// 1 GiB manifest, one whose signature listings are 1 GiB, one whose response
// headers are 1 GiB, two whose image resolves but whose signature lookups
// never answer or dribble, and images carrying 10,000 and 1,000 signatures. Each is pulled through criguard under
// five tags (five digests), all 50 at once, under a policy with a 30 s
// verification timeout and failurePolicy Fail.
//
// Each pull ends in a SignatureValidationFailed denial (never a hang: the
// client's own deadline is 3 minutes), the 1 GiB bodies are cut after about
// the 1 MiB read limit, the many-signature images cost a bounded number of
// requests, criguard's peak RSS (VmHWM) stays under 200 MiB, nothing of the
// hostile registry reaches containerd, and signed pulls from the good registry
// proceed while the hostile ones are still pending.
func TestHostileRegistries(t *testing.T) {
	e := newEnforceEnv(t)
	h := harness.StartHostileRegistry(t)
	pol := filepath.Join(e.dir, "policy.yaml")
	writePolicy(t, pol, faultPolicy("Fail", "30s", e.pub, e.r.Host, h.Host))
	g, base := e.guard(t, pol)
	pid := criguardPid(t, g.Socket)
	conn := harness.DialCRI(t, g.Socket)
	hwm0, rss0 := faultMemory(t, pid)

	// Signed images for the good registry, ready before the hostile pulls start.
	var good []string
	for i := range 3 {
		ref, _ := e.signed(t, fmt.Sprintf("meanwhile/app%d", i), i == 1)
		good = append(good, ref)
	}

	repos := []string{
		harness.HostileSlow, harness.HostileHang, harness.HostileRedirect,
		harness.HostileHugeManifest, harness.HostileHugeSignature,
		harness.HostileHangSignature, harness.HostileSlowSignature, harness.HostileHugeHeaders,
		harness.HostileSignatures(10000), harness.HostileSignatures(1000),
	}
	// Each repository under several tags, each tag its own digest: that many
	// verifications at once, none shared.
	const tags = 5
	type verdict struct {
		repo string
		err  error
		took time.Duration
	}
	var mu sync.Mutex
	pending := map[string]int{}
	results := make(chan verdict, len(repos)*tags)
	for _, repo := range repos {
		for i := range tags {
			pending[repo]++
			go func() {
				start := time.Now()
				_, err := faultPull(t, conn, h.Ref(repo, fmt.Sprintf("v%d", i)), nil)
				mu.Lock()
				pending[repo]--
				if pending[repo] == 0 {
					delete(pending, repo)
				}
				mu.Unlock()
				results <- verdict{repo, err, time.Since(start)}
			}()
		}
	}

	// Other pulls proceed meanwhile.
	for _, ref := range good {
		start := time.Now()
		if _, err := faultPull(t, conn, ref, nil); err != nil {
			t.Errorf("signed pull %s while hostile verifications run: %v", ref, err)
			continue
		}
		mu.Lock()
		var still []string
		for r := range pending {
			still = append(still, r)
		}
		mu.Unlock()
		slices.Sort(still)
		t.Logf("signed pull %s allowed in %s while verifications of %d hostile repositories were pending %v",
			ref, time.Since(start).Round(time.Millisecond), len(still), still)
	}

	slowest := map[string]time.Duration{}
	reason := map[string]string{}
	for range len(repos) * tags {
		v := <-results
		if !faultDenied(v.err) {
			t.Errorf("%s: %v after %s; want a SignatureValidationFailed denial", v.repo, v.err, v.took)
			continue
		}
		slowest[v.repo] = max(slowest[v.repo], v.took)
		msg := status.Convert(v.err).Message()
		if len(msg) > 400 {
			msg = msg[:400] + "..."
		}
		reason[v.repo] = msg
	}
	for _, repo := range repos {
		t.Logf("%-24s %d pulls denied, slowest after %6s: %s", repo, tags, slowest[repo].Round(time.Millisecond), reason[repo])
	}

	for _, repo := range []string{harness.HostileHugeManifest, harness.HostileHugeSignature, harness.HostileHugeHeaders} {
		sent := h.BytesSent(repo)
		t.Logf("%s: %d bytes reached the wire (of 1 GiB offered)", repo, sent)
		if sent > tags*64<<20 {
			t.Errorf("%s: criguard read on to %d bytes in %d verifications; the read limit is 1 MiB", repo, sent, tags)
		}
	}
	for _, n := range []int{10000, 1000} {
		repo := harness.HostileSignatures(n)
		req := h.Requests(repo)
		t.Logf("%s: %d requests, %d bytes for %d verifications of %d signatures each", repo, req, h.BytesSent(repo), tags, n)
		if req > 100*tags {
			t.Errorf("%s: %d registry requests for %d verifications: the work is not bounded", repo, req, tags)
		}
	}
	hwm, rss := faultMemory(t, pid)
	t.Logf("criguard memory: VmHWM %d KiB (before the hostile pulls %d KiB), VmRSS %d KiB (before %d KiB)", hwm, hwm0, rss, rss0)
	if hwm > 200<<10 {
		t.Errorf("criguard's peak RSS is %d KiB, over the 200 MiB bound", hwm)
	}
	if e.holds(t, h.Host+"/hostile") {
		t.Error("an image of the hostile registry reached containerd")
	}
	if got := metric(t, base, `criguard_decisions_total{operation="PullImage",result="deny"}`); got < float64(len(repos)*tags) {
		t.Errorf("denied pulls counted %v, want at least %d", got, len(repos)*tags)
	}
	if g.Exited() || criguardPid(t, g.Socket) != pid {
		t.Fatal("criguard exited or restarted")
	}
	// The hostile verdicts are denials, cached at most 30 s; a second round is
	// denied the same way (from the cache or anew), again without a hang.
	_, err := faultPull(t, conn, h.Ref(harness.HostileRedirect, "v0"), nil)
	if !faultDenied(err) {
		t.Errorf("second pull from the redirect loop: %v", err)
	}
	if !strings.Contains(g.Logs(), `"decision":"deny"`) {
		t.Error("criguard logged no denial")
	}
}

// TestHostileHugeHeadersConcurrent: 30 verifications at once against a
// registry whose responses carry endless headers (30 pods created at once
// from its images, say). Each must be denied, and criguard's peak RSS must
// stay under 200 MiB: the header read has to be bounded far below Go's
// default of 10 MiB per response, which 30 concurrent reads turn into ~380 MiB.
func TestHostileHugeHeadersConcurrent(t *testing.T) {
	e := newEnforceEnv(t)
	h := harness.StartHostileRegistry(t)
	pol := filepath.Join(e.dir, "policy.yaml")
	writePolicy(t, pol, faultPolicy("Fail", "30s", e.pub, h.Host))
	g, _ := e.guard(t, pol)
	pid := criguardPid(t, g.Socket)
	conn := harness.DialCRI(t, g.Socket)

	const n = 30
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := faultPull(t, conn, h.Ref(harness.HostileHugeHeaders, fmt.Sprintf("v%d", i)), nil)
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; !faultDenied(err) {
			t.Errorf("pull from the huge-headers registry: %v; want a denial", err)
		}
	}
	hwm, rss := faultMemory(t, pid)
	t.Logf("%d concurrent huge-header verifications: VmHWM %d KiB, VmRSS %d KiB, %d bytes sent", n, hwm, rss, h.BytesSent(harness.HostileHugeHeaders))
	if hwm > 200<<10 {
		t.Errorf("criguard's peak RSS is %d KiB, over the 200 MiB bound: response headers are read unbounded", hwm)
	}
}

// BenchmarkHostileConcurrentMemory reports criguard's peak RSS (VmHWM, MiB)
// after CRIGUARD_BENCH_HOSTILE_N (default 100) concurrent verifications
// against one kind of hostile repository, a fresh criguard process per kind:
//
//	go test -tags e2e -run '^$' -bench HostileConcurrentMemory -benchtime 1x ./e2e/
func BenchmarkHostileConcurrentMemory(b *testing.B) {
	e := newEnforceEnv(b)
	h := harness.StartHostileRegistry(b)
	pol := filepath.Join(e.dir, "policy.yaml")
	writePolicy(b, pol, faultPolicy("Fail", "30s", e.pub, h.Host))
	g, _ := e.guard(b, pol)
	n := benchEnvInt("CRIGUARD_BENCH_HOSTILE_N", 100)
	for b.Loop() {
		for _, repo := range []string{harness.HostileHugeManifest, harness.HostileHugeSignature, harness.HostileHugeHeaders,
			harness.HostileSignatures(10000), harness.HostileSignatures(1000)} {
			g.Restart(b)
			pid := criguardPidTB(b, g.Socket)
			conn := harness.DialCRI(b, g.Socket)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, _ = faultPull(b, conn, h.Ref(repo, fmt.Sprintf("b%d", i)), nil)
				}()
			}
			wg.Wait()
			hwm, _ := faultMemory(b, pid)
			b.ReportMetric(float64(hwm)/1024, strings.TrimPrefix(repo, "hostile/")+"-peak-MiB")
		}
	}
}

// criguardPidTB is criguardPid for benchmarks.
func criguardPidTB(tb testing.TB, socket string) int {
	tb.Helper()
	var pid int
	harness.Eventually(tb, 10*time.Second, "criguard's pid", func() error {
		entries, _ := os.ReadDir("/proc")
		for _, d := range entries {
			b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
			if err != nil {
				continue
			}
			args := strings.Split(string(b), "\x00")
			if len(args) > 1 && args[1] == "serve" && strings.Contains(string(b), socket) {
				pid, _ = strconv.Atoi(d.Name())
				return nil
			}
		}
		return fmt.Errorf("no criguard serving %s", socket)
	})
	return pid
}

// TestHostileSplitView: the registry shows criguard one image for a tag (a
// signed one) and containerd another (unsigned), telling them apart by
// User-Agent. criguard pulls the digest it verified, so containerd never asks
// the registry about the tag, and records the tag for the signed digest. The
// control afterwards, straight at containerd, shows the registry really lies.
func TestHostileSplitView(t *testing.T) {
	e := newEnforceEnv(t)
	front := harness.StartFrontRegistry(t, e.r)
	front.AddTo(t, e.c)
	pol := filepath.Join(e.dir, "policy.yaml")
	writePolicy(t, pol, faultPolicy("Fail", "20s", e.pub, front.Host))
	g, _ := e.guard(t, pol)
	conn := harness.DialCRI(t, g.Socket)

	const repo = "split/app"
	signedDg := e.r.PushImage(t, repo, "1.0")
	e.cs.Sign(t, e.key, front.Ref(repo, signedDg), false)
	evilDg := e.r.PushImage(t, repo, "evil")
	lied := front.SplitView(repo, "1.0", "containerd", evilDg)
	ref := front.Ref(repo, "1.0")

	if _, err := faultPull(t, conn, ref, nil); err != nil {
		t.Fatalf("signed pull through criguard: %v", err)
	}
	if err := e.hasTag(t, ref, signedDg); err != nil {
		t.Errorf("through criguard: %v", err)
	}
	if n := lied(); n != 0 {
		t.Errorf("containerd asked the registry about the tag %d times during criguard's pull", n)
	}
	harness.MustCrictl(t, e.c.Endpoint(), "pull", ref) // the control, around criguard
	if lied() == 0 {
		t.Fatal("the registry never showed containerd the other image: the test proves nothing")
	}
	if err := e.hasTag(t, ref, evilDg); err != nil {
		t.Errorf("control: containerd pulling the tag itself did not get the other image: %v", err)
	}
	t.Logf("through criguard the tag named %s (signed); straight at containerd, %s (the registry's other view)", signedDg, evilDg)
}

// faultCPU returns the CPU time (user + system) pid has used.
func faultCPU(t testing.TB, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which may hold spaces) start after ") ".
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// TestHostileAuthChallengeFlood: every request is answered 401, and the
// registry's /v2/ (the ping every client makes before authenticating) answers
// 401 with an endless body, which clients drain to reuse the connection. The
// verification is denied within its timeout, and criguard reads a bounded
// amount of that body rather than draining the flood until the deadline.
func TestHostileAuthChallengeFlood(t *testing.T) {
	e := newEnforceEnv(t)
	h := harness.StartHostileRegistry(t)
	h.PingFlood.Store(true)
	pol := filepath.Join(e.dir, "policy.yaml")
	writePolicy(t, pol, faultPolicy("Fail", "10s", e.pub, h.Host))
	g, _ := e.guard(t, pol)
	pid := criguardPid(t, g.Socket)
	conn := harness.DialCRI(t, g.Socket)

	cpu0 := faultCPU(t, pid)
	start := time.Now()
	_, err := faultPull(t, conn, h.Ref(harness.HostileAuthFlood, "v0"), &runtimeapi.AuthConfig{Username: "u", Password: "p"})
	took := time.Since(start)
	cpu := faultCPU(t, pid) - cpu0
	if !faultDenied(err) {
		t.Fatalf("pull from the auth-flood registry: %v; want a denial", err)
	}
	drained := h.BytesSent("/v2/")
	hwm, _ := faultMemory(t, pid)
	t.Logf("denied after %s, criguard CPU %s, %d ping requests, %d bytes of ping body sent, VmHWM %d KiB: %s",
		took.Round(time.Millisecond), cpu, h.Requests("/v2/"), drained, hwm, status.Convert(err).Message())
	if drained > 64<<20 {
		t.Errorf("criguard drained %d bytes of the registry's ping answer: reads of registry answers must be bounded", drained)
	}
	if hwm > 200<<10 {
		t.Errorf("criguard's peak RSS is %d KiB", hwm)
	}
}
