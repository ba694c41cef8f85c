package attest

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// predicateTypes are cosign's --type names for `verify-attestation` and the
// predicate type URIs they stand for (cosign's options.PredicateTypeMap).
var predicateTypes = map[string]string{
	"custom":           "https://cosign.sigstore.dev/attestation/v1",
	"slsaprovenance":   "https://slsa.dev/provenance/v0.2",
	"slsaprovenance02": "https://slsa.dev/provenance/v0.2",
	"slsaprovenance1":  "https://slsa.dev/provenance/v1",
	"spdx":             "https://spdx.dev/Document",
	"spdxjson":         "https://spdx.dev/Document",
	"cyclonedx":        "https://cyclonedx.org/bom",
	"link":             "https://in-toto.io/Link/v1",
	"vuln":             "https://cosign.sigstore.dev/attestation/vuln/v1",
	"openvex":          "https://openvex.dev/ns",
}

// PredicateType resolves a cosign --type (or Kyverno `type`): a known name,
// or a predicate type URI used as is.
func PredicateType(name string) (string, error) {
	if uri, ok := predicateTypes[strings.ToLower(name)]; ok {
		return uri, nil
	}
	if u, err := url.Parse(name); err == nil && u.Scheme != "" && u.Host != "" {
		return name, nil
	}
	names := make([]string, 0, len(predicateTypes))
	for n := range predicateTypes {
		names = append(names, n)
	}
	sort.Strings(names)
	return "", fmt.Errorf("attestation type %q is neither one of cosign's (%s) nor a predicate type URI", name, strings.Join(names, ", "))
}
