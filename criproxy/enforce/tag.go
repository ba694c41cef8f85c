package enforce

import (
	"context"
	"errors"
	"fmt"
	"maps"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
)

// CRINamespace is the containerd namespace that containerd's CRI plugin keeps
// kubelet's images in.
const CRINamespace = "k8s.io"

// Tagger records an image reference (name:tag) for content already present under
// a digest reference (name@digest). PullImage forwards only digest pulls, so
// without this `crictl images` and kubelet's IfNotPresent lookups would not find
// the tag kubelet asked for.
type Tagger interface {
	Tag(ctx context.Context, tagRef, digestRef string) error
}

// ContainerdTagger tags through containerd's own image store (the API that
// `ctr -n k8s.io images tag` uses). containerd's CRI plugin learns of the new
// record from the image event it emits, as it does for `ctr` tags.
type ContainerdTagger struct {
	store     images.Store
	namespace string
}

// NewContainerdTagger speaks containerd's image API over conn, which must use
// gRPC's default (protobuf) codec, in the CRI namespace.
func NewContainerdTagger(conn *grpc.ClientConn) (*ContainerdTagger, error) {
	c, err := containerd.NewWithConn(conn)
	if err != nil {
		return nil, fmt.Errorf("containerd image client: %w", err)
	}
	return &ContainerdTagger{store: c.ImageService(), namespace: CRINamespace}, nil
}

// NewTaggerForStore tags through any images.Store (tests, other namespaces).
func NewTaggerForStore(store images.Store, namespace string) *ContainerdTagger {
	return &ContainerdTagger{store: store, namespace: namespace}
}

// Tag points tagRef at the content of digestRef, copying the digest record's
// labels (containerd's CRI plugin marks its images with them) and moving the tag
// if it already named other content.
func (t *ContainerdTagger) Tag(ctx context.Context, tagRef, digestRef string) error {
	ctx = namespaces.WithNamespace(ctx, t.namespace)
	src, err := t.store.Get(ctx, digestRef)
	if err != nil {
		return fmt.Errorf("look up %s in containerd namespace %s: %w", digestRef, t.namespace, err)
	}
	img := images.Image{Name: tagRef, Labels: maps.Clone(src.Labels), Target: src.Target}
	if _, err := t.store.Create(ctx, img); err == nil {
		return nil
	} else if !errors.Is(err, errdefs.ErrAlreadyExists) {
		return fmt.Errorf("create image %s -> %s: %w", tagRef, src.Target.Digest, err)
	}
	cur, err := t.store.Get(ctx, tagRef)
	if err == nil && cur.Target.Digest == src.Target.Digest && cur.Target.MediaType == src.Target.MediaType {
		return nil // already right: no needless image event
	}
	if _, err := t.store.Update(ctx, img, "target", "labels"); err != nil {
		return fmt.Errorf("move image %s -> %s: %w", tagRef, src.Target.Digest, err)
	}
	return nil
}
