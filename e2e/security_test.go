//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criguard/criguard/criproxy/enforce"
	"github.com/criguard/criguard/criproxy/forward"
	"github.com/criguard/criguard/e2e/harness"
)

// securityProcess runs criguard serve with only --listen and --upstream (every
// other flag at its default) in a network namespace of its own, so its
// default metrics port cannot clash with another criguard and its
// /proc/<pid>/net/tcp lists its own listeners only.
func securityProcess(t *testing.T, listen, upstream string) (pid int, logPath string) {
	t.Helper()
	bin := harness.CriguardBinary(t)
	logPath = filepath.Join(filepath.Dir(listen), "criguard.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--net", "--", "/bin/sh", "-c", `ip link set lo up && exec "$0" "$@"`,
		bin, "serve", "--listen", "unix://"+listen, "--upstream", "unix://"+upstream)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting criguard in its own network namespace: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	harness.Eventually(t, 30*time.Second, "criguard's socket", func() error {
		select {
		case <-done:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("criguard exited:\n%s", b)
		default:
		}
		_, err := os.Stat(listen)
		return err
	})
	return cmd.Process.Pid, logPath
}

// securityListeners returns the local addresses (hex ip:port as in
// /proc/net/tcp) of every listening TCP socket in pid's network namespace.
func securityListeners(t *testing.T, pid int) []string {
	t.Helper()
	var out []string
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fl := strings.Fields(line)
			if len(fl) > 3 && fl[3] == "0A" { // TCP_LISTEN
				out = append(out, f+" "+fl[1])
			}
		}
	}
	return out
}

// TestSecuritySocketAndMetrics: criguard's CRI socket is a 0660 socket owned
// by root:root, so an unprivileged user (uid/gid 65534, no groups) cannot
// connect, even with the directory open to everyone; a user in group root can
// (the check is the socket's mode, not something else in the way). With every
// flag at its default, the metrics endpoint listens on 127.0.0.1:9464 only.
func TestSecuritySocketAndMetrics(t *testing.T) {
	harness.RequireRoot(t)
	r := harness.StartRegistry(t, true)
	c := harness.StartContainerd(t, harness.ContainerdOptions{Registry: r})
	dir := harness.TempDir(t, "sec")
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "criguard.sock")
	pid, logPath := securityProcess(t, sock, c.Socket)

	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o660 || st.Uid != 0 || st.Gid != 0 {
		t.Errorf("listen socket: mode %v uid %d gid %d; want a socket 0660 root:root", fi.Mode(), st.Uid, st.Gid)
	}

	crictl := harness.Tool(t, "crictl")
	as := func(uid, gid string) (string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "setpriv", "--reuid", uid, "--regid", gid, "--clear-groups",
			crictl, "-r", "unix://"+sock, "--timeout", "5s", "version").CombinedOutput()
		return string(out), err
	}
	out, err := as("65534", "65534")
	if err == nil {
		t.Errorf("uid 65534 (nobody) talked CRI through criguard's socket:\n%s", out)
	} else if !strings.Contains(strings.ToLower(out), "permission denied") {
		t.Errorf("uid 65534 failed for another reason than permission: %v\n%s", err, out)
	} else {
		t.Logf("uid 65534 refused: %s", strings.TrimSpace(lastLine(out)))
	}
	if out, err := as("65534", "0"); err != nil {
		t.Errorf("control: uid 65534 in group root could not connect (the test would prove nothing): %v\n%s", err, out)
	}

	// Metrics: the default address is loopback, and that is all criguard listens on.
	_, help, _ := harness.RunCriguard(t, "serve", "--help")
	if !strings.Contains(help, `-metrics-address`) || !strings.Contains(help, `(default "127.0.0.1:9464")`) {
		t.Errorf("serve --help does not show the loopback default for --metrics-address:\n%s", help)
	}
	var ls []string
	harness.Eventually(t, 30*time.Second, "criguard's metrics listener", func() error {
		ls = securityListeners(t, pid)
		if len(ls) == 0 {
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("no TCP listener yet; log:\n%s", b)
		}
		return nil
	})
	const loopback9464 = "tcp 0100007F:24F8"
	if len(ls) != 1 || ls[0] != loopback9464 {
		t.Errorf("criguard listens on %v; want only %s (127.0.0.1:9464)", ls, loopback9464)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	health, err := exec.CommandContext(ctx, "nsenter", "-t", fmt.Sprint(pid), "-n",
		"/bin/busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:9464/healthz").CombinedOutput()
	if err != nil || !strings.Contains(string(health), "ok") {
		t.Errorf("/healthz on 127.0.0.1:9464 in criguard's namespace: %v %s", err, health)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		return s[i+1:]
	}
	return s
}

func securitySecret(prefix string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// TestSecurityCredentialsNeverLogged: a registry that requires credentials
// sits in front of the images, first with Basic auth (user:password, or a
// Bearer token), then with the token flow most registries use (a Bearer
// challenge whose realm issues a token for user:password or for an identity
// token). criguard runs at debug log level; kubelet-like pulls carry the
// password, the docker-config "auth" form, a registry token, an identity
// token and a wrong password; a container is created from an image pulled
// around criguard, so criguard verifies it with the credentials it remembered.
// No secret (password, wrong password, tokens, issued token, base64
// user:password) appears in criguard's log, in /metrics, or in any error
// criguard returned (which kubelet would log).
func TestSecurityCredentialsNeverLogged(t *testing.T) {
	e := newEnforceEnv(t)
	front := harness.StartFrontRegistry(t, e.r)
	front.AddTo(t, e.c)
	pol := filepath.Join(e.dir, "policy.yaml")
	writePolicy(t, pol, faultPolicy("Fail", "20s", e.pub, front.Host))
	g, base := e.guard(t, pol, "--log-level", "debug")
	conn := harness.DialCRI(t, g.Socket)
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	const user = "e2e-user"
	secrets := map[string]string{}
	var returned []string
	for _, mode := range []string{"basic", "token"} {
		front.RequireAuth("", "", "") // cosign signs without credentials
		sign := func(repo string) string {
			dg := e.r.PushImage(t, mode+"/"+repo, "1.0")
			e.cs.Sign(t, e.key, front.Ref(mode+"/"+repo, dg), false)
			return front.Ref(mode+"/"+repo, "1.0")
		}
		withPassword, withAuth, withToken, withIdentity := sign("password"), sign("auth"), sign("token"), sign("identity")
		sideloaded, signedWrong := sign("sideloaded"), sign("wrong")
		unsigned := front.Ref(mode+"/unsigned", "1.0")
		e.r.PushImage(t, mode+"/unsigned", "1.0")

		password, wrong, token, identity := securitySecret("pw-"), securitySecret("wrong-"), securitySecret("tok-"), securitySecret("idt-")
		authField := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
		for what, v := range map[string]string{"password": password, "wrong password": wrong, "registry token": token,
			"identity token": identity, "auth field": authField,
			"wrong auth field": base64.StdEncoding.EncodeToString([]byte(user + ":" + wrong))} {
			secrets[mode+" "+what] = v
		}
		if mode == "basic" {
			front.RequireAuth(user, password, token)
		} else {
			token = front.RequireTokenAuth(user, password, identity)
			secrets[mode+" issued token"] = token
		}
		challenged := front.AuthFailures()

		pull := func(ref string, auth *runtimeapi.AuthConfig, wantAllowed bool) {
			t.Helper()
			_, err := faultPull(t, conn, ref, auth)
			if err != nil {
				returned = append(returned, err.Error())
			}
			switch {
			case wantAllowed && err != nil:
				t.Errorf("%s: pull %s with credentials: %v", mode, ref, err)
			case !wantAllowed && !faultDenied(err):
				t.Errorf("%s: pull %s: %v; want a denial", mode, ref, err)
			}
		}
		pull(withPassword, &runtimeapi.AuthConfig{Username: user, Password: password}, true)
		pull(withAuth, &runtimeapi.AuthConfig{Auth: authField}, true)
		pull(unsigned, &runtimeapi.AuthConfig{Username: user, Password: password}, false)
		// A wrong password: the tag cannot even be resolved (the verdict cache
		// holds digests, and the registry refuses the HEAD), so both are refused.
		pull(withPassword, &runtimeapi.AuthConfig{Username: user, Password: wrong}, false)
		pull(signedWrong, &runtimeapi.AuthConfig{Username: user, Password: wrong}, false)
		if mode == "token" {
			// containerd uses an identity token as the refresh token, as criguard does.
			pull(withIdentity, &runtimeapi.AuthConfig{IdentityToken: identity}, true)
		}
		// containerd's CRI does not use registry_token, so its pull may fail
		// after criguard verified with the token; either way nothing may leak.
		_, err := faultPull(t, conn, withToken, &runtimeapi.AuthConfig{RegistryToken: token})
		if faultDenied(err) {
			t.Errorf("%s: pull with a registry token refused by criguard: %v", mode, err)
		} else if err != nil {
			returned = append(returned, err.Error())
			t.Logf("%s: pull with a registry token: criguard allowed, containerd said: %v", mode, err)
		}

		// A container from an image pulled around criguard: criguard verifies
		// it with the credentials last sent for this registry by a pull of the
		// same namespace that went through, and never with another
		// namespace's (issue 11: one namespace's pull secret decided another's
		// pods).
		pod := benchPodConfig("creds-"+mode, "uid-creds-"+mode)
		pod.Metadata.Namespace = "default"
		other := benchPodConfig("creds-other-"+mode, "uid-creds-other-"+mode)
		other.Metadata.Namespace = "other"
		if _, err := runtimeapi.NewImageServiceClient(conn).PullImage(ctx, &runtimeapi.PullImageRequest{
			Image: &runtimeapi.ImageSpec{Image: withPassword}, SandboxConfig: pod,
			Auth: &runtimeapi.AuthConfig{Username: user, Password: password}}); err != nil {
			t.Fatalf("%s: pull in namespace default with good credentials: %v", mode, err)
		}
		// Namespace other sends a wrong secret: refused, and not remembered.
		if _, err := runtimeapi.NewImageServiceClient(conn).PullImage(ctx, &runtimeapi.PullImageRequest{
			Image: &runtimeapi.ImageSpec{Image: signedWrong}, SandboxConfig: other,
			Auth: &runtimeapi.AuthConfig{Username: user, Password: wrong}}); !faultDenied(err) {
			t.Errorf("%s: pull in namespace other with a wrong secret: %v; want a denial", mode, err)
		} else {
			returned = append(returned, err.Error())
		}
		harness.MustCrictl(t, e.c.Endpoint(), "pull", "--creds", user+":"+password, sideloaded)
		for _, tc := range []struct {
			pod     *runtimeapi.PodSandboxConfig
			allowed bool
		}{{pod, true}, {other, false}} {
			podResp, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: tc.pod})
			if err != nil {
				t.Fatalf("RunPodSandbox: %v", err)
			}
			_, err = faultCreate(ctx, rt, podResp.GetPodSandboxId(), tc.pod, "sideloaded", 0, sideloaded)
			if err != nil {
				returned = append(returned, err.Error())
			}
			switch {
			case tc.allowed && err != nil:
				t.Errorf("%s: create in %s from the sideloaded signed image (verified with that namespace's credentials): %v", mode, tc.pod.Metadata.Namespace, err)
			case !tc.allowed && !faultDenied(err):
				t.Errorf("%s: create in %s, which never sent good credentials: %v; want a denial (registry refuses anonymous reads)", mode, tc.pod.Metadata.Namespace, err)
			}
		}
		if front.AuthFailures() == challenged {
			t.Fatalf("%s: the registry never challenged a request: credentials were not exercised", mode)
		}
	}

	logs := g.Logs()
	if !strings.Contains(logs, `"level":"DEBUG"`) || !strings.Contains(logs, `"decision":"allow"`) || !strings.Contains(logs, `"decision":"deny"`) {
		t.Fatalf("criguard's log lacks debug lines or decisions; the grep below would prove nothing:\n%s", logs)
	}
	_, metrics, err := httpGet(t.Context(), base+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	places := map[string]string{"criguard log": logs, "/metrics": metrics, "errors returned to the client": strings.Join(returned, "\n")}
	for what, secret := range secrets {
		for where, text := range places {
			if strings.Contains(text, secret) {
				t.Errorf("the %s appears in %s", what, where)
			}
		}
	}
	t.Logf("checked %d secrets in %d log bytes, %d metrics bytes, %d returned errors; registry challenges: %d",
		len(secrets), len(logs), len(metrics), len(returned), front.AuthFailures())
}

// securityUnknown appends field num (length-delimited) to m's unknown fields.
func securityUnknown(m proto.Message, num protowire.Number, value string) {
	r := m.ProtoReflect()
	b := append([]byte(nil), r.GetUnknown()...)
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendString(b, value)
	r.SetUnknown(protoreflect.RawFields(b))
}

// TestSecurityUnknownFields: PullImage and CreateContainer requests carrying
// protobuf fields unknown to criguard's compiled cri-api (as a newer kubelet,
// or anyone on the socket, could send: say an image reference in a field
// added later) are refused with SignatureValidationFailed, for a signed image
// that is otherwise allowed; nothing reaches containerd. The same requests
// without the field are allowed.
func TestSecurityUnknownFields(t *testing.T) {
	e := newEnforceEnv(t)
	pol := filepath.Join(e.dir, "policy.yaml")
	writePolicy(t, pol, e.nativePolicy("Enforce"))
	g, _ := e.guard(t, pol)
	conn := harness.DialCRI(t, g.Socket)
	img := runtimeapi.NewImageServiceClient(conn)
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	signedRef, _ := e.signed(t, "unknown/signed", false)
	unsignedRef, _ := e.unsigned(t, "unknown/payload")
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	for _, where := range []string{"request", "image spec"} {
		req := &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: signedRef}}
		if where == "request" {
			securityUnknown(req, 1000, unsignedRef)
		} else {
			securityUnknown(req.Image, 1000, unsignedRef)
		}
		_, err := img.PullImage(ctx, req)
		if !faultDenied(err) {
			t.Errorf("PullImage with an unknown field in the %s: %v; want a denial", where, err)
		} else {
			t.Logf("PullImage with an unknown field in the %s: %v", where, err)
		}
	}
	if e.holds(t, e.r.Host+"/unknown/signed") {
		t.Error("a pull with an unknown field reached containerd")
	}
	if _, err := faultPull(t, conn, signedRef, nil); err != nil {
		t.Fatalf("the same pull without the unknown field: %v", err)
	}

	pod := benchPodConfig("unknown", "uid-unknown")
	pod.Metadata.Namespace = "default"
	podResp, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	cfg := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "main"},
		Image:    &runtimeapi.ImageSpec{Image: signedRef},
		Linux:    &runtimeapi.LinuxContainerConfig{},
		Mounts:   []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: e.dir, Readonly: true}},
	}
	securityUnknown(cfg.Mounts[0], 2000, unsignedRef)
	_, err = rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podResp.GetPodSandboxId(), Config: cfg, SandboxConfig: pod})
	if !faultDenied(err) || status.Code(err) != codes.PermissionDenied {
		t.Errorf("CreateContainer with an unknown field in a mount: %v; want PermissionDenied SignatureValidationFailed", err)
	} else {
		t.Logf("CreateContainer with an unknown field in a mount: %v", err)
	}
	inPod := func() int {
		n := 0
		for _, c := range faultContainers(t, e.c) {
			if c.PodID == podResp.GetPodSandboxId() {
				n++
			}
		}
		return n
	}
	if n := inPod(); n != 0 {
		t.Errorf("%d containers were created from a request with an unknown field", n)
	}
	cfg.Mounts[0].ProtoReflect().SetUnknown(nil)
	if _, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podResp.GetPodSandboxId(), Config: cfg, SandboxConfig: pod}); err != nil {
		t.Errorf("the same create without the unknown field: %v", err)
	} else if n := inPod(); n != 1 {
		t.Errorf("after the clean create the pod holds %d containers, want 1", n)
	}
	if !strings.Contains(g.Logs(), "unknown to criguard") {
		t.Error("criguard did not log the refused request")
	}
}

// TestSecurityUserSpecifiedImageMismatch: CreateContainer names an unsigned
// image by its ID and claims, in user_specified_image, a repository the
// policy allows without verification, although containerd knows the image
// under no such name. kubelet never sends such a pair (it resolves the pod's
// image name to the ID it passes); a client that does must not get the
// unsigned image run under the allowed name. The consistent pair (the allowed
// image's own ID) is allowed.
func TestSecurityUserSpecifiedImageMismatch(t *testing.T) {
	e := newEnforceEnv(t)
	pol := filepath.Join(e.dir, "policy.yaml")
	writePolicy(t, pol, fmt.Sprintf(`apiVersion: criguard.dev/v1alpha1
kind: ImagePolicy
metadata: {name: mismatch}
spec:
  mode: Enforce
  unmatchedImages: Deny
  rules:
  - name: trusted-without-signature
    images: ["%[1]s/allowed/*"]
    action: Allow
  - name: everything-else-signed
    images: ["%[1]s/*"]
    excludeImages: ["%[1]s/allowed/*"]
    action: Verify
    attestors:
      entries:
      - key: {file: %[2]s}
`, e.r.Host, e.pub))
	g, _ := e.guard(t, pol)
	conn := harness.DialCRI(t, g.Socket)
	img := runtimeapi.NewImageServiceClient(conn)
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	allowedRef, _ := e.unsigned(t, "allowed/app")
	evilRef, _ := e.unsigned(t, "evil/app")
	if _, err := faultPull(t, conn, allowedRef, nil); err != nil {
		t.Fatalf("pull of the allowed repository: %v", err)
	}
	harness.MustCrictl(t, e.c.Endpoint(), "pull", evilRef) // behind criguard's back
	idOf := func(ref string) string {
		st, err := img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil || st.GetImage() == nil {
			t.Fatalf("ImageStatus %s: %v", ref, err)
		}
		return st.GetImage().GetId()
	}
	evilID, allowedID := idOf(evilRef), idOf(allowedRef)

	pod := benchPodConfig("mismatch", "uid-mismatch")
	pod.Metadata.Namespace = "default"
	podResp, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	create := func(name, id, claimed string) error {
		_, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
			PodSandboxId: podResp.GetPodSandboxId(), SandboxConfig: pod,
			Config: &runtimeapi.ContainerConfig{
				Metadata: &runtimeapi.ContainerMetadata{Name: name},
				Image:    &runtimeapi.ImageSpec{Image: id, UserSpecifiedImage: claimed},
				Linux:    &runtimeapi.LinuxContainerConfig{},
			},
		})
		return err
	}
	if err := create("consistent", allowedID, allowedRef); err != nil {
		t.Errorf("the allowed image by its own ID and name: %v", err)
	}
	if err := create("by-id", evilID, ""); !faultDenied(err) {
		t.Errorf("the unsigned image by ID alone: %v; want a denial", err)
	}
	err = create("mismatch", evilID, allowedRef)
	if !faultDenied(err) {
		t.Errorf("the unsigned image by ID, claimed to be %s: %v; want a denial (containerd knows it under no such name)", allowedRef, err)
	}
	for _, c := range faultContainers(t, e.c) {
		if c.ImageRef == evilID {
			t.Errorf("a container of the unsigned image exists: %+v", c)
		}
	}
}

// TestSecurityCredentialsStayWithTheirRegistry: kubelet's credentials in a
// PullImage are those of the image's registry. When the policy keeps
// signatures in another registry (signatureRepository) that asks for
// credentials, criguard must not hand it the image registry's password: that
// would leak one registry's secret to another operator. The signature
// registry is expected to get its own credentials (the node's docker config)
// or none.
func TestSecurityCredentialsStayWithTheirRegistry(t *testing.T) {
	e := newEnforceEnv(t)
	images := harness.StartFrontRegistry(t, e.r)
	sigs := harness.StartFrontRegistry(t, e.r)
	images.AddTo(t, e.c)
	pol := filepath.Join(e.dir, "policy.yaml")
	writePolicy(t, pol, fmt.Sprintf(`apiVersion: criguard.dev/v1alpha1
kind: ImagePolicy
metadata: {name: sigrepo}
spec:
  mode: Enforce
  unmatchedImages: Deny
  failurePolicy: Fail
  verificationTimeout: 20s
  rules:
  - name: private
    images: ["%s/*"]
    action: Verify
    signatureRepository: %s/signatures/store
    attestors:
      entries:
      - key: {file: %s}
`, images.Host, sigs.Host, e.pub))
	g, _ := e.guard(t, pol, "--log-level", "debug")
	conn := harness.DialCRI(t, g.Socket)

	dg := e.r.PushImage(t, "private/app", "1.0")
	t.Setenv("COSIGN_REPOSITORY", sigs.Host+"/signatures/store")
	e.cs.Sign(t, e.key, images.Ref("private/app", dg), false)

	const user = "image-registry-user"
	password := securitySecret("image-pw-")
	images.RequireAuth(user, password, "")
	sigs.RequireAuth("signature-registry-user", securitySecret("sig-pw-"), "")
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))

	_, err := faultPull(t, conn, images.Ref("private/app", "1.0"), &runtimeapi.AuthConfig{Username: user, Password: password})
	t.Logf("pull with the image registry's credentials, signatures in a registry that wants others: %v", err)
	if err == nil {
		t.Errorf("allowed although the signature registry refused every request")
	}
	if images.AuthFailures() == 0 || sigs.AuthFailures() == 0 {
		t.Fatalf("the registries were not both asked (image registry challenges %d, signature registry %d)", images.AuthFailures(), sigs.AuthFailures())
	}
	for _, a := range sigs.SeenAuthorization() {
		if strings.Contains(a, basic) || strings.Contains(a, password) {
			t.Errorf("criguard sent the image registry's credentials to the signature registry %s: Authorization %q", sigs.Host, a)
		}
	}
}

// TestSecurityCredentialsNotFollowingRedirects: the image registry answers
// blob downloads with a redirect to another host (as registries backed by a
// CDN or object store do). criguard follows it for the signature blobs but
// sends kubelet's credentials only to the registry they are for; the
// verification still succeeds.
func TestSecurityCredentialsNotFollowingRedirects(t *testing.T) {
	e := newEnforceEnv(t)
	images := harness.StartFrontRegistry(t, e.r)
	cdn := harness.StartFrontRegistry(t, e.r)
	images.AddTo(t, e.c)
	cdn.AddTo(t, e.c)
	pol := filepath.Join(e.dir, "policy.yaml")
	writePolicy(t, pol, faultPolicy("Fail", "20s", e.pub, images.Host))
	g, _ := e.guard(t, pol, "--log-level", "debug")
	conn := harness.DialCRI(t, g.Socket)

	const user = "image-registry-user"
	password := securitySecret("image-pw-")
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	for i, legacy := range []bool{false, true} {
		repo := fmt.Sprintf("redirected/app%d", i)
		images.RequireAuth("", "", "")
		dg := e.r.PushImage(t, repo, "1.0")
		e.cs.Sign(t, e.key, images.Ref(repo, dg), legacy)
		images.RequireAuth(user, password, "")
		// Another host name for the same loopback address: Go's HTTP client
		// treats two ports of one host name as one host.
		images.RedirectBlobs("localhost:" + cdn.Host[strings.LastIndex(cdn.Host, ":")+1:])
		before := cdn.Requests()
		if _, err := faultPull(t, conn, images.Ref(repo, "1.0"), &runtimeapi.AuthConfig{Username: user, Password: password}); err != nil {
			t.Errorf("signed pull (legacy %v) with blobs behind a redirect: %v", legacy, err)
		}
		if cdn.Requests() == before {
			t.Errorf("legacy %v: nothing was fetched through the redirect; the test proves nothing", legacy)
		}
	}
	for _, a := range cdn.SeenAuthorization() {
		if strings.Contains(a, basic) || strings.Contains(a, password) {
			t.Errorf("kubelet's credentials for %s followed a redirect to %s: Authorization %q", images.Host, cdn.Host, a)
		}
	}
	t.Logf("the redirect target got %d requests, Authorization values %q", cdn.Requests(), cdn.SeenAuthorization())
}

// securityRetag is the Guard of an interposer between criguard and
// containerd: when a CreateContainer names tag, it first moves tag to target
// in containerd (and waits until the CRI plugin resolves it so), then
// forwards. It makes certain the window between criguard's judgement of a tag
// name and containerd's own resolution of it.
type securityRetag struct {
	tagger           *enforce.ContainerdTagger
	images           runtimeapi.ImageServiceClient
	tag, target, tid string
	moved            atomic.Bool
}

func (s *securityRetag) PullImage(ctx context.Context, r *runtimeapi.PullImageRequest, next forward.PullFunc) (*runtimeapi.PullImageResponse, error) {
	return next(ctx, r)
}

func (s *securityRetag) RunPodSandbox(ctx context.Context, r *runtimeapi.RunPodSandboxRequest, next forward.RunPodFunc) (*runtimeapi.RunPodSandboxResponse, error) {
	return next(ctx, r)
}

func (s *securityRetag) CreateContainer(ctx context.Context, r *runtimeapi.CreateContainerRequest, next forward.CreateFunc) (*runtimeapi.CreateContainerResponse, error) {
	if r.GetConfig().GetImage().GetImage() == s.tag && !s.moved.Swap(true) {
		if err := s.tagger.Tag(ctx, s.tag, s.target); err != nil {
			return nil, status.Errorf(codes.Internal, "interposer: retag: %v", err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			st, err := s.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: s.tag}})
			if err == nil && st.GetImage().GetId() == s.tid {
				break
			}
			if time.Now().After(deadline) {
				return nil, status.Errorf(codes.Internal, "interposer: containerd never resolved %s to %s (%v)", s.tag, s.tid, err)
			}
			time.Sleep(50 * time.Millisecond) // polling containerd's event-driven image store
		}
	}
	return next(ctx, r)
}

// TestSecurityCreateByTagMovedAfterJudgement: a CreateContainer names its
// image by tag (as crictl does; kubelet passes the image ID). criguard judges
// what the tag names at that moment, a signed image; the tag then moves to an
// unsigned image of the same repository before containerd resolves it (made
// certain here by an interposer). What runs must be what was judged: the
// container is created from the signed image, or not at all.
func TestSecurityCreateByTagMovedAfterJudgement(t *testing.T) {
	e := newEnforceEnv(t)
	pol := filepath.Join(e.dir, "policy.yaml")
	writePolicy(t, pol, e.nativePolicy("Enforce"))
	const repo = "toctou/app"
	signedRef, signedDg := e.signed(t, repo, false)
	evilDg := e.r.PushImage(t, repo, "evil")
	harness.MustCrictl(t, e.c.Endpoint(), "pull", signedRef) // on the node already
	harness.MustCrictl(t, e.c.Endpoint(), "pull", e.r.Ref(repo, evilDg))

	up, err := forward.Dial(t.Context(), e.c.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	tagger, err := enforce.NewContainerdTagger(up)
	if err != nil {
		t.Fatal(err)
	}
	images := runtimeapi.NewImageServiceClient(up)
	idOf := func(ref string) string {
		st, err := images.ImageStatus(t.Context(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil || st.GetImage() == nil {
			t.Fatalf("ImageStatus %s: %v", ref, err)
		}
		return st.GetImage().GetId()
	}
	signedID, evilID := idOf(e.r.Ref(repo, signedDg)), idOf(e.r.Ref(repo, evilDg))
	retag := &securityRetag{tagger: tagger, images: images, tag: signedRef, target: e.r.Ref(repo, evilDg), tid: evilID}
	srv, err := forward.NewServer(forward.Options{Upstream: up, Guard: retag})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(harness.TempDir(t, "ipose"), "interposer.sock")
	lis, err := forward.ListenUnix(t.Context(), sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { _ = srv.Serve(ctx, lis); close(served) }()
	t.Cleanup(func() { cancel(); <-served })

	g := harness.StartCriguard(t, sock, "--policy", pol, "--metrics-address", "")
	conn := harness.DialCRI(t, g.Socket)
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	pod := benchPodConfig("toctou", "uid-toctou")
	pod.Metadata.Namespace = "default"
	cctx, ccancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer ccancel()
	podResp, err := rt.RunPodSandbox(cctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	id, err := faultCreate(cctx, rt, podResp.GetPodSandboxId(), pod, "main", 0, signedRef)
	t.Logf("create of %s (judged as %s, tag moved to %s before containerd resolved it): id %q, %v", signedRef, signedID, evilID, id, err)
	if !retag.moved.Load() && err == nil {
		t.Logf("criguard did not forward the tag name (the interposer had nothing to move)")
	}
	for _, c := range faultContainers(t, e.c) {
		if c.PodID != podResp.GetPodSandboxId() {
			continue
		}
		t.Logf("container %s: image %s, imageRef %s", c.ID, c.Image.Image, c.ImageRef)
		if c.ImageRef != signedID {
			t.Errorf("criguard judged %s (%s) but containerd created the container from %s: the tag was resolved again after the judgement", signedRef, signedID, c.ImageRef)
		}
	}
}

// TestSecurityRegistrySpelling: a different spelling of the same registry
// must not dodge a rule (issue 11 §1: `127.0.0.1:05199/team/x` was pulled and
// run where `127.0.0.1:5199/team/*` had to verify). With unmatched images
// allowed, as under a Kyverno-only policy set, each spelling of the registry
// is still the rule's registry: an unsigned image is refused by the rule, and
// a signed one pulled under the odd spelling lands as the canonical name.
func TestSecurityRegistrySpelling(t *testing.T) {
	e := newEnforceEnv(t)
	pol := filepath.Join(e.dir, "policy.yaml")
	writePolicy(t, pol, fmt.Sprintf(`apiVersion: criguard.dev/v1alpha1
kind: ImagePolicy
metadata: {name: spelling}
spec:
  mode: Enforce
  unmatchedImages: Allow
  rules:
  - name: team-signed
    images: ["%s/team/*"]
    action: Verify
    attestors:
      entries:
      - key: {file: %s}
`, e.r.Host, e.pub))
	g, _ := e.guard(t, pol)
	conn := harness.DialCRI(t, g.Socket)
	host, port, err := net.SplitHostPort(e.r.Host)
	if err != nil {
		t.Fatal(err)
	}
	unsignedRef, _ := e.unsigned(t, "team/unsigned")
	signedRef, signedDg := e.signed(t, "team/signed", false)
	respell := func(ref, spelling string) string { return strings.Replace(ref, e.r.Host, spelling, 1) }
	for _, spelling := range []string{host + ":0" + port, host + ":00" + port} {
		_, err := faultPull(t, conn, respell(unsignedRef, spelling), nil)
		if !faultDenied(err) || !strings.Contains(status.Convert(err).Message(), "team-signed") {
			t.Errorf("unsigned image as %s: %v; want a denial by rule team-signed", spelling, err)
		}
		if _, err := faultPull(t, conn, respell(signedRef, spelling), nil); err != nil {
			t.Errorf("signed image as %s: %v", spelling, err)
		}
	}
	signedHeld, unsignedHeld := e.holds(t, e.r.Host+"/team/signed"), e.holds(t, e.r.Host+"/team/unsigned")
	if !signedHeld || unsignedHeld {
		t.Errorf("containerd holds team/signed %v, team/unsigned %v; want only the signed one", signedHeld, unsignedHeld)
	}
	if err := e.hasTag(t, signedRef, signedDg); err != nil {
		t.Errorf("the signed image pulled under another spelling: %v", err)
	}
}
