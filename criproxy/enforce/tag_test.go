package enforce

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Digests and an image ID shared by this package's tests.
const (
	dgA  = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	dgB  = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	imID = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	reg  = "127.0.0.1:5000"
)

// memImages is an images.Store in memory, keyed by namespace and name.
type memImages struct {
	mu      sync.Mutex
	imgs    map[string]images.Image
	creates int
	updates int
}

func (m *memImages) key(ctx context.Context, name string) (string, error) {
	ns, ok := namespaces.Namespace(ctx)
	if !ok {
		return "", fmt.Errorf("no namespace: %w", errdefs.ErrFailedPrecondition)
	}
	return ns + "/" + name, nil
}

func (m *memImages) Get(ctx context.Context, name string) (images.Image, error) {
	k, err := m.key(ctx, name)
	if err != nil {
		return images.Image{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	img, ok := m.imgs[k]
	if !ok {
		return images.Image{}, fmt.Errorf("image %q: %w", name, errdefs.ErrNotFound)
	}
	return img, nil
}

func (m *memImages) List(context.Context, ...string) ([]images.Image, error) { return nil, nil }

func (m *memImages) Create(ctx context.Context, img images.Image) (images.Image, error) {
	k, err := m.key(ctx, img.Name)
	if err != nil {
		return images.Image{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.imgs[k]; ok {
		return images.Image{}, fmt.Errorf("image %q: %w", img.Name, errdefs.ErrAlreadyExists)
	}
	m.creates++
	m.imgs[k] = img
	return img, nil
}

func (m *memImages) Update(ctx context.Context, img images.Image, _ ...string) (images.Image, error) {
	k, err := m.key(ctx, img.Name)
	if err != nil {
		return images.Image{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.updates++
	m.imgs[k] = img
	return img, nil
}

func (m *memImages) Delete(context.Context, string, ...images.DeleteOpt) error { return nil }

func TestContainerdTagger(t *testing.T) {
	ctx := context.Background()
	target := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: dgA, Size: 1}
	other := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: dgB, Size: 2}
	labels := map[string]string{"io.cri-containerd.image": "managed"}
	store := &memImages{imgs: map[string]images.Image{
		"k8s.io/r/app@" + dgA: {Name: "r/app@" + dgA, Target: target, Labels: labels},
		"k8s.io/r/app@" + dgB: {Name: "r/app@" + dgB, Target: other, Labels: labels},
	}}
	tg := NewTaggerForStore(store, CRINamespace)

	steps := []struct {
		digestRef                string
		wantCreates, wantUpdates int
		wantTarget               ocispec.Descriptor
	}{
		{"r/app@" + dgA, 1, 0, target}, // new tag
		{"r/app@" + dgA, 1, 0, target}, // already right: untouched
		{"r/app@" + dgB, 1, 1, other},  // tag moved to the newly pulled digest
	}
	for i, s := range steps {
		if err := tg.Tag(ctx, "r/app:1.0", s.digestRef); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		got := store.imgs["k8s.io/r/app:1.0"]
		if got.Target.Digest != s.wantTarget.Digest || got.Target.Size != s.wantTarget.Size || got.Labels["io.cri-containerd.image"] != "managed" {
			t.Errorf("step %d: tag record = %+v", i, got)
		}
		if store.creates != s.wantCreates || store.updates != s.wantUpdates {
			t.Errorf("step %d: creates/updates = %d/%d, want %d/%d", i, store.creates, store.updates, s.wantCreates, s.wantUpdates)
		}
	}
	// Labels are copied, not shared with the source record.
	store.imgs["k8s.io/r/app:1.0"].Labels["x"] = "y"
	if _, ok := labels["x"]; ok {
		t.Error("tag record shares the digest record's label map")
	}
	if err := tg.Tag(ctx, "r/app:2.0", "r/app@sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"); !errdefs.IsNotFound(err) {
		t.Errorf("tagging a digest containerd does not have: %v, want NotFound", err)
	}
}
