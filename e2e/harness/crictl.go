package harness

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Crictl runs crictl against endpoint (a socket path or unix:// endpoint) for
// both the runtime and the image service, with no config file and a 60s
// timeout per call. The error carries crictl's stderr.
func Crictl(t T, endpoint string, args ...string) (string, error) {
	t.Helper()
	ep := endpointFor(endpoint)
	full := append([]string{"--config", "/dev/null", "-r", ep, "-i", ep, "--timeout", "60s"}, args...)
	cmd := exec.CommandContext(t.Context(), Tool(t, "crictl"), full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("crictl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// MustCrictl is Crictl that fails the test on error.
func MustCrictl(t T, endpoint string, args ...string) string {
	t.Helper()
	out, err := Crictl(t, endpoint, args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

// DialCRI opens a gRPC connection to a CRI socket with kubelet's 16 MiB
// message limits; it is closed at cleanup.
func DialCRI(t T, socketOrEndpoint string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(endpointFor(socketOrEndpoint),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(16<<20)))
	if err != nil {
		t.Fatalf("harness: dialing %s: %v", socketOrEndpoint, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func endpointFor(s string) string { return endpoint(s) }

// HostNetworkPod is a crictl pod config (JSON) for a host-network sandbox
// (this machine has no CNI plugin) whose containers log under logDir (empty:
// no logs). The uid is derived from name and namespace.
func HostNetworkPod(name, namespace, logDir string) string {
	return mustJSON(map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": namespace, "uid": "uid-" + namespace + "-" + name, "attempt": 0},
		"log_directory": logDir,
		"linux": map[string]any{
			"security_context": map[string]any{
				"namespace_options": map[string]any{"network": 2},
			},
		},
	})
}

// ContainerConfig is a crictl container config (JSON) running image with cmd
// (empty: the image's entrypoint), logging to <name>.log in the pod's log dir.
func ContainerConfig(name, image string, cmd ...string) string {
	c := map[string]any{
		"metadata": map[string]any{"name": name, "attempt": 0},
		"image":    map[string]any{"image": image},
		"log_path": name + ".log",
		"linux":    map[string]any{},
	}
	if len(cmd) > 0 {
		c["command"] = cmd
	}
	return mustJSON(c)
}

func mustJSON(v any) string {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(err) // only static maps are encoded
	}
	return string(b)
}
