package enforce

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criguard/criguard/criproxy/forward"
	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/imageref"
	"github.com/criguard/criguard/verifier/policy"
)

// CreateContainer requires an allow for the container's image and every image
// volume, judged by the repository digests containerd holds for them.
func (e *Enforcer) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest, next forward.CreateFunc) (*runtimeapi.CreateContainerResponse, error) {
	p, err := e.sandboxPod(ctx, req, time.Now())
	if err != nil {
		return nil, err
	}
	ns, pod := p.namespace, p.name
	cfg := req.GetConfig()
	// ids are the image IDs judged: containerd is handed those, not names, so
	// that a tag moved after the judgement cannot swap what runs.
	id, err := e.judgeLocal(ctx, ns, pod, cfg.GetImage())
	if err != nil {
		return nil, err
	}
	rewrite := id != cfg.GetImage().GetImage()
	mountIDs := make([]string, len(cfg.GetMounts()))
	for i, m := range cfg.GetMounts() {
		if m.GetImage().GetImage() == "" {
			continue
		}
		if mountIDs[i], err = e.judgeLocal(ctx, ns, pod, m.GetImage()); err != nil {
			return nil, err
		}
		rewrite = rewrite || mountIDs[i] != m.GetImage().GetImage()
	}
	if rewrite {
		req = proto.CloneOf(req)
		pinImage(req.Config.Image, id)
		for i, m := range req.Config.Mounts {
			if mountIDs[i] != "" {
				pinImage(m.Image, mountIDs[i])
			}
		}
	}
	resp, err := next(ctx, req)
	if err != nil {
		e.metrics.upstreamError(OpCreateContainer)
	}
	return resp, err
}

// pinImage names an image by the ID that was judged, keeping the name the user
// asked for in user_specified_image (what runtimes show).
func pinImage(spec *runtimeapi.ImageSpec, id string) {
	if spec.GetImage() == id {
		return
	}
	if spec.UserSpecifiedImage == "" {
		spec.UserSpecifiedImage = spec.Image
	}
	spec.Image = id
}

// judgeLocal judges an image already on the node and returns its image ID.
//
// Which name is judged: containerd may know one image (one image ID) under
// several repositories. When kubelet says which one the user asked for
// (user_specified_image, or config.image itself when it is a reference) and
// containerd does know the image by that name (the tag among its tags, or the
// digest among its repository digests), that repository is judged, as the pull
// would have been; if containerd has no digest for it (imported, tagged
// locally) the image is judged as Local. The claim is checked because it comes
// from the client: an unsigned image's ID paired with the name of a repository
// an Allow rule admits must not run under that name. When nothing (true) says
// which name was meant, every name the image is known under must allow it: any
// of them could be the name a restrictive rule was written for, and the content
// is the same, so the strictest verdict is the safe one. Within one repository,
// any of its digests allowing suffices: they all name this same image content
// (same config, hence same layers).
func (e *Enforcer) judgeLocal(ctx context.Context, ns, pod string, spec *runtimeapi.ImageSpec) (string, error) {
	start := time.Now()
	image := spec.GetImage()
	if image == "" {
		d := policy.Decision{Reason: "the container names no image"}
		e.record(OpCreateContainer, ns, pod, image, d, start)
		return "", denial(codes.PermissionDenied, image, d)
	}
	var seen verdicts // denials reached on the remembered names: not asked again
	if img, ok := e.names.get(image, start); ok {
		if e.allowRemembered(ctx, ns, pod, spec, img, &seen, start) {
			return img.id, nil
		}
		// The remembered names do not settle it: ask containerd afresh.
	}
	img, err := e.imageStatus(ctx, spec, start)
	if err != nil {
		return "", err
	}
	candidates, err := e.candidates(ctx, ns, pod, spec, img, start)
	if err != nil {
		return "", err
	}
	for _, group := range candidates {
		if err := e.judgeGroup(ctx, ns, pod, group, &seen, start); err != nil {
			return "", err
		}
		start = time.Now()
	}
	if img.id == "" {
		// Without an ID the create cannot be pinned to what was judged: a tag
		// moved in between would swap what runs.
		d := policy.Decision{Image: image, Reason: "containerd gave no image ID for it, so criguard cannot pin the container to the image it judged"}
		e.record(OpCreateContainer, ns, pod, image, d, start)
		return "", denial(codes.PermissionDenied, image, d)
	}
	return img.id, nil
}

// imageStatus asks containerd for the image and remembers its names by ID.
func (e *Enforcer) imageStatus(ctx context.Context, spec *runtimeapi.ImageSpec, now time.Time) (*knownImage, error) {
	image := spec.GetImage()
	st, err := e.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{
		Image: image, Annotations: spec.GetAnnotations(), RuntimeHandler: spec.GetRuntimeHandler(),
	}})
	if err != nil {
		e.metrics.upstreamError(opImageStatus)
		return nil, status.Errorf(status.Code(err), "criguard: cannot judge image %q: looking it up in containerd failed: %v", image, status.Convert(err).Message())
	}
	if st.GetImage() == nil {
		return nil, status.Errorf(codes.NotFound, "criguard: image %q is not present on the node; pull it first", image)
	}
	img := newKnownImage(st.GetImage())
	if img.id == image {
		e.names.put(img, now)
	}
	return img, nil
}

// candidates are the groups of inputs to judge (see judgeLocal): every group
// must allow; within a group, any input allowing suffices.
func (e *Enforcer) candidates(ctx context.Context, ns, pod string, spec *runtimeapi.ImageSpec, img *knownImage, start time.Time) ([][]policy.Input, error) {
	image := spec.GetImage()
	asked := spec.GetUserSpecifiedImage()
	if asked == "" && !imageref.IsImageID(image) {
		asked = image
	}
	if asked != "" {
		ref, err := imageref.Parse(asked)
		if err != nil {
			d := policy.Decision{Image: asked, Reason: err.Error()}
			e.record(OpCreateContainer, ns, pod, asked, d, start)
			return nil, denial(codes.PermissionDenied, asked, d)
		}
		if img.knownAs(ref) {
			return [][]policy.Input{e.inputs(ns, pod, asked, ref, img.digestsFor(ref))}, nil
		}
		e.log.WarnContext(ctx, "the image is not known to containerd by the name the request claims; judging every name it has",
			"image", image, "claimed", asked, "repo_tags", img.rawTags, "repo_digests", img.rawDigests)
	}
	var out [][]policy.Input
	for _, repo := range img.order {
		name, ref := img.nameFor(repo)
		out = append(out, e.inputs(ns, pod, name, ref, img.groups[repo.Repository()]))
	}
	// Tags in repositories containerd holds no digest for are names too.
	for i, t := range img.rawTags {
		if r := img.tags[i]; r.IsZero() || len(img.groups[r.Repository()]) == 0 {
			out = append(out, e.inputs(ns, pod, t, r, nil))
		}
	}
	if len(out) == 0 { // no name at all: judged (and refused) by its ID
		out = append(out, e.inputs(ns, pod, img.id, imageref.Ref{}, nil))
	}
	return out, nil
}

// judgeGroup records one decision for a group of inputs naming the same
// repository: the first allow, else the first denial (an error).
func (e *Enforcer) judgeGroup(ctx context.Context, ns, pod string, group []policy.Input, seen *verdicts, start time.Time) error {
	in, d := e.firstAllow(ctx, group, seen)
	e.record(OpCreateContainer, ns, pod, in.Image, d, start)
	if d.Allowed {
		return nil
	}
	return denial(codes.PermissionDenied, in.Image, d)
}

// allowRemembered judges an image by the names remembered for its ID, and
// reports an allow only: the name the request claims must be among them and its
// repository must allow. Anything else (no claim, an unknown name, a denial) is
// left to a fresh lookup, which also records the decision; the denials reached
// here are kept in seen for it to reuse.
func (e *Enforcer) allowRemembered(ctx context.Context, ns, pod string, spec *runtimeapi.ImageSpec, img *knownImage, seen *verdicts, start time.Time) bool {
	asked := spec.GetUserSpecifiedImage()
	if asked == "" {
		return false
	}
	ref, err := imageref.Parse(asked)
	if err != nil || !img.knownAs(ref) {
		return false
	}
	in, d := e.firstAllow(ctx, e.inputs(ns, pod, asked, ref, img.digestsFor(ref)), seen)
	if !d.Allowed {
		return false
	}
	e.record(OpCreateContainer, ns, pod, in.Image, d, start)
	return true
}

// verdicts are the decisions already reached while judging one image, by
// input. A fresh lookup after the remembered names denied asks mostly the same
// questions; answering them again would cost a second verification (and
// registry round trip, and verification slot) per retry exactly when the
// registry is slow, as such denials are not cached by the engine. Only
// denials are kept, so reuse cannot admit anything.
type verdicts map[verdictKey]policy.Decision

// verdictKey is the whole input, its credentials by value (each input carries
// its own copy), so that only the very same question is answered from it.
type verdictKey struct {
	in      policy.Input // Auth nil
	auth    cosign.Auth
	hasAuth bool
}

func keyOf(in policy.Input) verdictKey {
	k := verdictKey{in: in}
	if in.Auth != nil {
		k.auth, k.hasAuth = *in.Auth, true
	}
	k.in.Auth = nil
	return k
}

// firstAllow evaluates group in order until an input is allowed, and returns
// that input and its decision, else the first input and its denial. Denials
// already in seen are reused, new ones added (the map made on the first: the
// usual allow allocates nothing).
func (e *Enforcer) firstAllow(ctx context.Context, group []policy.Input, seen *verdicts) (policy.Input, policy.Decision) {
	var first policy.Decision
	for i, in := range group {
		k := keyOf(in)
		d, ok := (*seen)[k]
		if !ok {
			d = e.judge.Evaluate(ctx, in)
			if !d.Allowed {
				if *seen == nil {
					*seen = make(verdicts)
				}
				(*seen)[k] = d
			}
		}
		if d.Allowed {
			return in, d
		}
		if i == 0 {
			first = d
		}
	}
	return group[0], first
}
