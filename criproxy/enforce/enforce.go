package enforce

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criguard/criguard/criproxy/forward"
	"github.com/criguard/criguard/verifier/imageref"
	"github.com/criguard/criguard/verifier/policy"
)

// Judge decides one image under the node's current policy (policy.Engine does,
// with its verdict cache). It must fail closed: any error is a denial. An allow
// for an input that names a Digest is for that digest (the engine's one digest
// check); the enforcer relies on it and does not check again.
type Judge interface {
	Evaluate(ctx context.Context, in policy.Input) policy.Decision
}

// ImageStatuser looks images up in the upstream runtime;
// runtimeapi.NewImageServiceClient(conn) is one.
type ImageStatuser interface {
	ImageStatus(ctx context.Context, in *runtimeapi.ImageStatusRequest, opts ...grpc.CallOption) (*runtimeapi.ImageStatusResponse, error)
}

// Options holds what an Enforcer needs.
type Options struct {
	Judge  Judge         // required
	Images ImageStatuser // required: ImageStatus calls to containerd
	// Sandboxes is required: PodSandboxStatus calls to containerd, for a
	// sandbox created before criguard started.
	Sandboxes SandboxStatuser
	// Tagger records the tag kubelet asked for once its digest is pulled;
	// nil leaves pulled images under their digest reference only.
	Tagger      Tagger
	Credentials *Credentials // nil: a new one of DefaultCredentialHosts
	Metrics     *Metrics     // nil: no metrics
	Logger      *slog.Logger // nil: decisions are not logged
	// TagVisibleTimeout bounds the wait, after tagging, until containerd's CRI
	// plugin serves the tag: it learns of a tag from the image event, a moment
	// later, and a create by that tag right after the pull would otherwise fail
	// with NotFound. 0 means DefaultTagVisibleTimeout; negative, no wait.
	TagVisibleTimeout time.Duration
	// ImageNamesTTL is how long the names of an image judged at CreateContainer
	// are remembered by image ID (see imageNames); 0 means
	// DefaultImageNamesTTL, negative disables it.
	ImageNamesTTL time.Duration
}

// DefaultImageNamesTTL bounds how long CreateContainer reuses the names
// containerd gave for an image ID instead of asking again.
const DefaultImageNamesTTL = time.Minute

// maxImageNames bounds the image IDs remembered (a node holds far fewer images).
const maxImageNames = 4096

// DefaultTagVisibleTimeout is how long PullImage waits for a new tag to be
// served by containerd's CRI plugin before returning anyway.
const DefaultTagVisibleTimeout = 2 * time.Second

// Enforcer is the Guard that enforces the image policy: a pull goes upstream
// only as name@digest of a digest the policy allowed, and a container is created
// only from an image whose repository digest the policy allows.
type Enforcer struct {
	judge     Judge
	images    ImageStatuser
	runtime   SandboxStatuser
	sandboxes *lru[string, owner] // sandbox ID -> the pod it was created for
	tagger    Tagger
	creds     *Credentials
	metrics   *Metrics
	log       *slog.Logger
	tagWait   time.Duration
	names     *imageNames // nil: every CreateContainer asks containerd
}

var _ forward.Guard = (*Enforcer)(nil)

// New checks cfg and returns the Guard.
func New(cfg Options) (*Enforcer, error) {
	if cfg.Judge == nil {
		return nil, errors.New("enforce: enforcer needs a policy judge")
	}
	if cfg.Images == nil {
		return nil, errors.New("enforce: enforcer needs an upstream image service for ImageStatus")
	}
	if cfg.Sandboxes == nil {
		return nil, errors.New("enforce: enforcer needs an upstream runtime service for PodSandboxStatus")
	}
	e := &Enforcer{judge: cfg.Judge, images: cfg.Images, runtime: cfg.Sandboxes, sandboxes: newLRU[string, owner](maxSandboxes), tagger: cfg.Tagger, creds: cfg.Credentials, metrics: cfg.Metrics, log: cfg.Logger, tagWait: cfg.TagVisibleTimeout}
	if e.tagWait == 0 {
		e.tagWait = DefaultTagVisibleTimeout
	}
	switch ttl := cfg.ImageNamesTTL; {
	case ttl == 0:
		e.names = newImageNames(DefaultImageNamesTTL, maxImageNames)
	case ttl > 0:
		e.names = newImageNames(ttl, maxImageNames)
	}
	if e.creds == nil {
		e.creds = NewCredentials(0)
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	return e, nil
}

func podOf(c *runtimeapi.PodSandboxConfig) (namespace, pod string) {
	m := c.GetMetadata()
	return m.GetNamespace(), m.GetName()
}

// inputs builds one policy input per repository digest, or a Local one when
// there is none. image is the name as shown (logs, denials); ref is it parsed,
// or zero when it is no reference (an image ID), which the engine then refuses.
func (e *Enforcer) inputs(ns, pod, image string, ref imageref.Ref, digests []string) []policy.Input {
	if len(digests) == 0 {
		return []policy.Input{{Operation: OpCreateContainer, Image: image, Ref: ref, Local: true, Namespace: ns, Pod: pod}}
	}
	auth := e.creds.For(ns, ref.Registry())
	out := make([]policy.Input, 0, len(digests))
	for _, dg := range digests {
		out = append(out, policy.Input{Operation: OpCreateContainer, Image: image, Ref: ref, Digest: dg, Namespace: ns, Pod: pod, Auth: auth})
	}
	return out
}

// denial is the error kubelet sees: the prefix it maps to the pod's reason, then
// what was judged and why.
func denial(code codes.Code, image string, d policy.Decision) error {
	if d.Image == "" {
		d.Image = image
	}
	if d.Allowed { // never: only denials get here; say so rather than say "allowed"
		d.Allowed, d.Reason = false, "denied: "+d.Reason
	}
	return status.Error(code, forward.DeniedPrefix+d.Explain())
}

// record logs one decision and counts it.
func (e *Enforcer) record(op, ns, pod, image string, d policy.Decision, start time.Time) {
	dur := time.Since(start)
	if d.Image == "" {
		d.Image = image
	}
	result := string(d.Verdict())
	e.metrics.decision(op, result, d.Cached, dur)
	level := slog.LevelInfo
	if result != ResultAllow {
		level = slog.LevelWarn
	}
	e.log.LogAttrs(context.Background(), level, "image decision",
		slog.String("operation", op),
		slog.String("image", d.Image),
		slog.String("digest", d.Digest),
		slog.String("namespace", ns),
		slog.String("pod", pod),
		slog.String("policy", d.Policy),
		slog.String("rule", d.Rule),
		slog.String("decision", result),
		slog.String("reason", d.Reason),
		slog.Duration("duration", dur),
		slog.Bool("cached", d.Cached),
	)
}
