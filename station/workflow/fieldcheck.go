package workflow

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/devid-station/devid/station/journal"
	"github.com/devid-station/devid/station/store"
)

// Field check modes (FieldCheck.Mode).
const (
	// FieldCheckOff: no field check (the default); the step records the mode and passes.
	FieldCheckOff = "off"
	// FieldCheckHandshake: an HTTPS request to FieldCheck.URL over TLS whose client
	// authentication is the unit's LDevID, signed by its TPM through the session.
	FieldCheckHandshake = "handshake"
	// FieldCheckReenroll: EST /simplereenroll at the LDevID's CA, authenticated by the LDevID,
	// with a fresh CSR signed by the TPM.
	FieldCheckReenroll = "reenroll"
)

// FieldCheck is a profile's field check: once the unit is verified, the station uses its
// LDevID as the field stack will, against an endpoint of the customer's.
type FieldCheck struct {
	// Mode is FieldCheckOff ("" too), FieldCheckHandshake or FieldCheckReenroll.
	Mode string
	// URL is the handshake's https URL: its server must ask for a client certificate and
	// answer the GET with 2xx.
	URL string
	// Roots verify the handshake endpoint's server certificate.
	Roots *x509.CertPool
}

// fieldCheck runs the profile's field check with the unit's verified LDevID.
func (u *unit) fieldCheck(ctx context.Context) (any, error) {
	fc := u.profile.FieldCheck
	switch fc.Mode {
	case "", FieldCheckOff:
		return journal.FieldCheckResult{Mode: FieldCheckOff}, nil
	case FieldCheckHandshake:
		return u.fieldHandshake(ctx, fc)
	case FieldCheckReenroll:
		return u.fieldReenroll(ctx)
	}
	return nil, fail(CodeInternal, nil, "field check mode %q", fc.Mode)
}

// ldevidCredential is the unit's LDevID as a TLS client credential whose key signs in the TPM;
// signatures counts what it signed.
func (u *unit) ldevidCredential(ctx context.Context, signatures *atomic.Int64) *ClientCert {
	k := u.keys[roleLDevID]
	return &ClientCert{
		Chain: append([]*x509.Certificate{k.cert}, k.chain...),
		Key:   &countingSigner{Signer: &agentSigner{ctx: ctx, u: u, handle: k.profile.Handle, pub: k.cert.PublicKey}, n: signatures},
	}
}

// countingSigner counts the signatures its Signer made.
type countingSigner struct {
	crypto.Signer
	n *atomic.Int64
}

func (s *countingSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := s.Signer.Sign(r, digest, opts)
	if err == nil {
		s.n.Add(1)
	}
	return sig, err
}

// fieldHandshake sends a GET to fc.URL over TLS authenticated by the LDevID. It passes when the
// server asked for a client certificate, the TPM signed the handshake and the answer is 2xx.
func (u *unit) fieldHandshake(ctx context.Context, fc FieldCheck) (any, error) {
	var signatures atomic.Int64
	var asked atomic.Bool
	cred := u.ldevidCredential(ctx, &signatures)
	cert := tls.Certificate{PrivateKey: cred.Key, Leaf: cred.Chain[0]}
	for _, c := range cred.Chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: fc.Roots, MinVersion: tls.VersionTLS12,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				asked.Store(true)
				return &cert, nil
			}},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fc.URL, nil)
	if err != nil {
		return nil, fail(CodeInternal, err, "field check request")
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if asked.Load() {
			return nil, fail(CodeFieldCheckRejected, err, "%s refused the LDevID", fc.URL)
		}
		return nil, fail(CodeFieldCheckUnavailable, err, "connecting to %s", fc.URL)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case !asked.Load():
		return nil, fail(CodeFieldCheckNoClientAuth, nil, "%s did not ask for a client certificate", fc.URL)
	case signatures.Load() == 0:
		return nil, fail(CodeInternal, nil, "the TLS handshake with %s went without the TPM's signature", fc.URL)
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return nil, fail(CodeFieldCheckUnavailable, nil, "%s answered %s", fc.URL, resp.Status)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return nil, fail(CodeFieldCheckRejected, nil, "%s answered %s to the LDevID", fc.URL, resp.Status)
	}
	return journal.FieldCheckResult{Mode: FieldCheckHandshake, Endpoint: fc.URL, ClientCertSHA256: sha(cred.Chain[0].Raw),
		TLSVersion: tls.VersionName(resp.TLS.Version), HTTPStatus: resp.StatusCode, Signatures: int(signatures.Load())}, nil
}

// fieldReenroll re-enrolls the LDevID at its CA (EST /simplereenroll, authenticated by the
// LDevID) with a fresh CSR from the TPM, checks the new certificate as the enrollment's and
// records it in the certificate index. The unit keeps its provisioned certificate.
func (u *unit) fieldReenroll(ctx context.Context) (any, error) {
	k := u.keys[roleLDevID]
	csr, err := u.newCSR(ctx, roleLDevID)
	if err != nil {
		return nil, err
	}
	u.reenrollCSR = csr
	var signatures atomic.Int64
	cred := u.ldevidCredential(ctx, &signatures)
	requested := u.r.cfg.Clock.Now()
	// A lost answer, an unavailable CA or the step's timeout opens a possibly-issued entry,
	// as for the enroll steps (unit.runStep): FIELD_CHECK_UNAVAILABLE is the CA's
	// unavailability here.
	issued, err := u.r.cfg.Issuers[k.profile.Issuer].Enroll(ctx, EnrollRequest{Serial: u.serial, CSR: csr, ClientCert: cred, Reenroll: true,
		OnRetry: func() { u.answerLost.Store(true) }})
	if err != nil {
		code := CodeFieldCheckUnavailable
		switch CodeOf(err) {
		case CodeCARejected:
			code = CodeFieldCheckRejected
		case CodeCertInvalid:
			code = CodeCertInvalid
		}
		return nil, fail(code, err, "re-enrolling the LDevID at %s", k.profile.Issuer)
	}
	rec, err := u.recordCertificate(ctx, k.role, issued.Leaf.Raw, chainDER(issued.Chain)...)
	if err != nil {
		return nil, fail(CodeInternal, err, "recording the re-enrolled LDevID certificate")
	}
	if err := u.checkIssued(roleLDevID, issued, requested); err != nil {
		u.refuseCert(ctx, issued.Leaf.Raw, err.Error())
		return nil, err
	}
	if rec.Duplicate {
		// Not a second enrollment: the CA re-enrolled the LDevID the unit keeps.
		rctx, cancel := recording(ctx)
		defer cancel()
		if err := u.r.cfg.Journal.SetCertificateStatus(rctx, u.serial, rec.SHA256, store.CertDuplicate,
			"issued by the field check's re-enrollment; the unit keeps its provisioned LDevID"); err != nil {
			return nil, fail(CodeInternal, err, "marking the re-enrolled LDevID certificate")
		}
	}
	if signatures.Load() == 0 {
		return nil, fail(CodeInternal, nil, "the re-enrollment went without the TPM's signature")
	}
	return journal.FieldCheckResult{Mode: FieldCheckReenroll, Endpoint: k.profile.Issuer, ClientCertSHA256: sha(k.cert.Raw),
		Signatures: int(signatures.Load()), Cert: issued.Leaf.Raw, Chain: chainDER(issued.Chain)}, nil
}
