//go:build e2e

// Command demo shows criguard on this machine: it starts a local registry, a
// real containerd 2.x and criguard in front of it, then pulls an image and runs
// a pod through criguard with crictl, printing every step, and tears it all
// down. Root required (`make demo`). With -keep it waits for Ctrl-C before
// tearing down, so criguard's socket can be tried by hand.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/criguard/criguard/e2e/harness"
)

// demo is what every section of the demo works with.
type demo struct {
	s *harness.Session
	r *harness.Registry
	c *harness.Containerd
	g *harness.Criguard
}

func main() {
	keep := flag.Bool("keep", false, "keep everything running until Ctrl-C")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s := harness.Standalone(ctx, "criguard-demo")
	harness.RequireRoot(s)

	say("starting a local registry, containerd 2.x and criguard in front of it")
	d := &demo{s: s, r: harness.StartRegistry(s, true)}
	d.c = harness.StartContainerd(s, harness.ContainerdOptions{Version: "2", Registry: d.r})
	d.g = harness.StartCriguard(s, d.c.Socket)
	fmt.Printf("  registry    http://%s\n  containerd  %s\n  criguard    %s (forwarding to containerd)\n",
		d.r.Host, d.c.Endpoint(), d.g.Endpoint())

	d.proxySection()
	d.enforceSection()

	if *keep {
		say("running; try: crictl -r %s ps   (Ctrl-C tears everything down)", d.g.Endpoint())
		<-ctx.Done()
	}
	say("tearing down (pods, containerd, shims, mounts, criguard, registry)")
	s.Close()
	say("done")
}

// proxySection pulls and runs a pod through criguard, as kubelet would.
func (d *demo) proxySection() {
	say("pushing a busybox-static image to the registry")
	dgst := d.r.PushImage(d.s, "demo/hello", "1.0")
	image := d.r.Ref("demo/hello", "1.0")
	fmt.Printf("  %s  (%s)\n", image, dgst)

	ep := d.g.Endpoint()
	crictl(d.s, ep, "version")
	crictl(d.s, ep, "pull", image)
	crictl(d.s, ep, "images")

	dir := harness.TempDir(d.s, "demo")
	pod := filepath.Join(dir, "pod.json")
	ctr := filepath.Join(dir, "ctr.json")
	harness.WriteFile(d.s, pod, harness.HostNetworkPod("hello", "default", filepath.Join(dir, "logs")))
	harness.WriteFile(d.s, ctr, harness.ContainerConfig("hello", image, "sh", "-c", "echo hello from a pod started through criguard; exec sleep 3600"))
	podID := crictl(d.s, ep, "runp", pod)
	ctrID := crictl(d.s, ep, "create", podID, ctr, pod)
	crictl(d.s, ep, "start", ctrID)
	crictl(d.s, ep, "ps")
	crictl(d.s, ep, "exec", "-s", ctrID, "uname", "-a")
	harness.Eventually(d.s, 10*time.Second, "the container's first log line", func() error {
		out, err := harness.Crictl(d.s, ep, "logs", ctrID)
		if err == nil && strings.TrimSpace(out) == "" {
			return fmt.Errorf("no log line yet")
		}
		return err
	})
	crictl(d.s, ep, "logs", ctrID)
	crictl(d.s, ep, "rmp", "-f", podID)
	say("criguard's log:")
	fmt.Println(indent(d.g.Logs()))
}

// enforceSection starts a second criguard that enforces a policy, then pulls a
// cosign-signed image (allowed) and an unsigned one (refused) through it.
func (d *demo) enforceSection() {
	say("signing an image with the real cosign CLI (fresh key pair, no transparency log)")
	cs := harness.Cosign(d.s)
	keyDir := harness.TempDir(d.s, "demokey")
	key, pub := cs.GenerateKeyPair(d.s, keyDir)
	signedDg := d.r.PushImage(d.s, "team/signed", "1.0")
	cs.Sign(d.s, key, d.r.Ref("team/signed", signedDg), false)
	unsignedDg := d.r.PushImage(d.s, "team/unsigned", "1.0")
	fmt.Printf("  %s  signed   (%s)\n  %s  unsigned (%s)\n",
		d.r.Ref("team/signed", "1.0"), signedDg, d.r.Ref("team/unsigned", "1.0"), unsignedDg)

	dir := harness.TempDir(d.s, "demopol")
	pol := filepath.Join(dir, "policy.yaml")
	harness.WriteFile(d.s, pol, fmt.Sprintf(`apiVersion: criguard.dev/v1alpha1
kind: ImagePolicy
metadata: {name: demo}
spec:
  mode: Enforce
  unmatchedImages: Deny
  failurePolicy: Fail
  rules:
  - name: team-images
    images: ["%s/team/*"]
    action: Verify
    attestors:
      entries:
      - key: {file: %s}
`, d.r.Host, pub))
	say("starting criguard with a policy: images under %s/team/ need a signature from the demo key", d.r.Host)
	fmt.Println(indent(readFile(d.s, pol)))
	metrics := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(d.s))
	g := harness.StartCriguard(d.s, d.c.Socket, "--policy", pol, "--metrics-address", metrics)
	ep := g.Endpoint()

	crictl(d.s, ep, "pull", d.r.Ref("team/signed", "1.0"))
	refused(d.s, ep, "pull", d.r.Ref("team/unsigned", "1.0"))
	say("containerd holds the signed image under its tag, and nothing of the unsigned one")
	crictl(d.s, d.c.Endpoint(), "images")

	say("the unsigned image pulled straight into containerd, behind criguard's back, still cannot run through it")
	crictl(d.s, d.c.Endpoint(), "pull", d.r.Ref("team/unsigned", "1.0"))
	dir2 := harness.TempDir(d.s, "demopod")
	pod := filepath.Join(dir2, "pod.json")
	harness.WriteFile(d.s, pod, harness.HostNetworkPod("enforced", "default", ""))
	podID := crictl(d.s, ep, "runp", pod)
	for _, name := range []string{"signed", "unsigned"} {
		ctr := filepath.Join(dir2, name+".json")
		harness.WriteFile(d.s, ctr, harness.ContainerConfig(name, d.r.Ref("team/"+name, "1.0")))
		if name == "signed" {
			crictl(d.s, ep, "create", podID, ctr, pod)
		} else {
			refused(d.s, ep, "create", podID, ctr, pod)
		}
	}
	crictl(d.s, ep, "rmp", "-f", podID)

	say("criguard's decisions:")
	for _, line := range strings.Split(g.Logs(), "\n") {
		if strings.Contains(line, "image decision") {
			fmt.Println("  " + line)
		}
	}
	say("criguard's metrics (http://%s/metrics):", metrics)
	fmt.Println(indent(grepLines(httpBody(d.s, "http://"+metrics+"/metrics"), "criguard_decisions_total{")))
}

// refused runs a crictl call that criguard must refuse and prints the refusal.
func refused(s *harness.Session, ep string, args ...string) {
	fmt.Printf("\n$ crictl %s\n", strings.Join(args, " "))
	out, err := harness.Crictl(s, ep, args...)
	if err == nil {
		s.Fatalf("criguard allowed what it must refuse: %s", out)
	}
	fmt.Println(indent("refused: " + err.Error()))
}

func readFile(s *harness.Session, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		s.Fatalf("%v", err)
	}
	return string(b)
}

func httpBody(s *harness.Session, url string) string {
	resp, err := http.Get(url)
	if err != nil {
		s.Fatalf("%v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		s.Fatalf("%v", err)
	}
	return string(b)
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func say(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

// crictl runs one crictl call, prints it and its answer, and returns its
// trimmed output; a failure ends the demo (after teardown).
func crictl(s *harness.Session, ep string, args ...string) string {
	fmt.Printf("\n$ crictl %s\n", strings.Join(args, " "))
	out, err := harness.Crictl(s, ep, args...)
	if err != nil {
		s.Fatalf("%v", err)
	}
	fmt.Println(indent(out))
	return strings.TrimSpace(out)
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "  (no output)"
	}
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}
