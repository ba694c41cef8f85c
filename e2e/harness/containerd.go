package harness

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ContainerdOptions chooses which containerd StartContainerd runs and how.
type ContainerdOptions struct {
	// Version is "2" (v2.4.2 from the e2e cache; the default) or "1.6" (Debian's /usr/bin/containerd).
	Version string
	// Registry serves the pause image and is configured as a plain-HTTP host.
	// Nil starts a new one (with the referrers API).
	Registry *Registry
	// PauseImage overrides the sandbox image (default: Registry.PushPause).
	PauseImage string
	// ExtraConfig is TOML appended to the generated config.
	ExtraConfig string
}

// Containerd is a containerd daemon with its own root, state and sockets,
// running until the test ends.
type Containerd struct {
	// Socket is the path of its gRPC (and CRI) socket.
	Socket string
	// Root, State and Dir are its directories (Dir holds everything).
	Root, State, Dir string
	// Version is "2" or "1.6".
	Version string
	// Registry is the registry it pulls the pause image from.
	Registry *Registry
	// RuncRoot is runc's state directory for its containers.
	RuncRoot string

	proc   *process
	crictl string
}

// Endpoint is the CRI endpoint "unix://<Socket>".
func (c *Containerd) Endpoint() string { return "unix://" + c.Socket }

// Logs returns everything containerd logged so far (all restarts).
func (c *Containerd) Logs() string { return c.proc.logs() }

// StartContainerd writes a config and starts containerd, waiting until its
// socket answers. Cleanup removes every pod sandbox, stops containerd, kills
// any shim and container left, and unmounts what it mounted.
func StartContainerd(t T, opts ContainerdOptions) *Containerd {
	t.Helper()
	RequireRoot(t)
	if opts.Version == "" {
		opts.Version = "2"
	}
	if opts.Registry == nil {
		opts.Registry = StartRegistry(t, true)
	}
	if opts.PauseImage == "" {
		opts.PauseImage = opts.Registry.PushPause(t)
	}
	dir := TempDir(t, "ctrd")
	c := &Containerd{
		Dir:      dir,
		Socket:   filepath.Join(dir, "containerd.sock"),
		Root:     filepath.Join(dir, "root"),
		State:    filepath.Join(dir, "state"),
		RuncRoot: filepath.Join(dir, "runc"),
		Version:  opts.Version,
		Registry: opts.Registry,
		crictl:   Tool(t, "crictl"),
	}
	certs := filepath.Join(dir, "certs.d")
	hostDir := filepath.Join(certs, opts.Registry.Host)
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		t.Fatalf("harness: %v", err)
	}
	hosts := fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n",
		opts.Registry.Host, opts.Registry.Host)
	if err := os.WriteFile(filepath.Join(hostDir, "hosts.toml"), []byte(hosts), 0o644); err != nil {
		t.Fatalf("harness: %v", err)
	}

	var bin, cfg string
	env := os.Environ()
	switch opts.Version {
	case "2":
		bin = tool(t, "containerd", false)
		shim := tool(t, "containerd-shim-runc-v2", false)
		// The v2 shim must come before Debian's 1.6 shim in containerd's PATH.
		env = withPath(env, filepath.Dir(shim))
		cfg = containerd2Config(c, opts.PauseImage, certs)
	case "1.6":
		bin = "/usr/bin/containerd"
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("harness: Debian's containerd 1.6 is missing (%v); run `make tools`", err)
		}
		// Debian's own shim: keep /usr/bin first so the cache's v2 shim is not picked.
		env = withPath(env, "/usr/bin")
		cfg = containerd16Config(c, opts.PauseImage, certs)
	default:
		t.Fatalf("harness: containerd version %q: want \"2\" or \"1.6\"", opts.Version)
	}
	cfg += "\n" + opts.ExtraConfig + "\n"
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatalf("harness: %v", err)
	}
	c.proc = startProcess(t, "containerd "+opts.Version, filepath.Join(dir, "containerd.log"), env, bin, "--config", cfgPath)
	t.Cleanup(func() { c.teardown(t) })
	dumpOnFailure(t, c.proc, 60)
	waitSocket(t, c.proc, c.Socket, 60*time.Second)
	c.waitCRI(t)
	return c
}

// waitCRI waits until the CRI plugin answers (it starts after the socket).
func (c *Containerd) waitCRI(t T) {
	t.Helper()
	Eventually(t, 60*time.Second, "containerd's CRI plugin to answer", func() error {
		if c.proc.exited() {
			return fmt.Errorf("containerd exited: %v\n%s", c.proc.waitErr(), tail(c.proc.logs(), 30))
		}
		out, err := exec.Command(c.crictl, "--config", "/dev/null", "-r", c.Endpoint(), "--timeout", "5s", "version").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
}

// Stop stops containerd with SIGTERM (SIGKILL after 20s). Containers and their
// shims keep running, as on a real node.
func (c *Containerd) Stop(t T) {
	t.Helper()
	if !c.proc.stop(20 * time.Second) {
		t.Logf("harness: containerd ignored SIGTERM for 20s and was killed")
	}
}

// Restart stops containerd and starts it again on the same root, state and
// socket, waiting until CRI answers.
func (c *Containerd) Restart(t T) {
	t.Helper()
	c.Stop(t)
	if err := c.proc.restart(); err != nil {
		t.Fatalf("harness: restarting containerd: %v", err)
	}
	waitSocket(t, c.proc, c.Socket, 60*time.Second)
	c.waitCRI(t)
}

// teardown removes every pod through CRI (so shims exit and unmount cleanly),
// stops containerd, then kills whatever is left: shims started for this
// containerd (found by its unique socket path in their -address argument) and
// runc containers in its private runc root; finally it detaches mounts.
func (c *Containerd) teardown(t T) {
	if !c.proc.exited() {
		cmd := exec.Command(c.crictl, "--config", "/dev/null", "-r", c.Endpoint(), "--timeout", "30s", "rmp", "-a", "-f")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("harness: removing pods at teardown: %v: %s", err, out)
		}
	}
	c.proc.stop(15 * time.Second)
	if pids := pidsWithArg(c.Socket); len(pids) > 0 {
		socks := c.shimSockets(pids)
		if err := killPids(pids); err != nil {
			t.Logf("harness: killing shims: %v", err)
		}
		// A killed shim leaves its socket in the runtime's global /run/containerd/s.
		for _, s := range socks {
			if err := os.Remove(s); err != nil && !os.IsNotExist(err) {
				t.Logf("harness: %v", err)
			}
		}
	}
	runc, err := exec.LookPath("runc")
	if err == nil {
		for _, ns := range []string{"k8s.io", "default"} {
			root := filepath.Join(c.RuncRoot, ns)
			if _, err := os.Stat(root); err != nil {
				continue
			}
			out, _ := exec.Command(runc, "--root", root, "list", "-q").Output()
			for _, id := range strings.Fields(string(out)) {
				if out, err := exec.Command(runc, "--root", root, "delete", "--force", id).CombinedOutput(); err != nil {
					t.Logf("harness: runc delete %s: %v: %s", id, err, out)
				}
			}
		}
	}
	unmountUnder(t, c.Dir)
	// Unmounting a busy overlay can lag; a second pass catches stacked mounts.
	if m := mountsUnder(c.Dir); len(m) > 0 {
		time.Sleep(200 * time.Millisecond)
		unmountUnder(t, c.Dir)
	}
	if m := mountsUnder(c.Dir); len(m) > 0 {
		t.Logf("harness: mounts left under %s: %v", c.Dir, m)
	}
}

// shimSockets computes the sockets that the shims with these pids listen on:
// containerd names them /run/containerd/s/<sha256 of address/namespace/id>
// (pkg/shim.SocketAddress), plus a "debug" variant.
func (c *Containerd) shimSockets(pids []int) []string {
	var out []string
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		var ns, id string
		for i := 0; i+1 < len(args); i++ {
			switch args[i] {
			case "-namespace":
				ns = args[i+1]
			case "-id":
				id = args[i+1]
			}
		}
		if ns == "" || id == "" {
			continue
		}
		for _, p := range []string{filepath.Join(c.Socket, ns, id), filepath.Join(c.Socket, ns, id, "debug")} {
			out = append(out, fmt.Sprintf("/run/containerd/s/%x", sha256.Sum256([]byte(p))))
		}
	}
	return out
}

func withPath(env []string, first string) []string {
	out := make([]string, 0, len(env)+1)
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
			continue
		}
		out = append(out, e)
	}
	return append(out, "PATH="+first+":"+path)
}

func containerd2Config(c *Containerd, pause, certs string) string {
	return fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
temp = %[3]q
imports = []

[grpc]
  address = %[4]q

[ttrpc]
  address = %[5]q

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = %[6]q
    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = %[7]q

  [plugins.'io.containerd.cri.v1.runtime']
    restrict_oom_score_adj = true
    cdi_spec_dirs = []
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        Root = %[8]q
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = [%[9]q]
      conf_dir = %[10]q

  [plugins.'io.containerd.internal.v1.opt']
    path = %[11]q

  [plugins.'io.containerd.nri.v1.nri']
    disable = true

  [plugins.'io.containerd.image-verifier.v1.bindir']
    bin_dir = %[12]q
`, c.Root, c.State, filepath.Join(c.Dir, "tmp"), c.Socket, c.Socket+".ttrpc", pause, certs, c.RuncRoot,
		filepath.Join(c.Dir, "cni", "bin"), filepath.Join(c.Dir, "cni", "net.d"), filepath.Join(c.Dir, "opt"),
		filepath.Join(c.Dir, "verifiers"))
}

func containerd16Config(c *Containerd, pause, certs string) string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
imports = []

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %[5]q
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = %[6]q
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          Root = %[7]q
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %[8]q
      conf_dir = %[9]q

  [plugins."io.containerd.internal.v1.opt"]
    path = %[10]q
`, c.Root, c.State, c.Socket, c.Socket+".ttrpc", pause, certs, c.RuncRoot,
		filepath.Join(c.Dir, "cni", "bin"), filepath.Join(c.Dir, "cni", "net.d"), filepath.Join(c.Dir, "opt"))
}
