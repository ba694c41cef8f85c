package sigverify

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"github.com/sigstore/sigstore-go/pkg/verify"
)

// explain turns a sigstore-go verification error into a denial sentence. The
// verdict is sigstore-go's; this only says why, in the operator's terms.
func (v *Verifier) explain(err error, entity verify.SignedEntity, s Signer, o Options) error {
	msg := err.Error()
	cert := entityCert(entity)
	switch {
	case strings.HasPrefix(msg, "failed to verify log inclusion: "):
		return v.explainTlog(err, entity, cert)
	case strings.HasPrefix(msg, "failed to verify timestamps: "):
		if o.IgnoreTlog {
			return fmt.Errorf("no RFC 3161 timestamp from a trusted timestamp authority proves when the short-lived certificate was used (the transparency log is ignored, so nothing else can): %w", err)
		}
		return fmt.Errorf("no trusted time (transparency-log integration or RFC 3161 timestamp) proves when the signature was made: %w", err)
	case strings.HasPrefix(msg, "failed to verify leaf certificate: "):
		return fmt.Errorf("the signing certificate of %s%s does not chain to a trusted Fulcio CA at the time the signature is proven to have been made (%s): %w", certDesc(cert), validity(entity), provenTimes(entity), err)
	case strings.HasPrefix(msg, "failed to verify signed certificate timestamp: "):
		return fmt.Errorf("the signing certificate's embedded SCT does not verify against any trusted CT log (an SCT from an untrusted log, or none): %w", err)
	case msg == "expected key signature, not certificate":
		return fmt.Errorf("signed keyless by %s, not with key %s", certDesc(cert), s.Key.Name)
	case strings.Contains(msg, "entity was not signed with a certificate"), strings.HasPrefix(msg, "SCTs required but bundle is signed with a public key"):
		return errors.New("signed with a key, not with a keyless certificate for " + identities(s))
	case strings.HasPrefix(msg, "failed to verify certificate identity: "):
		return fmt.Errorf("signed by %s, another identity than the policy's (%s)", certDesc(cert), identities(s))
	case strings.HasPrefix(msg, "failed to verify signature: "):
		if s.Key != nil {
			return fmt.Errorf("the signature does not verify with key %s: %w", s.Key.Name, err)
		}
		return fmt.Errorf("the signature does not verify with the key of certificate %s: %w", certDesc(cert), err)
	}
	return fmt.Errorf("verification failed: %w", err)
}

// explainTlog says which transparency-log entry failed and why.
func (v *Verifier) explainTlog(err error, entity verify.SignedEntity, cert *certificate.Summary) error {
	msg := err.Error()
	switch {
	case strings.HasSuffix(msg, "transparency log signature does not match"):
		return fmt.Errorf("the transparency-log entry records another signature than this one: it is an entry for another signature (%w)", err)
	case strings.HasSuffix(msg, "transparency log certificate does not match"):
		return fmt.Errorf("the transparency-log entry records another key or certificate than this signature's: it is an entry for another signer (%w)", err)
	case strings.HasSuffix(msg, "integrated time outside certificate validity"):
		return fmt.Errorf("the transparency log integrated the entry %s, outside the validity of the certificate of %s%s: a timestamp outside the certificate's validity (%w)", entryTimes(entity), certDesc(cert), validity(entity), err)
	case !strings.Contains(msg, "not enough verified log entries"):
		return fmt.Errorf("the transparency-log entry does not verify: %w", err)
	}
	entries, _ := entity.TlogEntries()
	if len(entries) == 0 {
		return errors.New("no transparency-log entry, and the policy requires one (Kyverno rekor.ignoreTlog / cosign --insecure-ignore-tlog would waive it)")
	}
	logs := v.trust.RekorLogs()
	var why []string
	for i, e := range entries {
		id := hex.EncodeToString([]byte(e.LogKeyID()))
		if _, ok := logs[id]; !ok {
			why = append(why, fmt.Sprintf("entry %d (log index %d) is signed by log %s, a transparency log the trusted root does not list (an untrusted log key)", i+1, e.LogIndex(), id))
			continue
		}
		if e.HasInclusionPromise() {
			if serr := tlog.VerifySET(e, logs); serr != nil {
				why = append(why, fmt.Sprintf("entry %d (log index %d): its SET does not verify with the trusted key of log %s: %v", i+1, e.LogIndex(), id, serr))
				continue
			}
		}
		why = append(why, fmt.Sprintf("entry %d (log index %d) has no verifiable SET", i+1, e.LogIndex()))
	}
	return fmt.Errorf("no transparency-log entry verifies against the trusted logs: %s", strings.Join(why, "; "))
}

func entityCert(entity verify.SignedEntity) *certificate.Summary {
	vc, err := entity.VerificationContent()
	if err != nil || vc == nil || vc.Certificate() == nil {
		return nil
	}
	s, err := certificate.SummarizeCertificate(vc.Certificate())
	if err != nil {
		return nil
	}
	return &s
}

func certDesc(c *certificate.Summary) string {
	if c == nil {
		return "(no certificate)"
	}
	return fmt.Sprintf("%s (issuer %s)", c.SubjectAlternativeName, c.Extensions.Issuer)
}

// validity is the leaf certificate's validity period, for denials about time.
func validity(entity verify.SignedEntity) string {
	vc, err := entity.VerificationContent()
	if err != nil || vc == nil || vc.Certificate() == nil {
		return ""
	}
	c := vc.Certificate()
	return fmt.Sprintf(", valid %s to %s", c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
}

// provenTimes lists the times the entity claims (log integration), unverified:
// for denials only.
func provenTimes(entity verify.SignedEntity) string {
	if t := entryTimes(entity); t != "" {
		return "logged " + t
	}
	return "by its RFC 3161 timestamp"
}

func entryTimes(entity verify.SignedEntity) string {
	entries, _ := entity.TlogEntries()
	var ts []string
	for _, e := range entries {
		ts = append(ts, "at "+e.IntegratedTime().UTC().Format(time.RFC3339))
	}
	return strings.Join(ts, ", ")
}

func identities(s Signer) string {
	ids := make([]string, 0, len(s.Identities))
	for _, id := range s.Identities {
		ids = append(ids, id.String())
	}
	return strings.Join(ids, " or ")
}

// describe names who signed, for denials found after the signature verified.
func describe(s Signer, res *verify.VerificationResult) string {
	if s.Key != nil {
		return "key " + s.Key.Name
	}
	if res != nil && res.Signature != nil && res.Signature.Certificate != nil {
		return certDesc(res.Signature.Certificate)
	}
	return "a keyless certificate"
}
