package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func httpGetBody(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const denyAllPolicy = `apiVersion: criguard.dev/v1alpha1
kind: ImagePolicy
metadata: {name: node}
spec:
  unmatchedImages: Deny
  rules: []
`

// serve --policy: the policy is loaded and enforced on the CRI socket, health
// and metrics are served, and a broken edit is refused while the old policy holds.
func TestServeWithPolicy(t *testing.T) {
	dir := tempDir(t)
	up := filepath.Join(dir, "up.sock")
	startUpstream(t, up, true)
	pol := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pol, []byte(denyAllPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	listen := filepath.Join(dir, "run", "criguard.sock")
	addr := freeAddr(t)
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exit := make(chan int, 1)
	go func() {
		exit <- runServe(ctx, []string{"--listen", listen, "--upstream", up, "--policy", pol, "--metrics-address", addr, "--log-format", "json"}, &bytes.Buffer{}, logs)
	}()
	base := "http://" + addr
	waitFor(t, "/readyz", func() bool { code, _ := httpGetBody(t, base+"/readyz"); return code == 200 })
	if code, _ := httpGetBody(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz %d", code)
	}

	conn, err := grpc.NewClient("unix://"+listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	_, err = runtimeapi.NewImageServiceClient(conn).PullImage(cctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "127.0.0.1:1/team/app:1.0"}})
	if st := status.Convert(err); st.Code() != codes.Unknown || !strings.HasPrefix(st.Message(), "SignatureValidationFailed: ") || !strings.Contains(st.Message(), "policy node") {
		t.Fatalf("pull under a deny-all policy: %v", err)
	}

	metric := func(series string) bool {
		_, body := httpGetBody(t, base+"/metrics")
		return strings.Contains(body, series)
	}
	if !metric(`criguard_decisions_total{operation="PullImage",result="deny"} 1`) {
		t.Error("the denial was not counted")
	}
	// A broken edit is refused, counted, and the policy in force stays.
	if err := os.WriteFile(pol, []byte("kind: ImagePolicy\nspec: {nonsense: true}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "failed reload counted", func() bool { return metric(`criguard_policy_reloads_total{result="failed"} 1`) })
	if code, _ := httpGetBody(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz %d after a refused reload: the old policy is still loaded", code)
	}
	_, err = runtimeapi.NewImageServiceClient(conn).PullImage(cctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "127.0.0.1:1/team/app:1.0"}})
	if status.Code(err) != codes.Unknown {
		t.Errorf("pull after a broken edit: %v, want the old policy's denial", err)
	}

	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit %d; logs:\n%s", code, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	for _, want := range []string{`"msg":"policy loaded"`, `"msg":"image decision"`, `"decision":"deny"`, `"msg":"serving metrics"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %s", want)
		}
	}
	if code, _ := httpGetBody(t, base+"/healthz"); code == 200 {
		t.Error("metrics listener still up after serve stopped")
	}
}

func TestServePolicyErrors(t *testing.T) {
	dir := tempDir(t)
	up := filepath.Join(dir, "up.sock")
	startUpstream(t, up, true)
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(strings.Replace(denyAllPolicy, "Deny", "Sometimes", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ policy, want string }{
		{bad, "Sometimes"},
		{filepath.Join(dir, "missing.yaml"), "missing.yaml"},
	} {
		var stderr bytes.Buffer
		listen := filepath.Join(dir, "run", "criguard.sock")
		code := runServe(context.Background(), []string{"--listen", listen, "--upstream", up, "--policy", tc.policy, "--metrics-address", ""}, &bytes.Buffer{}, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), "--policy") || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("--policy %s: exit %d, stderr %q; want 1 naming %q", tc.policy, code, stderr.String(), tc.want)
		}
		if _, err := os.Lstat(listen); err == nil {
			t.Errorf("socket created despite an invalid policy")
		}
	}
}

// Without --policy serve is a pass-through proxy and says so; /readyz reports
// that no policy is loaded.
func TestServeWithoutPolicyNotReady(t *testing.T) {
	dir := tempDir(t)
	up := filepath.Join(dir, "up.sock")
	startUpstream(t, up, true)
	addr := freeAddr(t)
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	exit := make(chan int, 1)
	go func() {
		exit <- runServe(ctx, []string{"--listen", filepath.Join(dir, "g.sock"), "--upstream", up, "--metrics-address", addr}, &bytes.Buffer{}, logs)
	}()
	defer func() { cancel(); <-exit }()
	waitFor(t, "/healthz", func() bool { code, _ := httpGetBody(t, "http://"+addr+"/healthz"); return code == 200 })
	code, body := httpGetBody(t, "http://"+addr+"/readyz")
	if code != 503 || !strings.Contains(body, "no policy") {
		t.Errorf("/readyz without a policy: %d %q", code, body)
	}
	if !strings.Contains(logs.String(), "unverified") {
		t.Errorf("no warning that images pass unverified:\n%s", logs.String())
	}
}

// serve --trusted-root: a broken root refuses to start (naming the file), as
// does a root without a policy.
func TestServeTrustedRootErrors(t *testing.T) {
	dir := tempDir(t)
	up := filepath.Join(dir, "up.sock")
	startUpstream(t, up, true)
	pol := filepath.Join(dir, "policy.yaml")
	badRoot := filepath.Join(dir, "root.json")
	for f, data := range map[string]string{pol: denyAllPolicy, badRoot: `{"mediaType":"x"}`} {
		if err := os.WriteFile(f, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--policy", pol, "--trusted-root", badRoot}, "root.json"},
		{[]string{"--trusted-root", badRoot}, "--trusted-root needs --policy"},
	} {
		var stderr bytes.Buffer
		listen := filepath.Join(dir, "run", "criguard.sock")
		code := runServe(context.Background(), append([]string{"--listen", listen, "--upstream", up, "--metrics-address", ""}, tc.args...), &bytes.Buffer{}, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 1 naming %q", tc.args, code, stderr.String(), tc.want)
		}
	}
}
