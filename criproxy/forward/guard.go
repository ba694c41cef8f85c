package forward

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Guard judges the CRI calls that can bring an image onto the node or run one.
// The proxy decodes only the methods below; every other call is forwarded as
// raw bytes. Each method receives the decoded request and next, which forwards a
// (possibly rewritten) request upstream. A Guard that returns an error without
// calling next refuses the call; that error's gRPC status reaches kubelet as is.
//
// RunPodSandbox passes through the Guard too, so that it learns which
// namespace each sandbox was created in: CreateContainer names its sandbox by
// ID and carries a sandbox_config the client could fill in at will.
type Guard interface {
	PullImage(ctx context.Context, req *runtimeapi.PullImageRequest, next PullFunc) (*runtimeapi.PullImageResponse, error)
	CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest, next CreateFunc) (*runtimeapi.CreateContainerResponse, error)
	RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest, next RunPodFunc) (*runtimeapi.RunPodSandboxResponse, error)
}

// DeniedPrefix starts every denial message, the Guard's and the server's own
// refusals alike: kubelet turns it into the pod's waiting reason
// (ErrSignatureValidationFailed), so `kubectl get pod` shows it.
const DeniedPrefix = "SignatureValidationFailed: "

// PullFunc forwards a PullImage request upstream.
type PullFunc func(context.Context, *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error)

// CreateFunc forwards a CreateContainer request upstream.
type CreateFunc func(context.Context, *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error)

// RunPodFunc forwards a RunPodSandbox request upstream.
type RunPodFunc func(context.Context, *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error)
