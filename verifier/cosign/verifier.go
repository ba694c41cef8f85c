package cosign

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/sync/errgroup"

	"github.com/sigstore/sigstore-go/pkg/root"

	"github.com/criguard/criguard/verifier/imageref"
	"github.com/criguard/criguard/verifier/registry"
	"github.com/criguard/criguard/verifier/sigformat"
	"github.com/criguard/criguard/verifier/sigverify"
	"github.com/criguard/criguard/verifier/trust"
)

// Defaults for Options.
const (
	DefaultTimeout       = 10 * time.Second
	DefaultMaxSignatures = 32
	// MaxContentSize bounds every manifest, index, payload and bundle read.
	MaxContentSize = 1 << 20
	// MaxHeaderBytes bounds the response headers of every registry answer
	// (net/http's default is 10 MiB per answer, times every verification in
	// flight); a registry's headers are a few hundred bytes.
	MaxHeaderBytes = 64 << 10
	// fetchParallelism bounds concurrent blob and manifest reads per image.
	fetchParallelism = 4
)

// Options configure a Verifier.
type Options struct {
	// Timeout bounds one Verify or Resolve call (all its registry requests);
	// a context deadline that comes sooner wins. 0 means DefaultTimeout.
	Timeout time.Duration
	// MaxSignatures bounds the signature manifests, bundles and legacy payloads
	// read per image. 0 means DefaultMaxSignatures.
	MaxSignatures int
	// Transport carries every registry request (tests count round trips with
	// it). nil means a dedicated clone of http.DefaultTransport whose response
	// headers are bounded by MaxHeaderBytes.
	Transport http.RoundTripper
	// Keychain supplies credentials when a Request has no Auth. nil means the
	// node's docker config (authn.DefaultKeychain).
	Keychain authn.Keychain
}

// Verifier judges image digests against cosign signatures. It is safe for
// concurrent use. Between calls it keeps connections and registry tokens (per
// repository and credential, for a few minutes) but no verdicts: callers cache
// those.
type Verifier struct {
	timeout  time.Duration
	maxSigs  int
	keychain authn.Keychain
	client   *registry.Client
	repos    repoCache
}

// New returns a Verifier.
func New(o Options) *Verifier {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxSignatures <= 0 {
		o.MaxSignatures = DefaultMaxSignatures
	}
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	if o.Transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		t.MaxIdleConnsPerHost = 8
		t.MaxResponseHeaderBytes = MaxHeaderBytes
		o.Transport = t
	}
	return &Verifier{timeout: o.Timeout, maxSigs: o.MaxSignatures, keychain: o.Keychain, client: registry.New(o.Transport)}
}

// authenticator turns a kubelet-style Auth into credentials, else asks the
// keychain (the node's docker config), else anonymous.
func (v *Verifier) authenticator(reg name.Registry, a *Auth) authn.Authenticator {
	if a != nil && (a.Username != "" || a.Password != "" || a.Auth != "" || a.IdentityToken != "" || a.RegistryToken != "") {
		return authn.FromConfig(authn.AuthConfig{
			Username:      a.Username,
			Password:      a.Password,
			Auth:          a.Auth,
			IdentityToken: a.IdentityToken,
			RegistryToken: a.RegistryToken,
		})
	}
	if v.keychain != nil {
		if au, err := v.keychain.Resolve(reg); err == nil && au != nil {
			return au
		}
	}
	return authn.Anonymous
}

func (v *Verifier) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, v.timeout)
}

// incomplete wraps a failure to finish in ErrIncomplete with what to do. The
// cause stays wrapped too (callers tell network errors, *net.OpError, and
// deadlines, context.DeadlineExceeded, from registry answers,
// *registry.StatusError).
func incomplete(ctx context.Context, what string, err error) error {
	var te interface{ Timeout() bool }
	timeout := errors.As(err, &te) && te.Timeout()
	if ctx.Err() != nil || timeout || errors.Is(err, context.DeadlineExceeded) {
		if !errors.Is(err, context.DeadlineExceeded) && (timeout || errors.Is(ctx.Err(), context.DeadlineExceeded)) {
			err = fmt.Errorf("%w (%w)", err, context.DeadlineExceeded)
		}
		return fmt.Errorf("%w: %s: timed out: %w; the registry is slow or unreachable, retry or raise the timeout", ErrIncomplete, what, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrIncomplete, what, err)
}

// Resolve returns the digest ref names: the digest it pins, else the digest
// the registry serves for its tag (one HEAD).
func (v *Verifier) Resolve(ctx context.Context, ref imageref.Ref, auth *Auth) (string, error) {
	if ref.HasDigest() {
		return ref.Digest(), nil
	}
	n, err := ref.Name()
	if err != nil {
		return "", err
	}
	ctx, cancel := v.withTimeout(ctx)
	defer cancel()
	return v.resolve(ctx, v.repo(ctx, n.Context(), auth), ref, n)
}

func (v *Verifier) resolve(ctx context.Context, repo *registry.Repo, ref imageref.Ref, n name.Reference) (string, error) {
	desc, err := repo.Head(ctx, n.Identifier(), MaxContentSize)
	switch {
	case err == nil:
		if err := imageref.CheckDigest(desc.Digest); err != nil {
			return "", fmt.Errorf("image %s: the registry answered the tag with %w", ref, err)
		}
		return desc.Digest, nil
	case errors.Is(err, registry.ErrNotFound):
		return "", fmt.Errorf("image %s: tag %q not found in %s", ref, ref.Tag(), ref.Repository())
	case errors.Is(err, registry.ErrBadContent), errors.Is(err, registry.ErrTooLarge):
		return "", fmt.Errorf("image %s: %w", ref, err)
	default:
		return "", incomplete(ctx, "resolving "+ref.String(), err)
	}
}

// Verify judges one image digest. A denial is a Result with Allowed false and a
// Reason; an error means no verdict could be reached: it wraps ErrIncomplete
// when the registry could not be read in time, and is a request error otherwise
// (no reference, tag not found, digests that disagree).
func (v *Verifier) Verify(ctx context.Context, req Request) (Result, error) {
	ref := req.Image
	res := Result{Image: ref.String()}
	n, err := ref.Name()
	if err != nil {
		return res, err
	}
	ctx, cancel := v.withTimeout(ctx)
	defer cancel()

	imgRepo := v.repo(ctx, n.Context(), req.Auth)
	digest := req.Digest
	if ref.HasDigest() {
		if digest != "" && digest != ref.Digest() {
			return res, fmt.Errorf("image %s names digest %s but the request asks to judge %s", ref, ref.Digest(), digest)
		}
		digest = ref.Digest()
	}
	if digest == "" {
		if digest, err = v.resolve(ctx, imgRepo, ref, n); err != nil {
			return res, err
		}
	}
	if err := imageref.CheckDigest(digest); err != nil {
		return res, fmt.Errorf("image %s: %w", ref, err)
	}
	res.Digest = digest
	return v.judge(ctx, req, res, imgRepo, n.Context().RegistryStr())
}

// judge counts the signers of res.Digest among req.Attestors.
func (v *Verifier) judge(ctx context.Context, req Request, res Result, imgRepo *registry.Repo, imgRegistry string) (Result, error) {
	for i, a := range req.Attestors {
		if err := a.check(); err != nil {
			return res, fmt.Errorf("attestor %d of %d: %w", i+1, len(req.Attestors), err)
		}
	}
	if req.Attestation != nil && req.Attestation.PredicateType == "" {
		return res, errors.New("an attestation requirement needs a predicate type")
	}
	if len(req.Attestors) == 0 {
		res.Reason = "no trusted keys or keyless identities are configured for this image: nothing can verify it"
		return res, nil
	}
	need, short := Needed(req.Attestors, req.Threshold)
	if short != "" {
		res.Reason = short
		return res, nil
	}
	sigRepo := imgRepo
	if req.SignatureRepository != "" {
		r, err := name.NewRepository(strings.TrimSpace(req.SignatureRepository))
		if err != nil {
			return res, fmt.Errorf("signature repository %q: %w", req.SignatureRepository, err)
		}
		// kubelet's credentials are the image registry's: a signature repository
		// on another registry gets the node's own credentials for that registry,
		// never a password meant for someone else's server.
		auth := req.Auth
		if r.RegistryStr() != imgRegistry {
			auth = nil
		}
		sigRepo = v.repo(ctx, r, auth)
	}

	j := &judgement{v: v, repo: sigRepo, digest: res.Digest, attestors: req.Attestors, want: req.Attestation, budget: v.maxSigs}
	j.trustFor(req.Trust)
	if err := j.run(ctx, need); err != nil {
		return res, err
	}
	res.Verified = j.verified
	res.Allowed, res.Reason = j.verdict(need)
	return res, nil
}

// Needed is how many distinct signers of attestors a threshold asks for.
// Signers are counted by Attestor.SignerID: the same public key listed twice
// (under two names, or two algorithms of an Ed25519 key) is one signer. A
// threshold above the distinct signers returns a denial reason.
func Needed(as []Attestor, threshold int) (need int, short string) {
	distinct := Signers(as)
	if threshold > distinct {
		return 0, fmt.Sprintf("the policy requires %d trusted %ss but lists only %d distinct ones: fix the count or the %ss", threshold, noun(as), distinct, noun(as))
	}
	if threshold <= 0 {
		return distinct, ""
	}
	return threshold, ""
}

// Signers counts the distinct signers among as (Attestor.SignerID). Verify
// counts the distinct proven signers of the attestors that verified against
// Needed (for key attestors the same as Signers of them); test doubles must
// count the same way.
func Signers(as []Attestor) int {
	distinct := map[string]bool{}
	for _, a := range as {
		distinct[a.SignerID()] = true
	}
	return len(distinct)
}

// noun is what the attestors are called in verdicts.
func noun(as []Attestor) string {
	for _, a := range as {
		if a.Key == nil {
			return "signer"
		}
	}
	return "key"
}

// finding is what one signature (bundle or legacy layer) turned out to be.
type finding struct {
	format  string  // "bundle", "legacy" or "legacy attestation"
	digest  string  // digest of the manifest or layer holding it
	problem string  // malformed, unreadable ... ("" when it was read)
	hits    []hit   // attestors that verified it for the judged digest
	errs    []error // per attestor: why it did not verify (nil for a hit)
	// container: the problem is with what holds signatures (the .sig
	// manifest), so no signature was read: it is not counted as one.
	container bool
}

// hit is one attestor that verified one finding.
type hit struct {
	attestor      int
	signer        string
	signerID      string // provenSigner: what a threshold counts
	predicateType string
	conditions    error // an attestation whose predicate fails the conditions
}

// judgement collects signatures for one digest and checks them against the
// attestors.
type judgement struct {
	v         *Verifier
	repo      *registry.Repo
	digest    string
	attestors []Attestor
	want      *Attestation
	budget    int
	// verifiers hold each attestor's trust material (the root with its
	// overrides); trustErrs why an attestor has none.
	verifiers []*sigverify.Verifier
	trustErrs []error

	mu        sync.Mutex
	looked    []string // where signatures were looked for, with what was there
	findings  []finding
	skipped   int // signatures not read because of MaxSignatures
	verified  []Signature
	readSlots int
}

// trustFor prepares one sigverify.Verifier per attestor: the trusted root
// with the attestor's overrides.
func (j *judgement) trustFor(base root.TrustedMaterial) {
	j.verifiers = make([]*sigverify.Verifier, len(j.attestors))
	j.trustErrs = make([]error, len(j.attestors))
	for i, a := range j.attestors {
		tm, err := trust.Apply(base, a.Overrides)
		if err == nil {
			j.verifiers[i], err = sigverify.New(tm)
		}
		if err != nil {
			j.trustErrs[i] = fmt.Errorf("the trust material of %s is unusable: %w", a.Label(), err)
		}
	}
}

func (j *judgement) note(s string) {
	j.mu.Lock()
	j.looked = append(j.looked, s)
	j.mu.Unlock()
}

func (j *judgement) add(f finding) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.findings = append(j.findings, f)
	for _, h := range f.hits {
		if h.conditions == nil {
			j.verified = append(j.verified, Signature{Key: j.attestors[h.attestor].Label(), Format: f.format, Digest: f.digest, Signer: h.signer, PredicateType: h.predicateType})
		}
	}
}

// take reserves n of the MaxSignatures budget and returns how many were granted.
func (j *judgement) take(n int) int {
	j.mu.Lock()
	defer j.mu.Unlock()
	left := j.budget - j.readSlots
	if n > left {
		j.skipped += n - max(left, 0)
		n = max(left, 0)
	}
	j.readSlots += n
	return n
}

// run looks in both places cosign writes signatures at once and checks what it
// finds. A lookup or fetch that cannot complete does not stop the others: it is
// returned only when what could be read does not already allow the image (an
// allow rests on valid signatures alone; a denial must not rest on a registry
// that failed to answer).
func (j *judgement) run(ctx context.Context, need int) error {
	var (
		mu       sync.Mutex
		firstErr error
	)
	record := func(err error) error {
		if err != nil {
			mu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}
		return nil
	}
	var bundleRefs []sigformat.Descriptor
	var legacy *sigformat.Manifest
	var g errgroup.Group
	g.Go(j.guard("the referrers lookup", finding{format: "bundle", container: true}, func() error {
		var err error
		bundleRefs, err = j.listBundles(ctx)
		return record(err)
	}))
	g.Go(j.guard("the signature tag lookup", finding{format: j.legacyFormat(), container: true}, func() error {
		var err error
		legacy, _, err = j.legacyManifest(ctx)
		return record(err)
	}))
	_ = g.Wait()
	// Bundles are read before legacy layers when the budget runs short, as cosign
	// v3 prefers them.
	bundleRefs = bundleRefs[:j.take(len(bundleRefs))]
	var layers []sigformat.Descriptor
	if legacy != nil {
		layers = legacy.Layers[:j.take(len(legacy.Layers))]
	}
	g = errgroup.Group{}
	g.SetLimit(fetchParallelism)
	for _, d := range bundleRefs {
		g.Go(j.guard("bundle "+d.Digest, finding{format: "bundle", digest: d.Digest}, func() error { return record(j.checkBundle(ctx, d)) }))
	}
	for _, l := range layers {
		g.Go(j.guard("layer "+l.Digest, finding{format: j.legacyFormat(), digest: l.Digest}, func() error { return record(j.checkLegacy(ctx, l)) }))
	}
	_ = g.Wait()
	// Deterministic order for verdicts and output.
	slices.SortFunc(j.verified, func(a, b Signature) int {
		return strings.Compare(a.Key+a.Format+a.Digest, b.Key+b.Format+b.Digest)
	})
	if firstErr != nil {
		if ok, _ := j.verdict(need); ok {
			return nil
		}
	}
	return firstErr
}

// fetchErr turns a registry error into a finding (content problems: a denial
// with a reason) or an incomplete verification (network, 5xx, timeout).
func fetchErr(ctx context.Context, what string, err error) (string, error) {
	switch {
	case errors.Is(err, registry.ErrTooLarge):
		return fmt.Sprintf("%s refused: %v", what, err), nil
	case errors.Is(err, registry.ErrBadContent):
		return fmt.Sprintf("%s: %v", what, err), nil
	case errors.Is(err, registry.ErrNotFound):
		return fmt.Sprintf("%s: missing from the registry", what), nil
	default:
		return "", incomplete(ctx, what, err)
	}
}

// signed returns, per attestor that verified a finding, whether all its
// attestations met the conditions (always true for signatures).
func (j *judgement) signed() map[int]bool {
	ok := map[int]bool{}
	for _, f := range j.findings {
		for _, h := range f.hits {
			prev, seen := ok[h.attestor]
			ok[h.attestor] = (prev || !seen) && h.conditions == nil
		}
	}
	return ok
}

// verdict applies the threshold and writes a reason a person can act on.
func (j *judgement) verdict(need int) (bool, string) {
	byAttestor := j.signed()
	signersOf := map[int][]string{}
	for _, f := range j.findings {
		for _, h := range f.hits {
			if byAttestor[h.attestor] {
				signersOf[h.attestor] = append(signersOf[h.attestor], h.signerID)
			}
		}
	}
	proven := distinctSigners(signersOf)
	if proven >= need {
		return true, ""
	}
	what, n := "cosign signature(s)", noun(j.attestors)
	if j.want != nil {
		what = "attestation(s) of type " + j.want.PredicateType
	}
	// Referrers first, then the legacy tag, whichever lookup finished first.
	slices.SortStableFunc(j.looked, func(a, b string) int {
		return strings.Compare(a[:min(len(a), 4)], b[:min(len(b), 4)])
	})
	where := fmt.Sprintf("looked in %s: %s", j.repo.Name(), strings.Join(j.looked, "; "))
	truncated := ""
	if j.skipped > 0 {
		truncated = fmt.Sprintf("; %d more signatures were not read (limit %d per image)", j.skipped, j.budget)
	}
	if len(j.findings) == 0 {
		if j.want != nil {
			return false, fmt.Sprintf("no attestations found for %s (%s)%s; attest this digest with cosign attest --type, or set the signature repository if they are stored elsewhere", j.digest, where, truncated)
		}
		return false, fmt.Sprintf("no cosign signatures found for %s (%s)%s; sign this digest with cosign, or set the signature repository if signatures are stored elsewhere", j.digest, where, truncated)
	}
	var failedConditions []string
	for _, f := range j.findings {
		for _, h := range f.hits {
			if h.conditions != nil {
				failedConditions = append(failedConditions, fmt.Sprintf("%s %s: %v", f.format, short(f.digest), h.conditions))
			}
		}
	}
	if len(byAttestor) > 0 {
		var okNames, missing []string
		for i, a := range j.attestors {
			if byAttestor[i] {
				okNames = append(okNames, a.Label())
			} else {
				missing = append(missing, a.Label())
			}
		}
		cond := ""
		if len(failedConditions) > 0 {
			cond = "; " + strings.Join(failedConditions, "; ")
		}
		if len(okNames) == 0 {
			return false, fmt.Sprintf("no %s meets the policy's conditions: %s%s", what, strings.Join(failedConditions, "; "), truncated)
		}
		if len(missing) == 0 {
			missing = []string{"none"}
		}
		same := ""
		if proven < len(okNames) {
			same = fmt.Sprintf("; the %d verified %ss are %d distinct signer(s): one signer counts once however many policy entries it matches", len(okNames), n, proven)
		}
		return false, fmt.Sprintf("%s: signed by %d of the %d required trusted %ss (verified: %s; missing: %s)%s%s%s",
			what, proven, need, n, strings.Join(okNames, ", "), strings.Join(missing, ", "), same, cond, truncated)
	}
	labels := make([]string, len(j.attestors))
	for i, a := range j.attestors {
		labels[i] = a.Label()
	}
	sigs := 0
	for _, f := range j.findings {
		if !f.container {
			sigs++
		}
	}
	if sigs == 0 {
		return false, fmt.Sprintf("no cosign signature could be read for %s (%s): %s%s", j.digest, where, strings.Join(j.whyNot(), "; "), truncated)
	}
	if j.want != nil {
		return false, fmt.Sprintf("no attestation of type %s by a trusted %s (%s) among the %d signature(s) and attestation(s) found for %s: %s%s",
			j.want.PredicateType, n, strings.Join(labels, ", "), sigs, j.digest, strings.Join(j.whyNot(), "; "), truncated)
	}
	return false, fmt.Sprintf("%d %s found for %s but none verified by a trusted %s (%s): %s%s",
		sigs, what, j.digest, n, strings.Join(labels, ", "), strings.Join(j.whyNot(), "; "), truncated)
}

// whyNot says what the findings were when none verified, most actionable
// first.
func (j *judgement) whyNot() []string {
	var other, kind, reasons, problems []string
	untrusted := 0
	for _, f := range j.findings {
		if f.problem != "" {
			problems = append(problems, fmt.Sprintf("%s %s: %s", f.format, short(f.digest), f.problem))
			continue
		}
		var first error
		mismatch := true
		for _, err := range f.errs {
			var ke *kindError
			msg := fmt.Sprint(err)
			switch {
			case errors.As(err, &ke):
				first, mismatch = err, false
			case strings.Contains(msg, "another digest") || strings.Contains(msg, "another image"):
				if first == nil || !errors.As(first, &ke) {
					first = err
				}
				mismatch = false
			case !strings.Contains(msg, "the signature does not verify with key "):
				if first == nil {
					first = err
				}
				mismatch = false
			}
		}
		var ke *kindError
		msg := fmt.Sprint(first)
		switch {
		case mismatch:
			untrusted++
		case errors.As(first, &ke):
			kind = append(kind, fmt.Sprintf("%s %s %s", f.format, short(f.digest), msg))
		case strings.Contains(msg, "another digest") || strings.Contains(msg, "another image"):
			other = append(other, fmt.Sprintf("%s %s: %s", f.format, short(f.digest), msg))
		default:
			reasons = append(reasons, fmt.Sprintf("%s %s: %s", f.format, short(f.digest), msg))
		}
	}
	var parts []string
	if len(other) > 0 {
		parts = append(parts, "a signature for another digest: "+strings.Join(other, "; ")+" (the tag may have moved after signing, or the signature was copied from another image)")
	}
	parts = append(parts, kind...)
	parts = append(parts, reasons...)
	if untrusted > 0 {
		parts = append(parts, fmt.Sprintf("%d signed by keys not trusted here", untrusted))
	}
	return append(parts, problems...)
}

// short abbreviates a digest for messages.
func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
