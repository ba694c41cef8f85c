package criproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/distribution/reference"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criguard/criguard/verifier/policy"
)

// DeniedPrefix starts every denial message: kubelet turns it into the pod's
// waiting reason (ErrSignatureValidationFailed), so `kubectl get pod` shows it.
const DeniedPrefix = "SignatureValidationFailed: "

// Judge decides one image under the node's current policy (policy.Engine does,
// with its verdict cache). It must fail closed: any error is a denial.
type Judge interface {
	Evaluate(ctx context.Context, in policy.Input) policy.Decision
}

// ImageStatuser looks images up in the upstream runtime;
// runtimeapi.NewImageServiceClient(conn) is one.
type ImageStatuser interface {
	ImageStatus(ctx context.Context, in *runtimeapi.ImageStatusRequest, opts ...grpc.CallOption) (*runtimeapi.ImageStatusResponse, error)
}

// EnforcerConfig holds what an Enforcer needs.
type EnforcerConfig struct {
	Judge  Judge         // required
	Images ImageStatuser // required: ImageStatus calls to containerd
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
	judge   Judge
	images  ImageStatuser
	tagger  Tagger
	creds   *Credentials
	metrics *Metrics
	log     *slog.Logger
	tagWait time.Duration
	names   *imageNames // nil: every CreateContainer asks containerd
}

var _ Guard = (*Enforcer)(nil)

// NewEnforcer checks cfg and returns the Guard.
func NewEnforcer(cfg EnforcerConfig) (*Enforcer, error) {
	if cfg.Judge == nil {
		return nil, errors.New("criproxy: enforcer needs a policy judge")
	}
	if cfg.Images == nil {
		return nil, errors.New("criproxy: enforcer needs an upstream image service for ImageStatus")
	}
	e := &Enforcer{judge: cfg.Judge, images: cfg.Images, tagger: cfg.Tagger, creds: cfg.Credentials, metrics: cfg.Metrics, log: cfg.Logger, tagWait: cfg.TagVisibleTimeout}
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

// Refused counts a call the server refused before the Guard saw it.
func (e *Enforcer) Refused(reason string) { e.metrics.refused(reason) }

// imageRef is a parsed, Docker-normalized image reference.
type imageRef struct {
	name   string // repository, e.g. docker.io/library/busybox
	host   string // registry host, e.g. docker.io
	tag    string // tag, "latest" when neither tag nor digest was written
	digest string // digest when written
}

func parseImageRef(s string) (imageRef, error) {
	if isImageID(s) {
		return imageRef{}, fmt.Errorf("%q is an image ID, not a reference to a repository", s)
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return imageRef{}, fmt.Errorf("invalid image reference %q: %w", s, err)
	}
	r := imageRef{name: named.Name(), host: reference.Domain(named)}
	if t, ok := named.(reference.Tagged); ok {
		r.tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		r.digest = d.Digest().String()
	}
	if r.tag == "" && r.digest == "" {
		r.tag = "latest" // as containerd records an untagged pull
	}
	return r, nil
}

// isImageID reports whether s is an image ID (sha256:<64 hex>, or the bare hex)
// rather than a reference.
func isImageID(s string) bool {
	h := strings.TrimPrefix(s, "sha256:")
	if len(h) != 64 {
		return false
	}
	for _, c := range h {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func podOf(c *runtimeapi.PodSandboxConfig) (namespace, pod string) {
	m := c.GetMetadata()
	return m.GetNamespace(), m.GetName()
}

// PullImage judges the reference kubelet asked for and, on allow, pulls exactly
// the digest that was judged (never the tag), then records kubelet's tag for it.
func (e *Enforcer) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest, next PullFunc) (*runtimeapi.PullImageResponse, error) {
	start := time.Now()
	raw := req.GetImage().GetImage()
	ns, pod := podOf(req.GetSandboxConfig())
	ref, err := parseImageRef(raw)
	if err != nil {
		d := policy.Decision{Image: raw, Reason: err.Error()}
		e.record(OpPullImage, ns, pod, raw, d, start)
		return nil, denial(codes.Unknown, raw, d)
	}
	auth := authFromCRI(req.GetAuth())
	if auth != nil {
		e.creds.Remember(ref.host, auth)
	}
	d := e.judge.Evaluate(ctx, policy.Input{
		Operation: OpPullImage, Image: raw, Digest: ref.digest,
		Namespace: ns, Pod: pod, Auth: auth,
	})
	d = checkDigest(d, ref.digest)
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
	digestRef := ref.name + "@" + d.Digest
	fwd := proto.CloneOf(req)
	fwd.Image.Image = digestRef
	resp, err := next(ctx, fwd)
	if err != nil {
		e.metrics.upstreamError(OpPullImage)
		return nil, err
	}
	if ref.tag != "" && ref.digest == "" && e.tagger != nil {
		tagRef := ref.name + ":" + ref.tag
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

// checkDigest fails closed when an allow names another digest than the one
// the request pinned.
func checkDigest(d policy.Decision, pinned string) policy.Decision {
	if !d.Allowed {
		return d
	}
	if pinned != "" && d.Digest != pinned {
		d.Allowed, d.Audited, d.FailedOpen = false, false, false
		d.Reason = fmt.Sprintf("the policy engine judged digest %s but the request pinned %s", d.Digest, pinned)
	}
	return d
}

// CreateContainer requires an allow for the container's image and every image
// volume, judged by the repository digests containerd holds for them.
func (e *Enforcer) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest, next CreateFunc) (*runtimeapi.CreateContainerResponse, error) {
	ns, pod := podOf(req.GetSandboxConfig())
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
	if img, ok := e.names.get(image, start); ok {
		if id, allowed := e.allowRemembered(ctx, ns, pod, spec, img, start); allowed {
			return id, nil
		}
		// The remembered names do not settle it: ask containerd afresh.
	}
	st, err := e.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{
		Image: image, Annotations: spec.GetAnnotations(), RuntimeHandler: spec.GetRuntimeHandler(),
	}})
	if err != nil {
		e.metrics.upstreamError(opImageStatus)
		return "", status.Errorf(status.Code(err), "criguard: cannot judge image %q: looking it up in containerd failed: %v", image, status.Convert(err).Message())
	}
	img := st.GetImage()
	if img == nil {
		return "", status.Errorf(codes.NotFound, "criguard: image %q is not present on the node; pull it first", image)
	}
	if img.GetId() == image {
		e.names.put(img, start)
	}

	asked := spec.GetUserSpecifiedImage()
	if asked == "" && !isImageID(image) {
		asked = image
	}
	groups, order := repoDigestGroups(img.GetRepoDigests())
	var candidates [][]policy.Input // every group must allow; within a group, any
	if asked != "" {
		ref, err := parseImageRef(asked)
		if err != nil {
			d := policy.Decision{Image: asked, Reason: err.Error()}
			e.record(OpCreateContainer, ns, pod, asked, d, start)
			return "", denial(codes.PermissionDenied, asked, d)
		}
		if claimHolds(ref, img.GetRepoTags(), groups) {
			digests := groups[ref.name]
			if ref.digest != "" {
				digests = []string{ref.digest}
			}
			candidates = append(candidates, e.inputs(ns, pod, asked, ref.host, digests))
		} else {
			e.log.WarnContext(ctx, "the image is not known to containerd by the name the request claims; judging every name it has",
				"image", image, "claimed", asked, "repo_tags", img.GetRepoTags(), "repo_digests", img.GetRepoDigests())
			asked = ""
		}
	}
	if asked == "" {
		for _, name := range order {
			candidates = append(candidates, e.inputs(ns, pod, nameForGroup(name, img.GetRepoTags()), hostOf(name), groups[name]))
		}
		// Tags in repositories containerd holds no digest for are names too.
		for _, t := range img.GetRepoTags() {
			if r, err := parseImageRef(t); err != nil || len(groups[r.name]) == 0 {
				candidates = append(candidates, e.inputs(ns, pod, t, "", nil))
			}
		}
		if len(candidates) == 0 { // no name at all: judged (and refused) by its ID
			candidates = append(candidates, e.inputs(ns, pod, img.GetId(), "", nil))
		}
	}

	for _, group := range candidates {
		// One decision is recorded per group: the allow, else the first denial.
		var first policy.Decision
		allowed := false
		for i, in := range group {
			d := e.judge.Evaluate(ctx, in)
			if !in.Local && d.Allowed && d.Digest != in.Digest {
				d.Allowed, d.Audited, d.FailedOpen = false, false, false
				d.Reason = fmt.Sprintf("the policy engine judged digest %s instead of the image's %s", d.Digest, in.Digest)
			}
			if d.Allowed {
				e.record(OpCreateContainer, ns, pod, in.Image, d, start)
				allowed = true
				break
			}
			if i == 0 {
				first = d
			}
		}
		if !allowed {
			e.record(OpCreateContainer, ns, pod, group[0].Image, first, start)
			return "", denial(codes.PermissionDenied, group[0].Image, first)
		}
		start = time.Now()
	}
	if img.GetId() == "" {
		// Without an ID the create cannot be pinned to what was judged: a tag
		// moved in between would swap what runs.
		d := policy.Decision{Image: image, Reason: "containerd gave no image ID for it, so criguard cannot pin the container to the image it judged"}
		e.record(OpCreateContainer, ns, pod, image, d, start)
		return "", denial(codes.PermissionDenied, image, d)
	}
	return img.GetId(), nil
}

// allowRemembered judges an image by the names remembered for its ID, and
// reports an allow only: the name the request claims must be among them and its
// repository must allow. Anything else (no claim, an unknown name, a denial) is
// left to a fresh lookup, which also records the decision.
func (e *Enforcer) allowRemembered(ctx context.Context, ns, pod string, spec *runtimeapi.ImageSpec, img *runtimeapi.Image, start time.Time) (string, bool) {
	asked := spec.GetUserSpecifiedImage()
	if asked == "" {
		return "", false
	}
	ref, err := parseImageRef(asked)
	if err != nil {
		return "", false
	}
	groups, _ := repoDigestGroups(img.GetRepoDigests())
	if !claimHolds(ref, img.GetRepoTags(), groups) {
		return "", false
	}
	digests := groups[ref.name]
	if ref.digest != "" {
		digests = []string{ref.digest}
	}
	for _, in := range e.inputs(ns, pod, asked, ref.host, digests) {
		d := e.judge.Evaluate(ctx, in)
		if d.Allowed && (in.Local || d.Digest == in.Digest) {
			e.record(OpCreateContainer, ns, pod, in.Image, d, start)
			return img.GetId(), true
		}
	}
	return "", false
}

// inputs builds one policy input per repository digest, or a Local one when there is none.
func (e *Enforcer) inputs(ns, pod, image, host string, digests []string) []policy.Input {
	var auth = e.creds.For(host)
	if len(digests) == 0 {
		return []policy.Input{{Operation: OpCreateContainer, Image: image, Local: true, Namespace: ns, Pod: pod}}
	}
	out := make([]policy.Input, 0, len(digests))
	for _, dg := range digests {
		out = append(out, policy.Input{Operation: OpCreateContainer, Image: image, Digest: dg, Namespace: ns, Pod: pod, Auth: auth})
	}
	return out
}

// repoDigestGroups groups "repo@digest" strings by normalized repository,
// keeping first-seen order. Unparsable entries are dropped: they cannot be judged.
func repoDigestGroups(repoDigests []string) (map[string][]string, []string) {
	groups := make(map[string][]string, len(repoDigests))
	var order []string
	for _, rd := range repoDigests {
		named, err := reference.ParseNormalizedNamed(rd)
		if err != nil {
			continue
		}
		dg, ok := named.(reference.Digested)
		if !ok {
			continue
		}
		name := named.Name()
		if _, seen := groups[name]; !seen {
			order = append(order, name)
		}
		groups[name] = append(groups[name], dg.Digest().String())
	}
	return groups, order
}

// nameForGroup prefers a tag of the repository (what policies' patterns are
// usually written against), else the bare repository name.
func nameForGroup(name string, repoTags []string) string {
	for _, t := range repoTags {
		if named, err := reference.ParseNormalizedNamed(t); err == nil && named.Name() == name {
			return t
		}
	}
	return name
}

// claimHolds reports whether containerd knows the image by ref: its digest
// among the repository's digests, else its tag among the image's tags.
func claimHolds(ref imageRef, repoTags []string, groups map[string][]string) bool {
	if ref.digest != "" {
		return contains(groups[ref.name], ref.digest)
	}
	for _, t := range repoTags {
		if r, err := parseImageRef(t); err == nil && r.name == ref.name && r.tag == ref.tag && r.digest == "" {
			return true
		}
	}
	return false
}

func hostOf(name string) string {
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return ""
	}
	return reference.Domain(named)
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// denial is the error kubelet sees: the prefix it maps to the pod's reason, then
// what was judged and why.
func denial(code codes.Code, image string, d policy.Decision) error {
	if d.Image != "" {
		image = d.Image
	}
	dg := d.Digest
	if dg == "" {
		dg = "unresolved"
	}
	pol, rule := d.Policy, d.Rule
	if pol == "" {
		pol = "-"
	}
	if rule == "" {
		rule = "-"
	}
	reason := d.Reason
	if reason == "" {
		reason = "denied"
	}
	return status.Errorf(code, "%simage %s (digest %s) denied by policy %s rule %s: %s", DeniedPrefix, image, dg, pol, rule, reason)
}

// record logs one decision and counts it.
func (e *Enforcer) record(op, ns, pod, image string, d policy.Decision, start time.Time) {
	dur := time.Since(start)
	if d.Image == "" {
		d.Image = image
	}
	result := ResultDeny
	switch {
	case d.Allowed && d.FailedOpen:
		result = ResultFailedOpen
	case d.Allowed && d.Audited:
		result = ResultAudit
	case d.Allowed:
		result = ResultAllow
	}
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
