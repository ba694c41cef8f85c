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
		var ks []*keys.Key
		for _, f := range cfg.keyFiles {
			k, err := keys.LoadFile(f, cfg.algorithm)
			if err != nil {
				return nil, err
			}
			ks = append(ks, k)
		}
		set = policy.ForKeys(ks, cfg.count, cfg.sigRepo, cfg.timeout)
	}
	// As in serve, each rule's verificationTimeout bounds its verification;
	// with --policy, --timeout (when given) bounds the whole judgement.
	v := cosign.New(cosign.Options{Timeout: max(policy.MaxTimeout, cfg.timeout), MaxSignatures: cfg.maxSignatures})
	return policy.NewEngine(policy.NewStaticStore(set), v, policy.EngineOptions{}), nil
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
	engine, err := buildEngine(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "criguard verify: %v\n", err)
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
