package policysync

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/discovery"
)

// KyvernoInstalled asks the API server's discovery whether kyverno.io/v1
// serves clusterpolicies and policies.
func KyvernoInstalled(d discovery.DiscoveryInterface) func(context.Context) (bool, error) {
	return func(context.Context) (bool, error) {
		list, err := d.ServerResourcesForGroupVersion("kyverno.io/v1")
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("discover kyverno.io/v1: %w", err)
		}
		found := 0
		for _, r := range list.APIResources {
			if r.Name == KyvernoClusterPolicy.Resource || r.Name == KyvernoPolicy.Resource {
				found++
			}
		}
		return found == 2, nil
	}
}
