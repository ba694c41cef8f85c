package enforce

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criguard/criguard/criproxy/forward"
	"github.com/criguard/criguard/verifier/imageref"
	"github.com/criguard/criguard/verifier/policy"
)

// PullImage judges the reference kubelet asked for and, on allow, pulls exactly
// the digest that was judged (never the tag), then records kubelet's tag for it.
func (e *Enforcer) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest, next forward.PullFunc) (*runtimeapi.PullImageResponse, error) {
	start := time.Now()
	raw := req.GetImage().GetImage()
	ns, pod := podOf(req.GetSandboxConfig())
	ref, err := imageref.Parse(raw)
	if err != nil {
		d := policy.Decision{Image: raw, Reason: err.Error()}
		e.record(OpPullImage, ns, pod, raw, d, start)
		return nil, denial(codes.Unknown, raw, d)
	}
	auth := authFromCRI(req.GetAuth())
	d := e.judge.Evaluate(ctx, policy.Input{
		Operation: OpPullImage, Image: raw, Ref: ref, Digest: ref.Digest(),
		Namespace: ns, Pod: pod, Auth: auth,
	})
	e.record(OpPullImage, ns, pod, raw, d, start)
	if !d.Allowed {
		return nil, denial(codes.Unknown, raw, d)
	}

	if d.Digest == "" {
		// Allowed without a digest: the tag could not be resolved, so nothing
		// was verified and the verdict holds for whatever the tag names (an
		// Allow rule, unmatchedImages: Allow, Audit mode, failurePolicy Ignore).
		// There is nothing to pin; refusing would break pulls containerd can do
		// (through registry mirrors criguard does not know). CreateContainer
		// judges the digest that lands.
		e.log.WarnContext(ctx, "pulling by tag: the policy allows the image but its digest could not be resolved",
			"image", raw, "reason", d.Reason)
		resp, err := next(ctx, req)
		if err != nil {
			e.metrics.upstreamError(OpPullImage)
		}
		return resp, err
	}
	digestRef := ref.Repository() + "@" + d.Digest
	fwd := proto.CloneOf(req)
	fwd.Image.Image = digestRef
	resp, err := next(ctx, fwd)
	if err != nil {
		e.metrics.upstreamError(OpPullImage)
		return nil, err
	}
	if auth != nil {
		// Remembered only once they proved good for an allowed pull, and only
		// for this namespace's later creates.
		e.creds.Remember(ns, ref.Registry(), auth)
	}
	if ref.Tag() != "" && !ref.HasDigest() && e.tagger != nil {
		tagRef := ref.Repository() + ":" + ref.Tag()
		if err := e.tagger.Tag(ctx, tagRef, digestRef); err != nil {
			// The digest is pulled but kubelet's name for it is not recorded;
			// failing like containerd does when it cannot record an image lets
			// kubelet retry rather than leave `crictl images` without the tag.
			e.metrics.upstreamError(opTag)
			e.log.ErrorContext(ctx, "recording the pulled tag failed", "image", tagRef, "digest", d.Digest, "error", err)
			return nil, status.Errorf(codes.Unknown, "criguard: pulled %s but could not tag it %s in containerd: %v", digestRef, tagRef, err)
		}
		if !e.waitTagServed(ctx, tagRef, resp.GetImageRef()) {
			// The tag is recorded in containerd's store; the CRI plugin will
			// serve it once it has seen the event. Not an error to kubelet.
			e.log.WarnContext(ctx, "containerd's CRI plugin does not serve the new tag yet", "image", tagRef, "digest", d.Digest, "waited", e.tagWait)
		}
	}
	return resp, nil
}

// waitTagServed polls ImageStatus until tagRef names imageID (any image when
// imageID is empty), for at most e.tagWait. It reports whether it did.
func (e *Enforcer) waitTagServed(ctx context.Context, tagRef, imageID string) bool {
	if e.tagWait < 0 {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, e.tagWait)
	defer cancel()
	delay := time.Millisecond
	for {
		st, err := e.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: tagRef}})
		if err == nil && st.GetImage() != nil && (imageID == "" || st.GetImage().GetId() == imageID) {
			return true
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}
