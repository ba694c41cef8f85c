package enforce

import (
	"context"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criguard/criguard/criproxy/forward"
	"github.com/criguard/criguard/verifier/cosign"
)

// FuzzEnforcerImageNames feeds arbitrary image names (as kubelet or a hostile
// CRI client could send them) through PullImage and CreateContainer: never a
// panic; a refusal always carries the kubelet prefix; an allowed pull always
// goes upstream pinned to the judged digest.
func FuzzEnforcerImageNames(f *testing.F) {
	for _, s := range []string{"busybox", "127.0.0.1:5000/a/b:1.0", "a/b@" + dgA, "a:b@" + dgB, imID, "", "UPPER", "a//b", "x:y:z", strings.Repeat("a/", 200)} {
		f.Add(s, s, s)
	}
	f.Fuzz(func(t *testing.T, image, asked, repoDigest string) {
		r := newRig(t, allowAs(dgA))
		var pulled *runtimeapi.PullImageRequest
		_, err := r.e.PullImage(context.Background(), pullReq(image, nil), recordingPull(&pulled))
		if err != nil {
			if pulled != nil {
				t.Fatalf("refused %q but forwarded it", image)
			}
			if st := status.Convert(err); st.Code() != codes.Unknown || !strings.HasPrefix(st.Message(), forward.DeniedPrefix) {
				t.Fatalf("refusal of %q: %v", image, err)
			}
		} else {
			judged := r.judge.inputs[0].Digest // allowAs keeps a pinned digest, else resolves to dgA
			if judged == "" {
				judged = dgA
			}
			if !strings.HasSuffix(pulled.GetImage().GetImage(), "@"+judged) {
				t.Fatalf("allowed %q forwarded as %q, not pinned to %s", image, pulled.GetImage().GetImage(), judged)
			}
		}

		r.images.images[image] = &runtimeapi.Image{Id: imID, RepoTags: []string{asked}, RepoDigests: []string{repoDigest}}
		called := false
		_, err = r.e.CreateContainer(context.Background(), createReq(image, asked), okCreate(&called))
		if err != nil && called {
			t.Fatalf("create of %q refused (%v) but forwarded", image, err)
		}
		if st := status.Convert(err); err != nil && st.Code() == codes.PermissionDenied && !strings.HasPrefix(st.Message(), forward.DeniedPrefix) {
			t.Fatalf("refusal without the prefix: %v", err)
		}
	})
}

func TestCredentialsConcurrent(t *testing.T) {
	c := NewCredentials(4)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			host := string(rune('a' + i))
			for range 200 {
				c.Remember("ns", host, &cosign.Auth{Username: host})
				if a := c.For("ns", host); a != nil && a.Username != host {
					t.Errorf("host %s got %s's credentials", host, a.Username)
				}
			}
		}()
	}
	wg.Wait()
	if c.Len() > 4 {
		t.Errorf("Len %d over the bound", c.Len())
	}
}
