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

	"github.com/criguard/criguard/verifier"
	"github.com/criguard/criguard/verifier/keys"
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
	fs.DurationVar(&c.timeout, "timeout", verifier.DefaultTimeout, "time limit for verifying one image (all its registry requests)")
	fs.IntVar(&c.maxSignatures, "max-signatures", verifier.DefaultMaxSignatures, "signature manifests, bundles and payloads read per image at most")
}

// parseVerifyArgs parses flags and images; an error is a usage error (exit 2).
func parseVerifyArgs(args []string, stderr io.Writer) (*verifyConfig, error) {
	var cfg verifyConfig
	fs := flag.NewFlagSet("criguard verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: criguard verify --key FILE [--key FILE ...] [--count N] [--output text|json] IMAGE...\n\n"+
			"Verifies that the exact digest of each image carries a valid cosign signature (Sigstore bundle or\n"+
			"legacy .sig) from the trusted keys, and prints one verdict per image. Registry credentials come from\n"+
			"the docker config (~/.docker/config.json, $DOCKER_CONFIG). Exit status: 0 when every image is\n"+
			"allowed, 1 when any is denied or could not be verified, 2 on a usage or configuration error.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	cfg.images = fs.Args()
	switch {
	case len(cfg.images) == 0:
		return nil, errors.New("no image given")
	case len(cfg.keyFiles) == 0:
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
type judge func(ctx context.Context, image string) (verifier.Result, error)

// buildJudge loads the configuration (keys) into a judge; an error is a
// configuration error (exit 2).
func buildJudge(cfg *verifyConfig) (judge, error) {
	var ks []*keys.Key
	for _, f := range cfg.keyFiles {
		k, err := keys.LoadFile(f, cfg.algorithm)
		if err != nil {
			return nil, err
		}
		ks = append(ks, k)
	}
	v := verifier.New(verifier.Options{Timeout: cfg.timeout, MaxSignatures: cfg.maxSignatures})
	return func(ctx context.Context, image string) (verifier.Result, error) {
		return v.Verify(ctx, verifier.Request{Image: image, Keys: ks, Threshold: cfg.count, SignatureRepository: cfg.sigRepo})
	}, nil
}

// verdict is one image's outcome as printed.
type verdict struct {
	Image      string               `json:"image"`
	Digest     string               `json:"digest,omitempty"`
	Allowed    bool                 `json:"allowed"`
	Incomplete bool                 `json:"incomplete,omitempty"`
	Verified   []verifier.Signature `json:"verified,omitempty"`
	Reason     string               `json:"reason,omitempty"`
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
	j, err := buildJudge(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "criguard verify: %v\n", err)
		return 2
	}
	out := make([]verdict, len(cfg.images))
	g := errgroup.Group{}
	g.SetLimit(4)
	for i, img := range cfg.images {
		g.Go(func() error {
			res, err := j(ctx, img)
			out[i] = verdict{Image: res.Image, Digest: res.Digest, Allowed: res.Allowed && err == nil, Verified: res.Verified, Reason: res.Reason}
			if out[i].Image == "" {
				out[i].Image = img
			}
			if err != nil {
				out[i].Reason, out[i].Incomplete = err.Error(), errors.Is(err, verifier.ErrIncomplete)
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
