package policy

import (
	"encoding/json"

	"github.com/criguard/criguard/verifier/attest"
)

// Kyverno's kyverno.io/v1 (and v2beta1) ClusterPolicy/Policy, with the fields
// of api/kyverno/v1 that can appear in a verifyImages policy. Fields criguard
// cannot honour are still declared so that the compiler can name them in its
// refusal; fields of other rule types are kept raw (json.RawMessage) because
// those rules are skipped whole.

type kyvernoDoc struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   json.RawMessage `json:"metadata"`
	Spec       kyvernoSpec     `json:"spec"`
	Status     json.RawMessage `json:"status"`
}

type kyvernoSpec struct {
	Rules                            []kyvernoRule                `json:"rules"`
	ApplyRules                       string                       `json:"applyRules"`
	FailurePolicy                    string                       `json:"failurePolicy"`
	ValidationFailureAction          string                       `json:"validationFailureAction"`
	ValidationFailureActionOverrides []kyvernoActionOverride      `json:"validationFailureActionOverrides"`
	EmitWarning                      *bool                        `json:"emitWarning"`
	Admission                        *bool                        `json:"admission"`
	Background                       *bool                        `json:"background"`
	SchemaValidation                 *bool                        `json:"schemaValidation"`
	WebhookTimeoutSeconds            *int                         `json:"webhookTimeoutSeconds"`
	MutateExistingOnPolicyUpdate     *bool                        `json:"mutateExistingOnPolicyUpdate"`
	GenerateExistingOnPolicyUpdate   *bool                        `json:"generateExistingOnPolicyUpdate"`
	GenerateExisting                 *bool                        `json:"generateExisting"`
	UseServerSideApply               *bool                        `json:"useServerSideApply"`
	WebhookConfiguration             *kyvernoWebhookConfiguration `json:"webhookConfiguration"`
}

type kyvernoActionOverride struct {
	Action            string          `json:"action"`
	Namespaces        []string        `json:"namespaces"`
	NamespaceSelector json.RawMessage `json:"namespaceSelector"`
}

type kyvernoWebhookConfiguration struct {
	FailurePolicy   string          `json:"failurePolicy"`
	TimeoutSeconds  *int            `json:"timeoutSeconds"`
	MatchConditions json.RawMessage `json:"matchConditions"`
}

type kyvernoRule struct {
	Name                   string                `json:"name"`
	Context                json.RawMessage       `json:"context"`
	ReportProperties       map[string]string     `json:"reportProperties"`
	MatchResources         *kyvernoMatch         `json:"match"`
	ExcludeResources       *kyvernoMatch         `json:"exclude"`
	ImageExtractors        json.RawMessage       `json:"imageExtractors"`
	Preconditions          json.RawMessage       `json:"preconditions"`
	CELPreconditions       json.RawMessage       `json:"celPreconditions"`
	Mutation               json.RawMessage       `json:"mutate"`
	Validation             json.RawMessage       `json:"validate"`
	Generation             json.RawMessage       `json:"generate"`
	VerifyImages           []kyvernoVerifyImages `json:"verifyImages"`
	SkipBackgroundRequests *bool                 `json:"skipBackgroundRequests"`
}

type kyvernoMatch struct {
	Any             []kyvernoFilter `json:"any"`
	All             []kyvernoFilter `json:"all"`
	kyvernoUserInfo `json:",inline"`
	Resources       *kyvernoResources `json:"resources"`
}

type kyvernoFilter struct {
	kyvernoUserInfo `json:",inline"`
	Resources       *kyvernoResources `json:"resources"`
}

type kyvernoUserInfo struct {
	Roles        []string        `json:"roles"`
	ClusterRoles []string        `json:"clusterRoles"`
	Subjects     json.RawMessage `json:"subjects"`
}

type kyvernoResources struct {
	Kinds             []string          `json:"kinds"`
	Name              string            `json:"name"`
	Names             []string          `json:"names"`
	Namespaces        []string          `json:"namespaces"`
	Annotations       map[string]string `json:"annotations"`
	Selector          json.RawMessage   `json:"selector"`
	NamespaceSelector json.RawMessage   `json:"namespaceSelector"`
	Operations        []string          `json:"operations"`
}

type kyvernoVerifyImages struct {
	FailureAction            string                      `json:"failureAction"`
	Type                     string                      `json:"type"`
	Image                    string                      `json:"image"`
	ImageReferences          []string                    `json:"imageReferences"`
	SkipImageReferences      []string                    `json:"skipImageReferences"`
	Key                      string                      `json:"key"`
	Roots                    string                      `json:"roots"`
	Subject                  string                      `json:"subject"`
	Issuer                   string                      `json:"issuer"`
	AdditionalExtensions     map[string]string           `json:"additionalExtensions"`
	Attestors                []kyvernoAttestorSet        `json:"attestors"`
	Attestations             []kyvernoAttestation        `json:"attestations"`
	Annotations              map[string]string           `json:"annotations"`
	Repository               string                      `json:"repository"`
	CosignOCI11              *bool                       `json:"cosignOCI11"`
	MutateDigest             *bool                       `json:"mutateDigest"`
	VerifyDigest             *bool                       `json:"verifyDigest"`
	Validation               json.RawMessage             `json:"validate"`
	Required                 *bool                       `json:"required"`
	ImageRegistryCredentials *kyvernoRegistryCredentials `json:"imageRegistryCredentials"`
	UseCache                 *bool                       `json:"useCache"`
}

type kyvernoRegistryCredentials struct {
	AllowInsecureRegistry *bool    `json:"allowInsecureRegistry"`
	Providers             []string `json:"providers"`
	Secrets               []string `json:"secrets"`
}

type kyvernoAttestorSet struct {
	Count   *int              `json:"count"`
	Entries []kyvernoAttestor `json:"entries"`
}

type kyvernoAttestor struct {
	Keys               *kyvernoStaticKey    `json:"keys"`
	Certificates       *kyvernoCertificates `json:"certificates"`
	Keyless            *kyvernoKeyless      `json:"keyless"`
	Attestor           json.RawMessage      `json:"attestor"`
	Annotations        map[string]string    `json:"annotations"`
	Repository         string               `json:"repository"`
	SignatureAlgorithm string               `json:"signatureAlgorithm"`
}

type kyvernoStaticKey struct {
	PublicKeys         string          `json:"publicKeys"`
	SignatureAlgorithm string          `json:"signatureAlgorithm"`
	KMS                string          `json:"kms"`
	Secret             json.RawMessage `json:"secret"`
	Rekor              *kyvernoRekor   `json:"rekor"`
	CTLog              *kyvernoCTLog   `json:"ctlog"`
}

type kyvernoRekor struct {
	URL         string `json:"url"`
	RekorPubKey string `json:"pubkey"`
	IgnoreTlog  *bool  `json:"ignoreTlog"`
}

type kyvernoCTLog struct {
	IgnoreSCT    *bool  `json:"ignoreSCT"`
	CTLogPubKey  string `json:"pubkey"`
	TSACertChain string `json:"tsaCertChain"`
}

type kyvernoKeyless struct {
	Rekor                *kyvernoRekor     `json:"rekor"`
	CTLog                *kyvernoCTLog     `json:"ctlog"`
	Issuer               string            `json:"issuer"`
	IssuerRegExp         string            `json:"issuerRegExp"`
	Subject              string            `json:"subject"`
	SubjectRegExp        string            `json:"subjectRegExp"`
	Roots                string            `json:"roots"`
	AdditionalExtensions map[string]string `json:"additionalExtensions"`
}

type kyvernoCertificates struct {
	Certificate      string        `json:"cert"`
	CertificateChain string        `json:"certChain"`
	Rekor            *kyvernoRekor `json:"rekor"`
	CTLog            *kyvernoCTLog `json:"ctlog"`
}

type kyvernoAttestation struct {
	Name          string                    `json:"name"`
	Type          string                    `json:"type"`
	PredicateType string                    `json:"predicateType"`
	Attestors     []kyvernoAttestorSet      `json:"attestors"`
	Conditions    []attest.AnyAllConditions `json:"conditions"`
}
