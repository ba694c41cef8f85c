package enforce

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criguard/criguard/criproxy/forward"
	"github.com/criguard/criguard/verifier/policy"
)

// SandboxStatuser looks pod sandboxes up in the upstream runtime;
// runtimeapi.NewRuntimeServiceClient(conn) is one.
type SandboxStatuser interface {
	PodSandboxStatus(ctx context.Context, in *runtimeapi.PodSandboxStatusRequest, opts ...grpc.CallOption) (*runtimeapi.PodSandboxStatusResponse, error)
}

// maxSandboxes bounds the sandboxes remembered (a node runs at most a few
// hundred pods); one that is dropped is looked up again in the runtime.
const maxSandboxes = 4096

// owner is the pod (namespace and name) a sandbox was created for.
type owner struct{ namespace, name string }

// RunPodSandbox forwards the sandbox and remembers which pod it belongs to:
// CreateContainer names its sandbox by ID, and its sandbox_config is whatever
// the client wrote, so the namespace a container is judged in comes from here.
func (e *Enforcer) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest, next forward.RunPodFunc) (*runtimeapi.RunPodSandboxResponse, error) {
	resp, err := next(ctx, req)
	if err == nil && resp.GetPodSandboxId() != "" {
		m := req.GetConfig().GetMetadata()
		e.sandboxes.put(resp.GetPodSandboxId(), owner{m.GetNamespace(), m.GetName()})
	}
	return resp, err
}

// sandboxPod returns the pod of the sandbox a CreateContainer names: from
// RunPodSandbox, else (a sandbox created before criguard started, or dropped
// from memory) from the runtime's PodSandboxStatus. A request whose
// sandbox_config claims another namespace is refused: judging it under the
// claimed namespace would let one namespace's rules decide another's pods.
func (e *Enforcer) sandboxPod(ctx context.Context, req *runtimeapi.CreateContainerRequest, start time.Time) (owner, error) {
	id := req.GetPodSandboxId()
	claimed := req.GetSandboxConfig().GetMetadata()
	image := req.GetConfig().GetImage().GetImage()
	if id == "" {
		d := policy.Decision{Reason: "the request names no pod sandbox, so the namespace the container would run in is unknown"}
		e.record(OpCreateContainer, claimed.GetNamespace(), claimed.GetName(), image, d, start)
		return owner{}, denial(codes.PermissionDenied, image, d)
	}
	p, ok := e.sandboxes.get(id)
	if !ok {
		st, err := e.runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
		if err != nil {
			e.metrics.upstreamError(opSandboxStatus)
			return owner{}, status.Errorf(status.Code(err), "criguard: cannot judge image %q: looking up pod sandbox %s in containerd failed: %v",
				image, id, status.Convert(err).Message())
		}
		m := st.GetStatus().GetMetadata()
		if m == nil {
			return owner{}, status.Errorf(codes.NotFound, "criguard: cannot judge image %q: containerd reports no metadata for pod sandbox %s", image, id)
		}
		p = owner{m.GetNamespace(), m.GetName()}
		e.sandboxes.put(id, p)
	}
	if claimed != nil && claimed.GetNamespace() != p.namespace {
		d := policy.Decision{Reason: fmt.Sprintf("the request's sandbox_config names namespace %q but pod sandbox %s belongs to namespace %q (pod %s); "+
			"criguard judges a container in its sandbox's namespace and refuses a request that disagrees", claimed.GetNamespace(), id, p.namespace, p.name)}
		e.record(OpCreateContainer, p.namespace, p.name, image, d, start)
		return owner{}, denial(codes.PermissionDenied, image, d)
	}
	return p, nil
}
