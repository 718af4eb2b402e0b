package tpm

import (
	"bytes"
	"crypto"
	"encoding/binary"
	"fmt"

	"github.com/devid-station/devid/device-agent/tpm/tcgek"
	"github.com/google/go-tpm/tpm2"
)

// ekType returns the TCG EK Credential Profile's EK type of alg: RSA-2048 (template L-1),
// ECC P-256 (L-2), ECC P-384 (H-3) or RSA-3072 (H-6).
func ekType(alg Algorithm) (tcgek.Type, error) {
	switch alg {
	case RSA2048:
		return tcgek.RSA2048, nil
	case ECCP256:
		return tcgek.ECCP256, nil
	case ECCP384:
		return tcgek.ECCP384, nil
	case RSA3072:
		return tcgek.RSA3072, nil
	}
	return tcgek.Type{}, fmt.Errorf("%w: no EK type %v", ErrInvalidArgument, alg)
}

// EKTemplate returns the TCG default EK template of alg (EK Credential Profile: RSA-2048
// template L-1, ECC P-256 L-2, ECC P-384 H-3, RSA-3072 H-6). It panics on an unknown
// algorithm.
func EKTemplate(alg Algorithm) tpm2.TPMTPublic {
	t, err := ekType(alg)
	if err != nil {
		panic(fmt.Sprintf("tpm: %v", err))
	}
	return t.Public
}

// SRKTemplate returns the TCG SRK template of alg (TPM 2.0 Provisioning Guidance). It panics
// on an unknown algorithm.
func SRKTemplate(alg Algorithm) tpm2.TPMTPublic {
	switch alg {
	case RSA2048:
		return tpm2.RSASRKTemplate
	case ECCP256:
		return tpm2.ECCSRKTemplate
	}
	panic(fmt.Sprintf("tpm: no SRK template for %v", alg))
}

// DevIDTemplate returns the DevID signing-key template of alg (TCG TPM 2.0 Keys for Device
// Identity and Attestation): fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, noDA,
// sign (TPMA_OBJECT 0x00040472); not decrypt, not restricted; nameAlg SHA-256; scheme NULL so
// each signature picks its scheme; RSA-2048 or ECC P-256 with an empty unique field and an
// empty auth value. noDA: an empty auth value has nothing a dictionary attack could guess, and
// a key under DA protection is refused (TPM_RC_LOCKOUT) once the TPM's failure counter, which
// every unorderly power loss raises, reaches its limit. It panics on an unknown algorithm.
func DevIDTemplate(alg Algorithm) tpm2.TPMTPublic {
	attrs := tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		NoDA:                true,
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
				Scheme:    tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
				KeyBits:   2048,
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
				Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
				CurveID:   tpm2.TPMECCNistP256,
				KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
		}
	}
	panic(fmt.Sprintf("tpm: no DevID template for %v", alg))
}

// parsePublic unmarshals a TPM-marshalled TPMT_PUBLIC (no size prefix) and rejects trailing
// bytes.
func parsePublic(public []byte) (*tpm2.TPMTPublic, error) {
	p, err := tpm2.Unmarshal[tpm2.TPMTPublic](public)
	if err != nil {
		return nil, fmt.Errorf("%w: TPMT_PUBLIC: %v", ErrInvalidArgument, err)
	}
	if n := len(tpm2.Marshal(*p)); n != len(public) {
		return nil, fmt.Errorf("%w: TPMT_PUBLIC: %d trailing bytes", ErrInvalidArgument, len(public)-n)
	}
	return p, nil
}

// PublicKey parses a TPM-marshalled TPMT_PUBLIC into a Go public key (*rsa.PublicKey or
// *ecdsa.PublicKey).
func PublicKey(public []byte) (crypto.PublicKey, error) {
	p, err := parsePublic(public)
	if err != nil {
		return nil, err
	}
	k, err := tpm2.Pub(*p)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	return k, nil
}

// Name returns the TPM Name (nameAlg identifier followed by the digest) of a TPM-marshalled
// TPMT_PUBLIC, as the TPM computes it.
func Name(public []byte) ([]byte, error) {
	p, err := parsePublic(public)
	if err != nil {
		return nil, err
	}
	n, err := tpm2.ObjectName(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	return n.Buffer, nil
}

// sameKeyTemplate reports whether the key o was made from tmpl (sameTemplate), or from tmpl
// without noDA, as DevID keys and IAKs were before their templates set it: such a key is still
// the unit's key (a resumed or reworked unit keeps it), only under DA protection.
func sameKeyTemplate(o, tmpl tpm2.TPMTPublic) bool {
	if sameTemplate(o, tmpl) {
		return true
	}
	tmpl.ObjectAttributes.NoDA = false
	return sameTemplate(o, tmpl)
}

// sameTemplate reports whether two public areas are equal apart from their unique fields.
func sameTemplate(a, b tpm2.TPMTPublic) bool {
	if a.Type != b.Type {
		return false
	}
	return bytes.Equal(tpm2.Marshal(tcgek.WithoutUnique(a)), tpm2.Marshal(tcgek.WithoutUnique(b)))
}

// algorithmOf returns the Algorithm of a public area, or AlgUnspecified.
func algorithmOf(p *tpm2.TPMTPublic) Algorithm {
	switch p.Type {
	case tpm2.TPMAlgRSA:
		if d, err := p.Parameters.RSADetail(); err == nil {
			switch d.KeyBits {
			case 2048:
				return RSA2048
			case 3072:
				return RSA3072
			}
		}
	case tpm2.TPMAlgECC:
		if d, err := p.Parameters.ECCDetail(); err == nil {
			switch d.CurveID {
			case tpm2.TPMECCNistP256:
				return ECCP256
			case tpm2.TPMECCNistP384:
				return ECCP384
			}
		}
	}
	return AlgUnspecified
}

// qualifiedName computes the Qualified Name of an object named name under a parent whose
// Qualified Name is parentQN (for a primary object: the hierarchy handle), with the object's
// nameAlg (TPM 2.0 Part 1, 16: QN(B) = H_nameAlg(QN(parent) || Name(B))).
func qualifiedName(parentQN, name []byte) ([]byte, error) {
	if len(name) < 2 {
		return nil, fmt.Errorf("%w: short name", ErrInvalidArgument)
	}
	alg := tpm2.TPMAlgID(binary.BigEndian.Uint16(name))
	hash, err := alg.Hash()
	if err != nil {
		return nil, fmt.Errorf("%w: name algorithm %#x", ErrInvalidArgument, uint16(alg))
	}
	h := hash.New()
	h.Write(parentQN)
	h.Write(name)
	return h.Sum(binary.BigEndian.AppendUint16(nil, uint16(alg))), nil
}

// hierarchyQN is the Qualified Name of a hierarchy: its handle.
func hierarchyQN(h tpm2.TPMHandle) []byte { return binary.BigEndian.AppendUint32(nil, uint32(h)) }
