package nodeinstall

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"sigs.k8s.io/yaml"

	"github.com/criguard/criguard/systemd/unit"
)

// DefaultReadiness checks criguard through its socket under HostRoot and
// kubelet through its healthz endpoint, as configured in its configuration
// file (healthzBindAddress, healthzPort; kubelet's defaults 127.0.0.1:10248).
// The installer pod runs with hostNetwork, so kubelet's loopback is its own.
type DefaultReadiness struct {
	HostRoot      string
	KubeletConfig string // host path; default /var/lib/kubelet/config.yaml
}

// CriguardReady calls Version and Status through criguard's socket.
func (r *DefaultReadiness) CriguardReady(ctx context.Context) error {
	return CRIReady(ctx, filepath.Join(hostRootOr(r.HostRoot), unit.SocketPath))
}

// CRIReady calls CRI Version and Status on a unix socket and requires the
// RuntimeReady condition.
func CRIReady(ctx context.Context, socket string) error {
	conn, err := grpc.NewClient("passthrough:///criguard",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}))
	if err != nil {
		return fmt.Errorf("CRI client for %s: %w", socket, err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	v, err := rt.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		return fmt.Errorf("CRI Version on %s: %w", socket, err)
	}
	st, err := rt.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		return fmt.Errorf("CRI Status on %s: %w", socket, err)
	}
	for _, c := range st.GetStatus().GetConditions() {
		if c.GetType() == runtimeapi.RuntimeReady {
			if !c.GetStatus() {
				return fmt.Errorf("%s %s through %s: runtime not ready: %s %s", v.GetRuntimeName(), v.GetRuntimeVersion(), socket, c.GetReason(), c.GetMessage())
			}
			return nil
		}
	}
	return fmt.Errorf("CRI Status on %s has no RuntimeReady condition", socket)
}

// KubeletReady gets kubelet's healthz.
func (r *DefaultReadiness) KubeletReady(ctx context.Context) error {
	url, err := r.healthzURL()
	if err != nil {
		return err
	}
	if url == "" {
		return nil // healthz disabled (healthzPort: 0): nothing to ask
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("kubelet healthz %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("kubelet healthz %s: %s: %s", url, resp.Status, body)
	}
	return nil
}

func (r *DefaultReadiness) healthzURL() (string, error) {
	cfg := r.KubeletConfig
	if cfg == "" {
		cfg = DefaultKubeletConfig
	}
	h, err := openHost(hostRootOr(r.HostRoot), true, func(string, ...any) {})
	if err != nil {
		return "", err
	}
	defer h.Close()
	b, _, err := h.readFile(cfg, maxHostFile)
	if err != nil {
		return "", err
	}
	var c struct {
		HealthzPort        *int32 `json:"healthzPort"`
		HealthzBindAddress string `json:"healthzBindAddress"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return "", fmt.Errorf("read kubelet's healthz settings from %s: %w", cfg, err)
	}
	port := int32(10248)
	if c.HealthzPort != nil {
		port = *c.HealthzPort
	}
	if port == 0 {
		return "", nil
	}
	addr := c.HealthzBindAddress
	if addr == "" || addr == "0.0.0.0" || addr == "::" {
		addr = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(addr, strconv.Itoa(int(port))) + "/healthz", nil
}

func hostRootOr(r string) string {
	if r == "" {
		return "/"
	}
	return r
}

// Status reports whether criguard is installed and in use on the host: the
// unit and binary are present, kubelet's files point at criguard, and
// criguard answers CRI. It is the installer pod's readiness probe.
func Status(ctx context.Context, o Options) error {
	h, err := openHost(o.HostRoot, true, func(string, ...any) {})
	if err != nil {
		return err
	}
	defer h.Close()
	for _, p := range []string{unit.UnitPath, unit.BinaryPath} {
		ok, err := h.exists(p)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s is not on the host: criguard is not installed", p)
		}
	}
	f, err := unguardedFile(h, &o)
	if err != nil {
		return err
	}
	if f != "" {
		return fmt.Errorf("kubelet does not point at criguard in %s", f)
	}
	return o.readiness().CriguardReady(ctx)
}

// Uninstalled reports whether no trace of an install is left that uninstall
// would remove: the uninstall pod's readiness probe.
func Uninstalled(ctx context.Context, o Options) error {
	o.DryRun = true
	o.Log = nil // a probe: the answer is the error, not a list of would-be changes
	o.Services = inactiveServices{}
	o.Ready = noReadiness{}
	res, err := Uninstall(ctx, o)
	if err != nil {
		return err
	}
	if !res.Unchanged() {
		return fmt.Errorf("not uninstalled yet: %d changes pending, first: %s", len(res.Changes), res.Changes[0])
	}
	return nil
}

// inactiveServices answers a dry run without touching the host.
type inactiveServices struct{}

func (inactiveServices) DaemonReload(context.Context) error             { return nil }
func (inactiveServices) Enable(context.Context, string) error           { return nil }
func (inactiveServices) Disable(context.Context, string) error          { return nil }
func (inactiveServices) Start(context.Context, string) error            { return nil }
func (inactiveServices) Restart(context.Context, string) error          { return nil }
func (inactiveServices) Stop(context.Context, string) error             { return nil }
func (inactiveServices) IsActive(context.Context, string) (bool, error) { return false, nil }

type noReadiness struct{}

func (noReadiness) CriguardReady(context.Context) error { return nil }
func (noReadiness) KubeletReady(context.Context) error  { return nil }
