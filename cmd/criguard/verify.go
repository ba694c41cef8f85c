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

	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/imageref"
	"github.com/criguard/criguard/verifier/keys"
	"github.com/criguard/criguard/verifier/policy"
)

// verifyConfig is everything `criguard verify` is configured with. Add a field
// here and its flag in register; build turns it into a judge.
type verifyConfig struct {
	keyFiles      fileList
	algorithm     string
	count         int
	output        string
	sigRepo       string
	timeout       time.Duration
	maxSignatures int
	images        []string
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
	fs.Var(&c.keyFiles, "key", "trusted PEM public key file (repeatable): ECDSA P-256/384/521, RSA >= 2048 bits, Ed25519")
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
func parseVerifyArgs(args []string, stderr io.Writer) (*verifyConfig, error) {
	var cfg verifyConfig
	fs := flag.NewFlagSet("criguard verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: criguard verify --key FILE [--key FILE ...] [--count N] [--output text|json] IMAGE...\n"+
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
		for _, f := range []string{"key", "count", "signature-algorithm", "signature-repository"} {
			if set[f] {
				return nil, fmt.Errorf("--%s cannot be combined with --policy: the policy says which keys to trust", f)
			}
		}
	} else if set["namespace"] {
		return nil, errors.New("--namespace only applies with --policy")
	}
	switch {
	case len(cfg.images) == 0:
		return nil, errors.New("no image given")
	case len(cfg.keyFiles) == 0 && cfg.policyPath == "":
		return nil, errors.New("no --key given: name at least one trusted public key")
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

// judge produces the verdict for one image.
type judge func(ctx context.Context, image string) verdict

// buildJudge loads the configuration (keys, or the policy) into a judge; an
// error is a configuration error (exit 2).
func buildJudge(cfg *verifyConfig, stderr io.Writer) (judge, error) {
	if cfg.policyPath != "" {
		return buildPolicyJudge(cfg, stderr)
	}
	var ks []*keys.Key
	for _, f := range cfg.keyFiles {
		k, err := keys.LoadFile(f, cfg.algorithm)
		if err != nil {
			return nil, err
		}
		ks = append(ks, k)
	}
	v := cosign.New(cosign.Options{Timeout: cfg.timeout, MaxSignatures: cfg.maxSignatures})
	return func(ctx context.Context, image string) verdict {
		ref, err := imageref.Parse(image)
		if err != nil {
			return verdict{Image: image, Reason: err.Error()}
		}
		res, err := v.Verify(ctx, cosign.Request{Image: ref, Keys: ks, Threshold: cfg.count, SignatureRepository: cfg.sigRepo})
		o := verdict{Image: res.Image, Digest: res.Digest, Allowed: res.Allowed && err == nil, Verified: res.Verified, Reason: res.Reason}
		if err != nil {
			o.Reason, o.Incomplete = err.Error(), errors.Is(err, cosign.ErrIncomplete)
		}
		return o
	}, nil
}

// buildPolicyJudge judges through the same policy engine as criguard serve:
// tag resolution, every matching rule for the namespace, Audit mode,
// failurePolicy and unmatchedImages included.
func buildPolicyJudge(cfg *verifyConfig, stderr io.Writer) (judge, error) {
	set, err := policy.Load(cfg.policyPath)
	if err != nil {
		return nil, err
	}
	for _, w := range set.Warnings {
		fmt.Fprintf(stderr, "criguard verify: policy: skipped %s\n", w)
	}
	// As in serve, each rule's verificationTimeout bounds its verification;
	// --timeout, when given, bounds the whole judgement of one image.
	v := cosign.New(cosign.Options{Timeout: policy.MaxTimeout, MaxSignatures: cfg.maxSignatures})
	engine := policy.NewEngine(policy.NewStaticStore(set), v, nil)
	return func(ctx context.Context, image string) verdict {
		if cfg.timeoutSet {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, cfg.timeout)
			defer cancel()
		}
		ref, err := imageref.Parse(image)
		if err != nil {
			return verdict{Image: image, Reason: err.Error(), byPolicy: true}
		}
		d := engine.Evaluate(ctx, policy.Input{Operation: "verify", Image: image, Ref: ref, Namespace: cfg.namespace})
		o := verdict{Image: d.Image, Digest: d.Digest, Allowed: d.Allowed, Verified: d.Verified, Reason: d.Reason,
			Policy: d.Policy, Rule: d.Rule, Audited: d.Audited && !d.FailedOpen, FailedOpen: d.FailedOpen, byPolicy: true}
		for _, r := range d.Rules {
			if !d.Allowed && r.Result == "incomplete" {
				o.Incomplete = true
			}
		}
		return o
	}, nil
}

// verdict is one image's outcome as printed.
type verdict struct {
	Image      string             `json:"image"`
	Digest     string             `json:"digest,omitempty"`
	Allowed    bool               `json:"allowed"`
	Incomplete bool               `json:"incomplete,omitempty"`
	Verified   []cosign.Signature `json:"verified,omitempty"`
	Reason     string             `json:"reason,omitempty"`
	// With --policy: the deciding policy and rule, and whether the allow is
	// Audit mode's (would be denied) or failurePolicy Ignore's.
	Policy     string `json:"policy,omitempty"`
	Rule       string `json:"rule,omitempty"`
	Audited    bool   `json:"audited,omitempty"`
	FailedOpen bool   `json:"failedOpen,omitempty"`
	byPolicy   bool
}

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseVerifyArgs(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "criguard verify: %v\n", err)
		return 2
	}
	j, err := buildJudge(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "criguard verify: %v\n", err)
		return 2
	}
	out := make([]verdict, len(cfg.images))
	g := errgroup.Group{}
	g.SetLimit(4)
	for i, img := range cfg.images {
		g.Go(func() error {
			out[i] = j(ctx, img)
			if out[i].Image == "" {
				out[i].Image = img
			}
			return nil
		})
	}
	_ = g.Wait()
	code := 0
	for _, o := range out {
		if !o.Allowed {
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
	for _, o := range out {
		fmt.Fprintln(stdout, textVerdict(o))
	}
	return code
}

func textVerdict(o verdict) string {
	ref := o.Image
	if o.Digest != "" && !strings.Contains(ref, "@") {
		ref += "@" + o.Digest
	}
	if o.byPolicy {
		return policyVerdict(ref, o)
	}
	if o.Allowed {
		var by []string
		for _, s := range o.Verified {
			by = append(by, fmt.Sprintf("%s (%s %s)", s.Key, s.Format, s.Digest))
		}
		return fmt.Sprintf("ALLOWED %s: verified by %s", ref, strings.Join(by, ", "))
	}
	if o.Incomplete {
		return fmt.Sprintf("DENIED  %s: could not verify: %s", ref, o.Reason)
	}
	return fmt.Sprintf("DENIED  %s: %s", ref, o.Reason)
}

// policyVerdict is the text line of a --policy verdict: the outcome, what
// decided it, and why.
func policyVerdict(ref string, o verdict) string {
	by := ""
	if o.Policy != "" {
		by = " by policy " + o.Policy
		if o.Rule != "" {
			by += " rule " + o.Rule
		}
	}
	switch {
	case o.FailedOpen:
		return fmt.Sprintf("ALLOWED %s (failed open: failurePolicy Ignore%s): %s", ref, by, o.Reason)
	case o.Allowed && o.Audited:
		return fmt.Sprintf("ALLOWED %s (audit: would be denied%s): %s", ref, by, o.Reason)
	case o.Allowed:
		return fmt.Sprintf("ALLOWED %s%s: %s", ref, by, o.Reason)
	case o.Incomplete:
		return fmt.Sprintf("DENIED  %s%s: could not verify: %s", ref, by, o.Reason)
	}
	return fmt.Sprintf("DENIED  %s%s: %s", ref, by, o.Reason)
}
