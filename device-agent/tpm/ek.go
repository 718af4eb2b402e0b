package tpm

import (
	"encoding/asn1"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// EK is an endorsement key with its certificate.
type EK struct {
	// Algorithm is the EK's key type.
	Algorithm Algorithm
	// Public is the TPM-marshalled TPMT_PUBLIC.
	Public []byte
	// Persisted is true when the EK was read from its persistent handle, false when recreated.
	Persisted bool
	// Handle is the persistent handle the EK was read from, 0 when recreated.
	Handle uint32
	// Certificate is the DER EK certificate, NV header and trailing bytes removed; nil when
	// the index is absent or holds no certificate.
	Certificate []byte
	// CertificateIndex is the NV index the certificate is read from.
	CertificateIndex uint32
	// CertificateRawSize is the size of the NV contents the certificate was cut from.
	CertificateRawSize uint32
}

// EKHandles returns the TCG persistent handle and certificate NV index of the EK of alg.
func EKHandles(alg Algorithm) (handle, certIndex uint32, err error) {
	t, err := ekType(alg)
	if err != nil {
		return 0, 0, err
	}
	return t.Handle, t.CertIndex, nil
}

// ReadEK returns the EK of alg: its public area from the persistent handle (EKHandleRSA,
// EKHandleECC, EKHandleECCP384 or EKHandleRSA3072) when the object there has the TCG default
// EK template, else recreated with CreatePrimary from that template and flushed; plus the
// certificate from the type's EK certificate index with any vendor header and trailing padding
// cut off.
func (t *TPM) ReadEK(alg Algorithm) (*EK, error) {
	handle, certIndex, err := EKHandles(alg)
	if err != nil {
		return nil, fmt.Errorf("reading EK: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	ek := &EK{Algorithm: alg, CertificateIndex: certIndex}
	o, persisted, err := t.ek(alg)
	if err != nil {
		return nil, fmt.Errorf("reading %v EK: %w", alg, err)
	}
	if persisted {
		ek.Persisted, ek.Handle = true, handle
	} else {
		t.flush(o.handle)
	}
	ek.Public = o.raw

	nv, err := t.nvRead(certIndex)
	switch {
	case err == nil:
		ek.CertificateRawSize = uint32(len(nv.Data))
		if cert, _, ok := findCertificate(nv.Data); ok {
			ek.Certificate = cert
		}
	case isNotFound(err):
	default:
		return nil, fmt.Errorf("reading %v EK certificate: %w", alg, err)
	}
	t.log.Debug("read EK", logKeyOp, "read_ek", "alg", alg.String(), "persisted", ek.Persisted, "cert_bytes", len(ek.Certificate))
	return ek, nil
}

// ek returns the EK of alg: the persistent one when its template matches, else a transient
// one the caller must flush (persisted=false).
func (t *TPM) ek(alg Algorithm) (o *object, persisted bool, err error) {
	handle, _, err := EKHandles(alg)
	if err != nil {
		return nil, false, err
	}
	tmpl := EKTemplate(alg)
	o, err = t.readPublic(handle)
	switch {
	case err == nil && sameTemplate(o.public, tmpl) && o.isPrimaryOf(tpm2.TPMRHEndorsement):
		return o, true, nil
	case err == nil:
		t.log.Warn("object at the EK handle is not a default EK; recreating the EK", logKeyHandle, fmt.Sprintf("%#x", handle))
	case !isNotFound(err):
		return nil, false, err
	}
	o, err = t.createPrimary(tpm2.TPMRHEndorsement, tmpl)
	if err != nil {
		return nil, false, err
	}
	return o, false, nil
}

// ReadEKChain returns the DER certificates stored in the NV indices EKChainIndexFirst to
// EKChainIndexLast, in index order; an index may hold several concatenated certificates.
func (t *TPM) ReadEKChain() ([][]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	indices, err := t.handles(EKChainIndexFirst, EKChainIndexLast)
	if err != nil {
		return nil, fmt.Errorf("listing EK chain indices: %w", err)
	}
	var certs [][]byte
	for _, idx := range indices {
		nv, err := t.nvRead(idx)
		if err != nil {
			return nil, fmt.Errorf("reading EK chain: %w", err)
		}
		rest := nv.Data
		for {
			cert, next, ok := findCertificate(rest)
			if !ok {
				break
			}
			certs = append(certs, cert)
			rest = next
		}
	}
	return certs, nil
}

// ProvisionEK creates the EK of alg from the TCG default template and persists it at handle
// (what a TPM vendor does). Idempotent: an EK of that template already at handle is returned;
// any other object there gives ErrHandleOccupied.
func (t *TPM) ProvisionEK(alg Algorithm, handle uint32) (public []byte, err error) {
	if _, err := ekType(alg); err != nil {
		return nil, fmt.Errorf("provisioning EK: %w", err)
	}
	if !validPersistent(handle) {
		return nil, fmt.Errorf("provisioning EK: %w: handle %#x", ErrInvalidArgument, handle)
	}
	tmpl := EKTemplate(alg)
	t.mu.Lock()
	defer t.mu.Unlock()
	o, err := t.readPublic(handle)
	switch {
	case err == nil && sameTemplate(o.public, tmpl) && o.isPrimaryOf(tpm2.TPMRHEndorsement):
		return o.raw, nil
	case err == nil:
		return nil, fmt.Errorf("provisioning %v EK at %#x: %w: another object is there", alg, handle, ErrHandleOccupied)
	case !isNotFound(err):
		return nil, fmt.Errorf("provisioning %v EK: %w", alg, err)
	}
	o, err = t.createPrimary(tpm2.TPMRHEndorsement, tmpl)
	if err != nil {
		return nil, fmt.Errorf("provisioning %v EK: %w", alg, err)
	}
	defer t.flush(o.handle)
	if err := t.persist(o, handle); err != nil {
		return nil, fmt.Errorf("provisioning %v EK: %w", alg, err)
	}
	t.log.Debug("provisioned EK", logKeyOp, "provision_ek", "alg", alg.String(), logKeyHandle, fmt.Sprintf("%#x", handle))
	return o.raw, nil
}

// findCertificate locates the first DER certificate in b, skipping any prefix (such as the
// 4-byte 0x10 0x01 0x00 xx header some vendors put in NV), and cuts it at its encoded length.
// It returns the certificate and the bytes after it. A certificate is recognised by its
// structure: a SEQUENCE with a long-form length that fits in b, whose contents start with
// another SEQUENCE (the TBSCertificate) that fits in the outer one.
func findCertificate(b []byte) (cert, rest []byte, ok bool) {
	for i := 0; i+4 <= len(b); i++ {
		if b[i] != 0x30 || b[i+1] < 0x81 || b[i+1] > 0x84 {
			continue
		}
		var outer asn1.RawValue
		after, err := asn1.Unmarshal(b[i:], &outer)
		if err != nil || outer.Class != asn1.ClassUniversal || outer.Tag != asn1.TagSequence || !outer.IsCompound {
			continue
		}
		var tbs asn1.RawValue
		if _, err := asn1.Unmarshal(outer.Bytes, &tbs); err != nil || tbs.Tag != asn1.TagSequence || !tbs.IsCompound {
			continue
		}
		return outer.FullBytes, after, true
	}
	return nil, nil, false
}
