package unit

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// parseUnit reads a unit file into section -> key -> values (keys repeat).
func parseUnit(t *testing.T, b []byte) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	sec := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			sec = strings.Trim(line, "[]")
			if out[sec] == nil {
				out[sec] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || sec == "" || strings.HasSuffix(line, "\\") {
				t.Fatalf("unit line %d not key=value in a section: %q", n, line)
			}
			out[sec][k] = append(out[sec][k], v)
		}
	}
	return out
}

func TestUnit(t *testing.T) {
	u := parseUnit(t, Unit())
	one := func(sec, key string) string {
		t.Helper()
		v := u[sec][key]
		if len(v) != 1 {
			t.Fatalf("[%s] %s = %q, want exactly one", sec, key, v)
		}
		return v[0]
	}
	// What the installer and kubelet rely on.
	want := map[[2]string]string{
		{"Unit", "Before"}:                     "kubelet.service",
		{"Unit", "Requires"}:                   "containerd.service",
		{"Install", "WantedBy"}:                "kubelet.service",
		{"Service", "Restart"}:                 "on-failure",
		{"Service", "RuntimeDirectory"}:        "criguard",
		{"Service", "ProtectSystem"}:           "strict",
		{"Service", "ReadWritePaths"}:          RuntimeDir,
		{"Service", "NoNewPrivileges"}:         "yes",
		{"Service", "PrivateTmp"}:              "yes",
		{"Service", "RestrictAddressFamilies"}: "AF_UNIX AF_INET AF_INET6",
		{"Service", "SystemCallFilter"}:        "@system-service",
		{"Service", "ExecReload"}:              "/bin/kill -HUP $MAINPID",
	}
	for k, v := range want {
		if got := one(k[0], k[1]); got != v {
			t.Errorf("[%s] %s = %q, want %q", k[0], k[1], got, v)
		}
	}
	if !strings.Contains(one("Unit", "After"), "containerd.service") {
		t.Errorf("After lacks containerd.service")
	}
	exec := strings.Fields(one("Service", "ExecStart"))
	wantExec := []string{BinaryPath, "serve", "--listen", Endpoint, "--upstream", UpstreamEndpoint, "--policy", PolicyDir, "--metrics-address", MetricsAddress}
	if !reflect.DeepEqual(exec, wantExec) {
		t.Errorf("ExecStart = %q, want %q", exec, wantExec)
	}
	// The socket must live in the RuntimeDirectory systemd creates.
	if filepath.Dir(SocketPath) != "/run/"+one("Service", "RuntimeDirectory") {
		t.Errorf("socket %s outside RuntimeDirectory", SocketPath)
	}
	// /etc/criguard must stay readable: ProtectSystem=strict only makes it read-only.
	for _, k := range []string{"InaccessiblePaths", "TemporaryFileSystem", "PrivateNetwork", "RootDirectory"} {
		if _, ok := u["Service"][k]; ok {
			t.Errorf("%s would cut criguard off from its policy, containerd or the registry", k)
		}
	}
	if !bytes.Equal(Unit(), unit) {
		t.Error("Unit() differs from the embedded file")
	}
	onDisk, err := os.ReadFile("criguard.service")
	if err != nil || !bytes.Equal(onDisk, Unit()) {
		t.Errorf("embedded unit differs from criguard.service: %v", err)
	}
}

func TestRender(t *testing.T) {
	base := strings.Fields(parseUnit(t, Unit())["Service"]["ExecStart"][0])
	cases := []struct {
		name     string
		c        Config
		wantExec []string // nil: refused
		wantErr  string
	}{
		{"no trusted root: the embedded unit", Config{}, base, ""},
		{"trusted root", Config{TrustedRoot: TrustedRootPath}, append(append([]string(nil), base...), "--trusted-root", TrustedRootPath), ""},
		{"other clean path", Config{TrustedRoot: "/var/lib/sigstore/root-2+private_v1.json"}, append(append([]string(nil), base...), "--trusted-root", "/var/lib/sigstore/root-2+private_v1.json"), ""},
		{"relative", Config{TrustedRoot: "keys/trusted_root.json"}, nil, "not an absolute, clean path"},
		{"not clean", Config{TrustedRoot: "/etc/criguard/../trusted_root.json"}, nil, "not an absolute, clean path"},
		{"space", Config{TrustedRoot: "/etc/my keys/trusted_root.json"}, nil, `has ' '`},
		{"specifier", Config{TrustedRoot: "/etc/%H/trusted_root.json"}, nil, `has '%'`},
		{"variable", Config{TrustedRoot: "/etc/$KEYS/trusted_root.json"}, nil, `has '$'`},
		{"quote", Config{TrustedRoot: `/etc/a"b.json`}, nil, `has '"'`},
		{"backslash", Config{TrustedRoot: `/etc/a\b.json`}, nil, `has '\\'`},
		{"newline injecting a directive", Config{TrustedRoot: "/x.json\nExecStartPre=/bin/sh"}, nil, `has '\n'`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Render(c.c)
			if c.wantExec == nil {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), "--trusted-root") {
					t.Fatalf("Render(%+v) = %v, want an error with %q", c.c, err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			u := parseUnit(t, got)
			exec := u["Service"]["ExecStart"]
			if len(exec) != 1 || !reflect.DeepEqual(strings.Fields(exec[0]), c.wantExec) {
				t.Errorf("ExecStart = %q, want %q", exec, c.wantExec)
			}
			// Only ExecStart differs from the embedded unit.
			want := parseUnit(t, Unit())
			want["Service"]["ExecStart"] = exec
			if !reflect.DeepEqual(u, want) {
				t.Errorf("rendered unit differs beyond ExecStart:\n%s", got)
			}
			if c.c == (Config{}) && !bytes.Equal(got, Unit()) {
				t.Error("the zero Config does not render the embedded unit byte for byte")
			}
		})
	}
}

func TestTrustedRootOf(t *testing.T) {
	with, err := Render(Config{TrustedRoot: TrustedRootPath})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		unit []byte
		want string
	}{
		{"embedded", Unit(), ""},
		{"rendered with a root", with, TrustedRootPath},
		{"flag without a value", []byte("[Service]\nExecStart=/usr/local/bin/criguard serve --trusted-root\n"), ""},
		{"no ExecStart", []byte("[Service]\nExecStop=/bin/kill --trusted-root /x\n"), ""},
	} {
		if got := TrustedRootOf(c.unit); got != c.want {
			t.Errorf("%s: TrustedRootOf = %q, want %q", c.name, got, c.want)
		}
	}
}

func TestSystemctlCommand(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := (Systemctl{HostRoot: root}).Command(context.Background(), "restart", "kubelet.service"); err == nil || !strings.Contains(err.Error(), "no nsenter") {
		t.Fatalf("without nsenter on the host: %v", err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr/bin/nsenter"), []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd, err := (Systemctl{HostRoot: root}).Command(context.Background(), "restart", "kubelet.service")
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Path != "/usr/bin/nsenter" {
		t.Errorf("path = %q (must be the host's, resolved after chroot)", cmd.Path)
	}
	wantArgs := []string{"nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--", "systemctl", "restart", "kubelet.service"}
	if !reflect.DeepEqual(cmd.Args, wantArgs) {
		t.Errorf("args = %q", cmd.Args)
	}
	if cmd.SysProcAttr == nil || cmd.SysProcAttr.Chroot != root {
		t.Errorf("no chroot into the host root: %+v", cmd.SysProcAttr)
	}
	// On the host itself no chroot is needed.
	if _, err := os.Stat("/usr/bin/nsenter"); err == nil {
		cmd, err := (Systemctl{HostRoot: "/"}).Command(context.Background(), "daemon-reload")
		if err != nil {
			t.Fatal(err)
		}
		if cmd.SysProcAttr != nil {
			t.Errorf("chroot on the host: %+v", cmd.SysProcAttr)
		}
	}
}

func TestSystemctlRunsAndReports(t *testing.T) {
	// A stand-in for nsenter that behaves like `nsenter ... -- systemctl`:
	// it records its arguments, fails "restart" the way systemctl does, and
	// answers is-active with systemctl's exit codes.
	dir := t.TempDir()
	record := filepath.Join(dir, "args")
	script := `#!/bin/sh
shift 8 # --target 1 --mount --uts --ipc --net --pid --
echo "$@" >> ` + record + `
case "$2" in
restart) echo "Job for $3 failed because the control process exited with error code." >&2; exit 1 ;;
is-active) [ "$4" = criguard.service ] && exit 0; exit 3 ;;
esac
exit 0
`
	fake := filepath.Join(dir, "nsenter")
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s := Systemctl{HostRoot: "/", Nsenter: fake}
	ctx := context.Background()
	if err := s.DaemonReload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Enable(ctx, UnitName); err != nil {
		t.Fatal(err)
	}
	err := s.Restart(ctx, KubeletUnit)
	if err == nil || !strings.Contains(err.Error(), "Job for kubelet.service failed") || !strings.Contains(err.Error(), "systemctl restart kubelet.service") {
		t.Errorf("failed restart: %v", err)
	}
	if on, err := s.IsActive(ctx, UnitName); err != nil || !on {
		t.Errorf("IsActive(criguard) = %v, %v", on, err)
	}
	if on, err := s.IsActive(ctx, KubeletUnit); err != nil || on {
		t.Errorf("IsActive(kubelet) = %v, %v; exit 3 means inactive", on, err)
	}
	got, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	want := "systemctl daemon-reload\nsystemctl enable criguard.service\nsystemctl restart kubelet.service\n" +
		"systemctl is-active --quiet criguard.service\nsystemctl is-active --quiet kubelet.service\n"
	if string(got) != want {
		t.Errorf("systemctl calls:\n%s\nwant:\n%s", got, want)
	}
}

// TestUnitVerifies runs systemd's own checker on the unit in a scratch root
// holding what the unit names (the binary, /bin/kill, containerd and kubelet
// units, systemd's targets): an unknown or misspelled directive, a bad value or
// a missing executable is a failure.
func TestUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze not found (apt-get install systemd): %v", err)
	}
	root := t.TempDir()
	write := func(p string, b []byte, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), b, mode); err != nil {
			t.Fatal(err)
		}
	}
	write(BinaryPath, []byte("#!/bin/sh\n"), 0o755)
	write("/bin/kill", []byte("#!/bin/sh\n"), 0o755)
	for _, u := range []string{"containerd.service", KubeletUnit} {
		write("/etc/systemd/system/"+u, []byte("[Unit]\nDescription="+u+"\n[Service]\nExecStart=/bin/kill\n"), 0o644)
	}
	targets, _ := filepath.Glob("/lib/systemd/system/*.target")
	if len(targets) == 0 {
		t.Fatal("no systemd targets in /lib/systemd/system to verify against")
	}
	for _, tg := range targets {
		b, err := os.ReadFile(tg)
		if err != nil {
			t.Fatal(err)
		}
		write("/lib/systemd/system/"+filepath.Base(tg), b, 0o644)
	}
	for _, c := range []Config{{}, {TrustedRoot: TrustedRootPath}} {
		u, err := Render(c)
		if err != nil {
			t.Fatal(err)
		}
		write(UnitPath, u, 0o644)
		cmd := exec.Command(analyze, "verify", "--root="+root, UnitPath)
		cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=info")
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Fatalf("systemd-analyze verify of the unit for %+v: %v\n%s", c, err, out)
		}
	}
}
