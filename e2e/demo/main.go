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
