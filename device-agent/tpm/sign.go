package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"io"
	"math/big"

	"github.com/google/go-tpm/tpm2"
)

// Extension is an X.509 extension for BuildCSR.
type Extension = pkix.Extension

// hashAlg maps a crypto.Hash to its TPM algorithm.
func hashAlg(h crypto.Hash) (tpm2.TPMIAlgHash, error) {
	switch h {
	case crypto.SHA256:
		return tpm2.TPMAlgSHA256, nil
	case crypto.SHA384:
		return tpm2.TPMAlgSHA384, nil
	}
	return 0, fmt.Errorf("%w: hash %v (want SHA-256 or SHA-384)", ErrInvalidArgument, h)
}

// Sign signs digest (made with hash) with the key at handle and scheme: ECDSA answers an ASN.1
// DER signature, RSASSA and RSAPSS the raw signature. SchemeDefault is ECDSA for ECC keys and
// RSASSA for RSA keys. A key whose template fixes a scheme signs only with that scheme.
// ErrNotFound when no key is at handle.
func (t *TPM) Sign(handle uint32, digest []byte, hash crypto.Hash, scheme Scheme) ([]byte, error) {
	halg, err := hashAlg(hash)
	if err != nil {
		return nil, fmt.Errorf("signing with %#x: %w", handle, err)
	}
	if len(digest) != hash.Size() {
		return nil, fmt.Errorf("signing with %#x: %w: digest is %d bytes, %v wants %d", handle, ErrInvalidArgument, len(digest), hash, hash.Size())
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	key, err := t.readPublic(handle)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	sigAlg, err := signScheme(&key.public, scheme)
	if err != nil {
		return nil, fmt.Errorf("signing with %#x: %w", handle, err)
	}
	rsp, err := (tpm2.Sign{
		KeyHandle: tpm2.AuthHandle{Handle: key.handle, Name: tpm2.TPM2BName{Buffer: key.name}, Auth: tpm2.PasswordAuth(nil)},
		Digest:    tpm2.TPM2BDigest{Buffer: digest},
		InScheme: tpm2.TPMTSigScheme{
			Scheme:  sigAlg,
			Details: tpm2.NewTPMUSigScheme(sigAlg, &tpm2.TPMSSchemeHash{HashAlg: halg}),
		},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}).Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("signing with %#x: %w", handle, err)
	}
	sig, err := encodeSignature(&rsp.Signature)
	if err != nil {
		return nil, fmt.Errorf("signing with %#x: %w", handle, err)
	}
	return sig, nil
}

// encodeSignature converts a TPMT_SIGNATURE: an ASN.1 DER signature for ECDSA, the raw
// signature for RSASSA and RSAPSS.
func encodeSignature(sig *tpm2.TPMTSignature) ([]byte, error) {
	switch sig.SigAlg {
	case tpm2.TPMAlgECDSA:
		s, err := sig.Signature.ECDSA()
		if err != nil {
			return nil, err
		}
		return asn1.Marshal(struct{ R, S *big.Int }{
			new(big.Int).SetBytes(s.SignatureR.Buffer),
			new(big.Int).SetBytes(s.SignatureS.Buffer),
		})
	case tpm2.TPMAlgRSAPSS:
		s, err := sig.Signature.RSAPSS()
		if err != nil {
			return nil, err
		}
		return s.Sig.Buffer, nil
	default:
		s, err := sig.Signature.RSASSA()
		if err != nil {
			return nil, err
		}
		return s.Sig.Buffer, nil
	}
}

// signScheme picks the TPM signature scheme for a key and a requested Scheme.
func signScheme(p *tpm2.TPMTPublic, scheme Scheme) (tpm2.TPMAlgID, error) {
	if !p.ObjectAttributes.SignEncrypt || p.ObjectAttributes.Restricted {
		return 0, fmt.Errorf("%w: not an unrestricted signing key", ErrInvalidArgument)
	}
	var want, fixed tpm2.TPMAlgID
	switch p.Type {
	case tpm2.TPMAlgECC:
		if scheme != SchemeDefault && scheme != ECDSA {
			return 0, fmt.Errorf("%w: scheme %d for an ECC key", ErrInvalidArgument, int(scheme))
		}
		want = tpm2.TPMAlgECDSA
		if d, err := p.Parameters.ECCDetail(); err == nil {
			fixed = d.Scheme.Scheme
		}
	case tpm2.TPMAlgRSA:
		switch scheme {
		case SchemeDefault, RSASSA:
			want = tpm2.TPMAlgRSASSA
		case RSAPSS:
			want = tpm2.TPMAlgRSAPSS
		default:
			return 0, fmt.Errorf("%w: scheme %d for an RSA key", ErrInvalidArgument, int(scheme))
		}
		if d, err := p.Parameters.RSADetail(); err == nil {
			fixed = d.Scheme.Scheme
		}
	default:
		return 0, fmt.Errorf("%w: key type %v", ErrInvalidArgument, p.Type)
	}
	if fixed != tpm2.TPMAlgNull && fixed != 0 && fixed != want {
		return 0, fmt.Errorf("%w: the key's template fixes scheme %v", ErrInvalidArgument, fixed)
	}
	return want, nil
}

// tpmSigner is a crypto.Signer backed by a persistent TPM key.
type tpmSigner struct {
	t      *TPM
	handle uint32
	pub    crypto.PublicKey
}

// Signer returns a crypto.Signer backed by the persistent key at handle. Public is read once
// with ReadPublic. Sign honours *rsa.PSSOptions (RSAPSS, salt length equal to the hash length),
// any other crypto.SignerOpts on an RSA key gives RSASSA-PKCS1-v1_5 and an ECC key gives a DER
// ECDSA signature; SHA-256 and SHA-384. The Signer is safe for concurrent use.
func (t *TPM) Signer(handle uint32) (crypto.Signer, error) {
	t.mu.Lock()
	key, err := t.readPublic(handle)
	t.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("making signer: %w", err)
	}
	if _, err := signScheme(&key.public, SchemeDefault); err != nil {
		return nil, fmt.Errorf("making signer for %#x: %w", handle, err)
	}
	pub, err := tpm2.Pub(key.public)
	if err != nil {
		return nil, fmt.Errorf("making signer for %#x: %w", handle, err)
	}
	return &tpmSigner{t: t, handle: handle, pub: pub}, nil
}

// Public implements crypto.Signer.
func (s *tpmSigner) Public() crypto.PublicKey { return s.pub }

// Sign implements crypto.Signer; rand is not used (the TPM has its own).
func (s *tpmSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	scheme := SchemeDefault
	switch s.pub.(type) {
	case *ecdsa.PublicKey:
		scheme = ECDSA
	case *rsa.PublicKey:
		scheme = RSASSA
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			if pss.SaltLength != rsa.PSSSaltLengthAuto && pss.SaltLength != rsa.PSSSaltLengthEqualsHash && pss.SaltLength != opts.HashFunc().Size() {
				return nil, fmt.Errorf("signing with %#x: %w: PSS salt length %d", s.handle, ErrInvalidArgument, pss.SaltLength)
			}
			scheme = RSAPSS
		}
	}
	return s.t.Sign(s.handle, digest, opts.HashFunc(), scheme)
}

// BuildCSR returns a DER PKCS#10 request signed by the TPM key at handle with scheme, whose
// subject is exactly subjectDER (a DER Name) and whose extensions are exactly exts, in order.
// The request's signature, subject and extensions are checked before it is returned. A
// restricted signing key (the IAK) signs with the scheme its template fixes, the request's
// digest computed by the TPM (restrictedSigner).
func (t *TPM) BuildCSR(handle uint32, subjectDER []byte, exts []Extension, scheme Scheme) ([]byte, error) {
	var subject pkix.RDNSequence
	if rest, err := asn1.Unmarshal(subjectDER, &subject); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("building CSR: %w: subject is not one DER Name", ErrInvalidArgument)
	}
	signer, err := t.csrSigner(handle)
	if err != nil {
		return nil, fmt.Errorf("building CSR: %w", err)
	}
	var sigAlg x509.SignatureAlgorithm
	switch signer.Public().(type) {
	case *ecdsa.PublicKey:
		if scheme != SchemeDefault && scheme != ECDSA {
			return nil, fmt.Errorf("building CSR: %w: scheme %d for an ECC key", ErrInvalidArgument, int(scheme))
		}
		sigAlg = x509.ECDSAWithSHA256
	case *rsa.PublicKey:
		switch scheme {
		case SchemeDefault, RSASSA:
			sigAlg = x509.SHA256WithRSA
		case RSAPSS:
			sigAlg = x509.SHA256WithRSAPSS
		default:
			return nil, fmt.Errorf("building CSR: %w: scheme %d for an RSA key", ErrInvalidArgument, int(scheme))
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		RawSubject:         subjectDER,
		ExtraExtensions:    exts,
		SignatureAlgorithm: sigAlg,
	}, signer)
	if err != nil {
		return nil, fmt.Errorf("building CSR with %#x: %w", handle, err)
	}
	if err := checkCSR(der, subjectDER, exts); err != nil {
		return nil, fmt.Errorf("building CSR with %#x: %w", handle, err)
	}
	t.log.Debug("built CSR", logKeyOp, "build_csr", logKeyHandle, fmt.Sprintf("%#x", handle), "extensions", len(exts))
	return der, nil
}

// checkCSR verifies a CSR's signature, subject and extensions.
func checkCSR(der, subjectDER []byte, exts []Extension) error {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return fmt.Errorf("parsing the CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("checking the CSR signature: %w", err)
	}
	if !bytes.Equal(csr.RawSubject, subjectDER) {
		return fmt.Errorf("the CSR subject differs from the one asked for")
	}
	if len(csr.Extensions) != len(exts) {
		return fmt.Errorf("the CSR has %d extensions, want %d", len(csr.Extensions), len(exts))
	}
	for i, e := range exts {
		g := csr.Extensions[i]
		if !g.Id.Equal(e.Id) || g.Critical != e.Critical || !bytes.Equal(g.Value, e.Value) {
			return fmt.Errorf("CSR extension %d (%v) differs from the one asked for", i, e.Id)
		}
	}
	return nil
}
