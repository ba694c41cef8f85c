package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"

	"github.com/criguard/criguard/verifier/attest"
	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/keys"
	"github.com/criguard/criguard/verifier/policy"
	"github.com/criguard/criguard/verifier/sigverify"
)

// verifyConfig is everything `criguard verify` is configured with. Add a field
// here and its flag in register; build turns it into a judge.
type verifyConfig struct {
	// attestation is true for `criguard verify-attestation`; predicateType
	// is its --type.
	attestation   bool
	predicateType string
	keyFiles      fileList
	// Keyless identity and the Sigstore checks, with cosign's flag names.
	identity, identityRegexp, issuer, issuerRegexp string
	workflow                                       certificate.Extensions
	trustedRoot                                    string
	ignoreTlog, ignoreSCT                          bool
	algorithm                                      string
	count                                          int
	output                                         string
	sigRepo                                        string
	timeout                                        time.Duration
	maxSignatures                                  int
	images                                         []string
	// policyPath, when set, judges images through the policy engine as
	// `criguard serve --policy` does, instead of against --key.
	policyPath string
	namespace  string
	timeoutSet bool // --timeout given explicitly
}

// fileList is the repeatable --key flag.
type fileList []string

func (s *fileList) String() string     { return strings.Join(*s, ",") }
func (s *fileList) Set(v string) error { *s = append(*s, v); return nil }

func (c *verifyConfig) register(fs *flag.FlagSet) {
	fs.Var(&c.keyFiles, "key", "trusted PEM public key file (repeatable): ECDSA P-256/384/521, RSA >= 2048 bits, Ed25519; a transparency-log entry is required unless --insecure-ignore-tlog")
	fs.StringVar(&c.identity, "certificate-identity", "", "keyless: the signing certificate's identity (SAN: email, URI) must equal this")
	fs.StringVar(&c.identityRegexp, "certificate-identity-regexp", "", "keyless: the certificate's identity must match this Go regular expression (unanchored)")
	fs.StringVar(&c.issuer, "certificate-oidc-issuer", "", "keyless: the certificate's OIDC issuer must equal this")
	fs.StringVar(&c.issuerRegexp, "certificate-oidc-issuer-regexp", "", "keyless: the certificate's OIDC issuer must match this Go regular expression (unanchored)")
	fs.StringVar(&c.workflow.GithubWorkflowTrigger, "certificate-github-workflow-trigger", "", "keyless: the certificate's GitHub workflow trigger must equal this")
	fs.StringVar(&c.workflow.GithubWorkflowSHA, "certificate-github-workflow-sha", "", "keyless: the certificate's GitHub workflow commit SHA must equal this")
	fs.StringVar(&c.workflow.GithubWorkflowName, "certificate-github-workflow-name", "", "keyless: the certificate's GitHub workflow name must equal this")
	fs.StringVar(&c.workflow.GithubWorkflowRepository, "certificate-github-workflow-repository", "", "keyless: the certificate's GitHub workflow repository must equal this")
	fs.StringVar(&c.workflow.GithubWorkflowRef, "certificate-github-workflow-ref", "", "keyless: the certificate's GitHub workflow ref must equal this")
	fs.StringVar(&c.trustedRoot, "trusted-root", "", "Sigstore trusted root (trusted_root.json) for transparency-log entries, timestamps and Fulcio certificates (default: the embedded public-good root)")
	fs.BoolVar(&c.ignoreTlog, "insecure-ignore-tlog", false, "do not require a transparency-log entry (keyless then needs an RFC 3161 timestamp)")
	fs.BoolVar(&c.ignoreSCT, "insecure-ignore-sct", false, "keyless: do not check the certificate's embedded SCT")
	fs.StringVar(&c.algorithm, "signature-algorithm", "", "signature algorithm of the keys: sha256 (default), sha384, sha512, rsa-pss-sha256/384/512")
	fs.IntVar(&c.count, "count", 0, "how many of the keys must each verify a signature (0: all of them)")
	fs.StringVar(&c.output, "output", "text", "output format: text or json")
	fs.StringVar(&c.sigRepo, "signature-repository", "", "repository holding the signatures instead of the image's own (like COSIGN_REPOSITORY)")
	fs.DurationVar(&c.timeout, "timeout", cosign.DefaultTimeout, "time limit for verifying one image (all its registry requests)")
	fs.IntVar(&c.maxSignatures, "max-signatures", cosign.DefaultMaxSignatures, "signature manifests, bundles and payloads read per image at most")
	fs.StringVar(&c.policyPath, "policy", "", "judge the images under this policy (file or directory) exactly as criguard serve would, instead of --key")
	fs.StringVar(&c.namespace, "namespace", "default", "with --policy: the pod namespace to judge the images for")
}

// parseVerifyArgs parses flags and images; an error is a usage error (exit 2).
func parseVerifyArgs(args []string, stderr io.Writer, attestation bool) (*verifyConfig, error) {
	cfg := verifyConfig{attestation: attestation}
	cmd := "criguard verify"
	if attestation {
		cmd = "criguard verify-attestation"
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.register(fs)
	if attestation {
		fs.StringVar(&cfg.predicateType, "type", "custom", "attestation predicate type: one of cosign's names (slsaprovenance1, vuln, spdxjson, cyclonedx, ...) or a predicate type URI")
	}
	fs.Usage = func() {
		if attestation {
			fmt.Fprintln(stderr, "usage: criguard verify-attestation --type TYPE (--key FILE | --certificate-identity[-regexp] ID --certificate-oidc-issuer[-regexp] ISSUER) [flags] IMAGE...\n\n"+
				"Verifies that the exact digest of each image carries an in-toto attestation of TYPE (legacy .att or Sigstore\n"+
				"bundle) signed by the key or keyless identity, as cosign verify-attestation does. Exit status as for verify.\n\nFlags:")
			fs.PrintDefaults()
			return
		}
		fmt.Fprintln(stderr, "usage: criguard verify --key FILE [--key FILE ...] [--count N] [--output text|json] IMAGE...\n"+
			"       criguard verify --certificate-identity[-regexp] ID --certificate-oidc-issuer[-regexp] ISSUER IMAGE...\n"+
			"       criguard verify --policy PATH [--namespace NS] [--output text|json] IMAGE...\n\n"+
			"Verifies that the exact digest of each image carries a valid cosign signature (Sigstore bundle or\n"+
			"legacy .sig) from the trusted keys, and prints one verdict per image. Registry credentials come from\n"+
			"the docker config (~/.docker/config.json, $DOCKER_CONFIG). With --policy the images are judged by\n"+
			"the policy's rules for the namespace, as criguard serve judges a pull (an Audit-mode allow counts as\n"+
			"allowed, and says what would have been denied). Exit status: 0 when every image is allowed, 1 when\n"+
			"any is denied or could not be verified, 2 on a usage or configuration error.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	cfg.images = fs.Args()
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	cfg.timeoutSet = set["timeout"]
	if cfg.policyPath != "" {
		// The policy names the keys, counts and signature repositories; mixing
		// in command-line trust would judge differently from the proxy.
		for _, f := range []string{"key", "count", "signature-algorithm", "signature-repository", "certificate-identity", "certificate-identity-regexp",
			"certificate-oidc-issuer", "certificate-oidc-issuer-regexp", "certificate-github-workflow-trigger", "certificate-github-workflow-sha",
			"certificate-github-workflow-name", "certificate-github-workflow-repository", "certificate-github-workflow-ref",
			"insecure-ignore-tlog", "insecure-ignore-sct", "type"} {
			if set[f] {
				return nil, fmt.Errorf("--%s cannot be combined with --policy: the policy says which keys to trust", f)
			}
		}
	} else if set["namespace"] {
		return nil, errors.New("--namespace only applies with --policy")
	}
	keyless := cfg.identity != "" || cfg.identityRegexp != "" || cfg.issuer != "" || cfg.issuerRegexp != "" || (cfg.workflow != certificate.Extensions{})
	switch {
	case len(cfg.images) == 0:
		return nil, errors.New("no image given")
	case keyless && len(cfg.keyFiles) > 0:
		return nil, errors.New("--key and --certificate-* flags cannot be combined: verify with a key or with a keyless identity")
	case keyless && (cfg.identity == "") == (cfg.identityRegexp == ""):
		return nil, errors.New("keyless verification needs exactly one of --certificate-identity and --certificate-identity-regexp")
	case keyless && (cfg.issuer == "") == (cfg.issuerRegexp == ""):
		return nil, errors.New("keyless verification needs exactly one of --certificate-oidc-issuer and --certificate-oidc-issuer-regexp")
	case keyless && (cfg.count > 1 || set["signature-algorithm"]):
		return nil, errors.New("--count and --signature-algorithm apply to --key only")
	case len(cfg.keyFiles) == 0 && !keyless && cfg.policyPath == "":
		return nil, errors.New("no --key or --certificate-identity given: name a trusted public key or a keyless identity")
	case cfg.output != "text" && cfg.output != "json":
		return nil, fmt.Errorf("--output %q: want text or json", cfg.output)
	case cfg.count < 0 || cfg.count > len(cfg.keyFiles):
		return nil, fmt.Errorf("--count %d: must be between 0 (all) and the number of keys (%d)", cfg.count, len(cfg.keyFiles))
	case cfg.timeout <= 0:
		return nil, fmt.Errorf("--timeout %v: must be positive", cfg.timeout)
	case cfg.maxSignatures <= 0:
		return nil, fmt.Errorf("--max-signatures %d: must be positive", cfg.maxSignatures)
	}
	return &cfg, nil
}

// commandLineSet is the one-rule policy of the command line's signers.
func commandLineSet(cfg *verifyConfig) (*policy.Set, error) {
	var as []cosign.Attestor
	rule := "--key"
	if len(cfg.keyFiles) == 0 {
		rule = "--certificate-identity"
		id := sigverify.Identity{Subject: cfg.identity, SubjectRegExp: cfg.identityRegexp, Issuer: cfg.issuer, IssuerRegExp: cfg.issuerRegexp, Extensions: cfg.workflow}
		as = []cosign.Attestor{{Identities: []sigverify.Identity{id}, IgnoreTlog: cfg.ignoreTlog, IgnoreSCT: cfg.ignoreSCT}}
	}
	for _, f := range cfg.keyFiles {
		k, err := keys.LoadFile(f, cfg.algorithm)
		if err != nil {
			return nil, err
		}
		as = append(as, cosign.Attestor{Key: k, IgnoreTlog: cfg.ignoreTlog})
	}
	set := policy.ForAttestors(rule, as, cfg.count, cfg.sigRepo, cfg.timeout)
	if cfg.attestation {
		uri, err := attest.PredicateType(cfg.predicateType)
		if err != nil {
			return nil, fmt.Errorf("--type: %w", err)
		}
		r := set.Policies[0].Rules[0]
		r.Attestations = []policy.Attestation{{Name: uri, PredicateType: uri, Sets: r.Attestors}}
		r.Attestors = nil
	}
	return set, nil
}

// buildEngine loads the configuration (keys, or the policy) into the policy
// engine criguard serve uses; an error is a configuration error (exit 2). With
// --key the keys form a one-rule policy (policy.ForKeys), so both modes judge
// and explain alike.
func buildEngine(cfg *verifyConfig, stderr io.Writer) (*policy.Engine, error) {
	var set *policy.Set
	if cfg.policyPath != "" {
		s, err := policy.Load(cfg.policyPath)
		if err != nil {
			return nil, err
		}
		for _, w := range s.Warnings {
			fmt.Fprintf(stderr, "criguard verify: policy: skipped %s\n", w)
		}
		set = s
	} else {
		s, err := commandLineSet(cfg)
		if err != nil {
			return nil, err
		}
		set = s
	}
	tm, _, err := policy.LoadTrust(cfg.trustedRoot)
	if err != nil {
		return nil, fmt.Errorf("--trusted-root: %w", err)
	}
	set.UseTrust(tm)
	// As in serve, each rule's verificationTimeout bounds its verification;
	// with --policy, --timeout (when given) bounds the whole judgement.
	v := cosign.New(cosign.Options{Timeout: max(policy.MaxTimeout, cfg.timeout), MaxSignatures: cfg.maxSignatures})
	return policy.NewEngine(policy.NewStaticStore(set), v, policy.EngineOptions{}), nil
}

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return verifyImages(ctx, args, stdout, stderr, false)
}

func runVerifyAttestation(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return verifyImages(ctx, args, stdout, stderr, true)
}

func verifyImages(ctx context.Context, args []string, stdout, stderr io.Writer, attestation bool) int {
	name := "criguard verify"
	if attestation {
		name = "criguard verify-attestation"
	}
	cfg, err := parseVerifyArgs(args, stderr, attestation)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	engine, err := buildEngine(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	out := make([]policy.Decision, len(cfg.images))
	g := errgroup.Group{}
	g.SetLimit(4)
	for i, img := range cfg.images {
		g.Go(func() error {
			jctx := ctx
			if cfg.policyPath != "" && cfg.timeoutSet {
				var cancel context.CancelFunc
				jctx, cancel = context.WithTimeout(ctx, cfg.timeout)
				defer cancel()
			}
			out[i] = engine.Evaluate(jctx, policy.Input{Operation: "verify", Image: img, Namespace: cfg.namespace})
			return nil
		})
	}
	_ = g.Wait()
	code := 0
	for _, d := range out {
		if !d.Allowed {
			code = 1
		}
	}
	if cfg.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			fmt.Fprintf(stderr, "criguard verify: %v\n", err)
			return 1
		}
		return code
	}
	for _, d := range out {
		fmt.Fprintln(stdout, d.Explain())
	}
	return code
}
