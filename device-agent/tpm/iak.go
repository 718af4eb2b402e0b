package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"fmt"
	"io"

	"github.com/google/go-tpm/tpm2"
)

// IAKTemplate returns the Initial Attestation Key template of alg (TCG TPM 2.0 Keys for Device
// Identity and Attestation): fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, noDA,
// restricted, sign (TPMA_OBJECT 0x00050472); not decrypt; nameAlg SHA-256; the signing scheme
// fixed to RSASSA or ECDSA with SHA-256, as a restricted signing key needs one for
// TPM2_Certify; RSA-2048 or ECC P-256 with an empty unique field and an empty auth value.
// adminWithPolicy is clear: the station's residency proof (TPM2_ActivateCredential) uses the
// IAK's admin role, which then takes the empty auth value, as for the DevID keys; noDA as
// theirs (DevIDTemplate). It panics on an unknown algorithm.
func IAKTemplate(alg Algorithm) tpm2.TPMTPublic {
	attrs := tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		NoDA:                true,
		Restricted:          true,
		SignEncrypt:         true,
	}
	switch alg {
	case RSA2048:
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgRSA,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme: tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSASSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256})},
				KeyBits: 2048,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
		}
	case ECCP256:
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgECC,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
				CurveID: tpm2.TPMECCNistP256,
				KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
		}
	}
	panic(fmt.Sprintf("tpm: no IAK template for %v", alg))
}

// maxQualifyingData bounds TPM2_Certify's qualifyingData (a TPM2B_DATA: a TPMT_HA, at most 64
// bytes).
const maxQualifyingData = 64

// Certification is TPM2_Certify's answer.
type Certification struct {
	// Attest is the signed TPMS_ATTEST (TPM2B_ATTEST contents, no size prefix).
	Attest []byte
	// Signature is the TPMT_SIGNATURE over Attest, TPM-marshalled.
	Signature []byte
}

// Certify runs TPM2_Certify: the key at signHandle (a signing key whose template fixes its
// scheme: the IAK) signs a TPMS_ATTEST naming the object at objectHandle, with qualifyingData
// (at most 64 bytes: the verifier's nonce) as extraData. Both objects are persistent with
// empty auth values. ErrNotFound when either handle holds nothing.
func (t *TPM) Certify(objectHandle, signHandle uint32, qualifyingData []byte) (*Certification, error) {
	for _, h := range []uint32{objectHandle, signHandle} {
		if h < persistentFirst || h > persistentLast {
			return nil, fmt.Errorf("certifying: %w: %#x is not a persistent handle", ErrInvalidArgument, h)
		}
	}
	if len(qualifyingData) > maxQualifyingData {
		return nil, fmt.Errorf("certifying: %w: %d bytes of qualifying data (at most %d)", ErrInvalidArgument, len(qualifyingData), maxQualifyingData)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	obj, err := t.readPublic(objectHandle)
	if err != nil {
		return nil, fmt.Errorf("certifying: %w", err)
	}
	signer, err := t.readPublic(signHandle)
	if err != nil {
		return nil, fmt.Errorf("certifying: %w", err)
	}
	if !signer.public.ObjectAttributes.SignEncrypt {
		return nil, fmt.Errorf("certifying: %w: %#x is not a signing key", ErrInvalidArgument, signHandle)
	}
	rsp, err := (tpm2.Certify{
		ObjectHandle:   tpm2.AuthHandle{Handle: obj.handle, Name: tpm2.TPM2BName{Buffer: obj.name}, Auth: tpm2.PasswordAuth(nil)},
		SignHandle:     tpm2.AuthHandle{Handle: signer.handle, Name: tpm2.TPM2BName{Buffer: signer.name}, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: qualifyingData},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
	}).Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("certifying %#x with %#x: %w", objectHandle, signHandle, err)
	}
	t.log.Debug("certified object", logKeyOp, "certify", logKeyHandle, fmt.Sprintf("%#x", objectHandle), "sign_handle", fmt.Sprintf("%#x", signHandle))
	return &Certification{Attest: rsp.CertifyInfo.Bytes(), Signature: tpm2.Marshal(rsp.Signature)}, nil
}

// maxHashData is the most TPM2_Hash takes at once (MAX_DIGEST_BUFFER, 1024 on every TPM the
// station meets).
const maxHashData = 1024

// csrSigner returns the signer BuildCSR uses for the key at handle: Signer for an unrestricted
// key, restrictedSigner for a restricted signing key.
func (t *TPM) csrSigner(handle uint32) (crypto.Signer, error) {
	t.mu.Lock()
	key, err := t.readPublic(handle)
	t.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("making signer: %w", err)
	}
	if !key.public.ObjectAttributes.Restricted {
		return t.Signer(handle)
	}
	if !key.public.ObjectAttributes.SignEncrypt || key.public.ObjectAttributes.Decrypt {
		return nil, fmt.Errorf("making signer for %#x: %w: not a signing key", handle, ErrInvalidArgument)
	}
	pub, err := tpm2.Pub(key.public)
	if err != nil {
		return nil, fmt.Errorf("making signer for %#x: %w", handle, err)
	}
	return &restrictedSigner{t: t, handle: handle, pub: pub}, nil
}

// restrictedSigner signs messages with a restricted signing key: the TPM hashes the message
// itself (TPM2_Hash), which proves it does not start with TPM_GENERATED_VALUE, and signs the
// digest with that ticket. It implements crypto.MessageSigner (x509 hands it the whole
// to-be-signed encoding); a bare digest cannot be signed.
type restrictedSigner struct {
	t      *TPM
	handle uint32
	pub    crypto.PublicKey
}

// Public implements crypto.Signer.
func (s *restrictedSigner) Public() crypto.PublicKey { return s.pub }

// Sign implements crypto.Signer: a restricted key signs no digest it did not compute.
func (s *restrictedSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, fmt.Errorf("signing with %#x: %w: a restricted key signs messages, not digests", s.handle, ErrInvalidArgument)
}

// SignMessage implements crypto.MessageSigner with SHA-256 and the key's fixed scheme.
func (s *restrictedSigner) SignMessage(_ io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts.HashFunc() != crypto.SHA256 {
		return nil, fmt.Errorf("signing with %#x: %w: hash %v (the key signs with SHA-256)", s.handle, ErrInvalidArgument, opts.HashFunc())
	}
	if _, pss := opts.(*rsa.PSSOptions); pss {
		return nil, fmt.Errorf("signing with %#x: %w: the key's scheme is RSASSA", s.handle, ErrInvalidArgument)
	}
	if len(msg) > maxHashData {
		return nil, fmt.Errorf("signing with %#x: %w: message of %d bytes (at most %d)", s.handle, ErrInvalidArgument, len(msg), maxHashData)
	}
	scheme := tpm2.TPMAlgRSASSA
	if _, ok := s.pub.(*ecdsa.PublicKey); ok {
		scheme = tpm2.TPMAlgECDSA
	}
	t := s.t
	t.mu.Lock()
	defer t.mu.Unlock()
	key, err := t.readPublic(s.handle)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	h, err := (tpm2.Hash{Data: tpm2.TPM2BMaxBuffer{Buffer: msg}, HashAlg: tpm2.TPMAlgSHA256, Hierarchy: tpm2.TPMRHEndorsement}).Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("signing with %#x: hashing: %w", s.handle, err)
	}
	rsp, err := (tpm2.Sign{
		KeyHandle: tpm2.AuthHandle{Handle: key.handle, Name: tpm2.TPM2BName{Buffer: key.name}, Auth: tpm2.PasswordAuth(nil)},
		Digest:    h.OutHash,
		InScheme: tpm2.TPMTSigScheme{Scheme: scheme,
			Details: tpm2.NewTPMUSigScheme(scheme, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256})},
		Validation: h.Validation,
	}).Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("signing with %#x: %w", s.handle, err)
	}
	sig, err := encodeSignature(&rsp.Signature)
	if err != nil {
		return nil, fmt.Errorf("signing with %#x: %w", s.handle, err)
	}
	return sig, nil
}
