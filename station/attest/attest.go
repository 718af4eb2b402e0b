// Package attest holds the station's checks on what a device agent reports about its TPM: EK
// public areas against EK certificates, DevID key attributes, credentials for the proof of
// residency, CSRs, and signatures over station nonces. The agent's word is evidence, never
// truth: every value this package returns is computed from bytes it has checked, never taken
// from the agent (a Name, for instance, is always recomputed from the public area).
//
// The functions are pure and safe for concurrent use.
package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"

	"github.com/devid-station/devid/device-agent/tpm/tcgek"
	"github.com/google/go-tpm/tpm2"
)

// Sentinel errors; the workflow maps each to a stable error code.
var (
	// ErrMalformed: the bytes are not a well-formed TPM structure or certificate request.
	ErrMalformed = errors.New("malformed")
	// ErrEKMismatch: the EK public area does not hold the EK certificate's key.
	ErrEKMismatch = errors.New("EK public area does not match the EK certificate")
	// ErrEKTemplate: the EK public area is not a TCG default EK.
	ErrEKTemplate = errors.New("EK public area is not a TCG default endorsement key")
	// ErrKeyAttributes: a DevID key lacks a required attribute or has a forbidden one.
	ErrKeyAttributes = errors.New("key attributes do not meet the DevID profile")
	// ErrActivation: the credential secret returned by the agent is wrong.
	ErrActivation = errors.New("credential activation proof failed")
	// ErrCSR: the CSR is not signed by the attested key or asks for something else.
	ErrCSR = errors.New("CSR does not match the request")
	// ErrSignature: a signature does not verify.
	ErrSignature = errors.New("signature does not verify")
)

// Key is a TPM object's public area with what is derived from it.
type Key struct {
	// Public is the parsed public area. Its parameters may be shared with the other keys of
	// the same template (see template): read them, never modify them.
	Public tpm2.TPMTPublic
	// Raw is the marshalled public area as checked.
	Raw []byte
	// PublicKey is the Go public key (*rsa.PublicKey or *ecdsa.PublicKey).
	PublicKey crypto.PublicKey
	// Name is the TPM Name computed from Raw (nameAlg || H(Raw)).
	Name []byte
}

// ParsePublic parses a marshalled TPMT_PUBLIC of a DevID key: it refuses trailing bytes, a
// name algorithm other than SHA-256 and keys other than RSA-2048 and ECC P-256, and computes
// its Name.
func ParsePublic(raw []byte) (*Key, error) {
	k, _, err := parseAny(raw)
	if err != nil {
		return nil, err
	}
	if k.Public.NameAlg != tpm2.TPMAlgSHA256 {
		return nil, fmt.Errorf("%w: name algorithm %#x is not SHA-256", ErrKeyAttributes, k.Public.NameAlg)
	}
	if err := checkKeySize(k.PublicKey); err != nil {
		return nil, err
	}
	return k, nil
}

// parseAny parses a marshalled TPMT_PUBLIC, refuses trailing bytes and computes its Name; t
// is the template it was parsed through (nil for a type the memo does not keep).
func parseAny(raw []byte) (k *Key, t *template, err error) {
	pub, t, ok := parseMemo(raw)
	if !ok {
		full, err := tpm2.Unmarshal[tpm2.TPMTPublic](raw)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: public area: %v", ErrMalformed, err)
		}
		if !bytes.Equal(tpm2.Marshal(full), raw) {
			return nil, nil, fmt.Errorf("%w: public area has trailing or non-canonical bytes", ErrMalformed)
		}
		pub, t = *full, remember(full, raw)
	}
	// The Name is nameAlg || H(TPMT_PUBLIC): raw is that encoding (checked above), so hash it
	// rather than have tpm2.ObjectName encode pub again by reflection.
	h, err := pub.NameAlg.Hash()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: computing name: %v", ErrMalformed, err)
	}
	if !h.Available() {
		return nil, nil, fmt.Errorf("%w: computing name: name algorithm %#x is not available", ErrMalformed, pub.NameAlg)
	}
	hash := h.New()
	hash.Write(raw)
	name := hash.Sum(binary.BigEndian.AppendUint16(make([]byte, 0, 2+h.Size()), uint16(pub.NameAlg)))
	pk, err := tpm2.Pub(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: public key: %v", ErrMalformed, err)
	}
	return &Key{Public: pub, Raw: raw, PublicKey: pk, Name: name}, t, nil
}

func checkKeySize(pk crypto.PublicKey) error {
	switch k := pk.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() != 2048 {
			return fmt.Errorf("%w: RSA modulus of %d bits, want 2048", ErrKeyAttributes, k.N.BitLen())
		}
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("%w: ECC curve %s, want P-256", ErrKeyAttributes, k.Curve.Params().Name)
		}
	default:
		return fmt.Errorf("%w: unsupported key type %T", ErrKeyAttributes, pk)
	}
	return nil
}

// CheckEK checks that raw is an EK of the TCG EK Credential Profile (templates L-1 RSA-2048,
// L-2 ECC P-256, H-3 ECC P-384 or H-6 RSA-3072, see tcgek: a restricted decryption key,
// fixedTPM, fixedParent, sensitiveDataOrigin, with the profile's EK policy, every field but
// the unique one as the template says) whose key equals the certificate's public key. It
// returns the key and its EK type.
func CheckEK(raw []byte, cert *x509.Certificate) (*Key, tcgek.Type, error) {
	k, tmpl, err := parseAny(raw)
	if err != nil {
		return nil, tcgek.Type{}, err
	}
	var t tcgek.Type
	var ok bool
	if tmpl != nil {
		t, ok = tmpl.ekType, tmpl.ekOK
	} else {
		t, ok = tcgek.Match(k.Public)
	}
	if !ok {
		return nil, tcgek.Type{}, fmt.Errorf("%w: type %#x, name algorithm %#x, object attributes %#x", ErrEKTemplate,
			k.Public.Type, k.Public.NameAlg, attrBits(k.Public.ObjectAttributes))
	}
	if !publicKeysEqual(k.PublicKey, cert.PublicKey) {
		return nil, tcgek.Type{}, ErrEKMismatch
	}
	return k, t, nil
}

// CheckDevID checks that raw is a DevID signing key as TCG's device identity profile requires:
// fixedTPM, fixedParent, sensitiveDataOrigin and sign set; decrypt and restricted clear; RSA-2048
// or ECC P-256; name algorithm SHA-256. noDA is the TPM owner's choice either way (the agent's
// templates set it: the keys' auth value is empty).
func CheckDevID(raw []byte) (*Key, error) {
	k, err := ParsePublic(raw)
	if err != nil {
		return nil, err
	}
	a := k.Public.ObjectAttributes
	var missing []string
	for _, c := range []struct {
		ok   bool
		what string
	}{
		{a.FixedTPM, "fixedTPM"},
		{a.FixedParent, "fixedParent"},
		{a.SensitiveDataOrigin, "sensitiveDataOrigin"},
		{a.SignEncrypt, "sign"},
		{!a.Decrypt, "not decrypt"},
		{!a.Restricted, "not restricted"},
	} {
		if !c.ok {
			missing = append(missing, c.what)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: want %v", ErrKeyAttributes, missing)
	}
	return k, nil
}

func attrBits(a tpm2.TPMAObject) []byte { return tpm2.Marshal(a) }

func publicKeysEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// Challenge is a credential for one key under one EK, with the secret only the station knows.
type Challenge struct {
	// CredentialBlob is the TPM2B_ID_OBJECT contents for ActivateCredential.
	CredentialBlob []byte
	// EncryptedSecret is the TPM2B_ENCRYPTED_SECRET contents for ActivateCredential.
	EncryptedSecret []byte
	secret          []byte
}

// NewChallenge makes a credential (TPM2_MakeCredential in software) binding a fresh 32-byte
// secret to key's Name under ek. Only a TPM holding both ek and an object with that Name can
// recover the secret. rnd is crypto/rand.Reader unless a test passes another.
func NewChallenge(rnd io.Reader, ek, key *Key) (*Challenge, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	secret := make([]byte, 32)
	if _, err := io.ReadFull(rnd, secret); err != nil {
		return nil, fmt.Errorf("drawing credential secret: %w", err)
	}
	kem, err := tpm2.ImportEncapsulationKey(&ek.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: EK cannot encapsulate: %v", ErrEKTemplate, err)
	}
	blob, enc, err := tpm2.CreateCredential(rnd, kem, key.Name, secret)
	if err != nil {
		// What fails here is the EK's parameters (a symmetric algorithm the credential
		// cannot use, say): ImportEncapsulationKey does not check them all.
		return nil, fmt.Errorf("%w: making credential: %v", ErrEKTemplate, err)
	}
	return &Challenge{CredentialBlob: blob, EncryptedSecret: enc, secret: secret}, nil
}

// Verify compares the agent's answer with the secret in constant time.
func (c *Challenge) Verify(answer []byte) error {
	if len(answer) != len(c.secret) || subtle.ConstantTimeCompare(answer, c.secret) != 1 {
		return ErrActivation
	}
	return nil
}

// CheckCSR parses a PKCS#10 request and checks that its signature verifies, that its key is
// the attested key, that its subject is byte for byte wantSubject, that it carries no attribute
// but the extension request, and that its extensions are exactly wantExts, in order.
func CheckCSR(der []byte, key *Key, wantSubject []byte, wantExts []pkix.Extension) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: parsing: %v", ErrMalformed, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrCSR, err)
	}
	if err := checkCSRAttributes(csr.RawTBSCertificateRequest); err != nil {
		return nil, err
	}
	if !publicKeysEqual(key.PublicKey, csr.PublicKey) {
		return nil, fmt.Errorf("%w: CSR key is not the attested key", ErrCSR)
	}
	if !bytes.Equal(csr.RawSubject, wantSubject) {
		return nil, fmt.Errorf("%w: subject differs", ErrCSR)
	}
	if len(csr.Extensions) != len(wantExts) {
		return nil, fmt.Errorf("%w: %d extensions, want %d", ErrCSR, len(csr.Extensions), len(wantExts))
	}
	for i, e := range csr.Extensions {
		w := wantExts[i]
		if !e.Id.Equal(w.Id) || e.Critical != w.Critical || !bytes.Equal(e.Value, w.Value) {
			return nil, fmt.Errorf("%w: extension %d (%s) differs", ErrCSR, i, e.Id)
		}
	}
	return csr, nil
}

// oidExtensionRequest is PKCS #9 extensionRequest, the one CSR attribute a DevID request carries.
var oidExtensionRequest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14}

// checkCSRAttributes refuses every CSR attribute other than extensionRequest (a
// challengePassword or anything else would reach the CA unchecked). x509 parses only the
// attributes it understands, so the raw attribute list is read here; x509 itself refuses
// duplicate extensions.
func checkCSRAttributes(rawTBS []byte) error {
	var tbs struct {
		Version       int
		Subject       asn1.RawValue
		PublicKey     asn1.RawValue
		RawAttributes []asn1.RawValue `asn1:"tag:0"`
	}
	if rest, err := asn1.Unmarshal(rawTBS, &tbs); err != nil || len(rest) != 0 {
		return fmt.Errorf("%w: request info does not parse", ErrMalformed)
	}
	for i, raw := range tbs.RawAttributes {
		var attr struct {
			Type   asn1.ObjectIdentifier
			Values asn1.RawValue `asn1:"set"`
		}
		if rest, err := asn1.Unmarshal(raw.FullBytes, &attr); err != nil || len(rest) != 0 {
			return fmt.Errorf("%w: attribute %d does not parse", ErrMalformed, i)
		}
		if !attr.Type.Equal(oidExtensionRequest) {
			return fmt.Errorf("%w: attribute %d (%s) is not allowed", ErrCSR, i, attr.Type)
		}
	}
	return nil
}

// NewNonce draws a fresh 32-byte nonce for a signature proof.
func NewNonce() ([]byte, error) {
	n := make([]byte, 32)
	if _, err := rand.Read(n); err != nil {
		return nil, fmt.Errorf("drawing nonce: %w", err)
	}
	return n, nil
}

// VerifySignature checks sig over digest (made with hash) with pub: ECDSA (ASN.1), or for RSA
// PKCS #1 v1.5 unless pss is set.
func VerifySignature(pub crypto.PublicKey, hash crypto.Hash, digest, sig []byte, pss bool) error {
	var err error
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, sig) {
			err = errors.New("ECDSA")
		}
	case *rsa.PublicKey:
		if pss {
			err = rsa.VerifyPSS(k, hash, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		} else {
			err = rsa.VerifyPKCS1v15(k, hash, digest, sig)
		}
	default:
		err = fmt.Errorf("unsupported key type %T", pub)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrSignature, err)
	}
	return nil
}

// More sentinel errors of the IAK's evidence; the workflow maps each to a stable error code.
var (
	// ErrCertifyType: the attestation is not a TPM2_Certify attestation.
	ErrCertifyType = errors.New("attestation is not a certification")
	// ErrCertifiedName: the certification names another object.
	ErrCertifiedName = errors.New("certification names another object")
	// ErrNonce: the certification does not carry the station's nonce.
	ErrNonce = errors.New("certification does not carry the station's nonce")
)

// CheckIAK checks that raw is an Initial Attestation Key as the TCG device identity profile
// requires: fixedTPM, fixedParent, sensitiveDataOrigin, restricted and sign set, decrypt clear;
// the signing scheme fixed to ECDSA (P-256) or RSASSA (RSA-2048) with SHA-256; name algorithm
// SHA-256. noDA either way, as CheckDevID.
func CheckIAK(raw []byte) (*Key, error) {
	k, err := ParsePublic(raw)
	if err != nil {
		return nil, err
	}
	a := k.Public.ObjectAttributes
	if !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.Restricted || !a.SignEncrypt || a.Decrypt {
		return nil, fmt.Errorf("%w: an IAK wants fixedTPM, fixedParent, sensitiveDataOrigin, restricted and sign, not decrypt (attributes %x)",
			ErrKeyAttributes, attrBits(a))
	}
	if _, err := iakScheme(&k.Public); err != nil {
		return nil, err
	}
	return k, nil
}

// iakScheme returns the signature scheme a checked IAK's template fixes: ECDSA or RSASSA,
// with SHA-256.
func iakScheme(p *tpm2.TPMTPublic) (tpm2.TPMAlgID, error) {
	var scheme tpm2.TPMAlgID
	var hash tpm2.TPMIAlgHash
	switch p.Type {
	case tpm2.TPMAlgECC:
		d, err := p.Parameters.ECCDetail()
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		if scheme = d.Scheme.Scheme; scheme == tpm2.TPMAlgECDSA {
			s, err := d.Scheme.Details.ECDSA()
			if err != nil {
				return 0, fmt.Errorf("%w: %v", ErrMalformed, err)
			}
			hash = s.HashAlg
		}
	case tpm2.TPMAlgRSA:
		d, err := p.Parameters.RSADetail()
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		if scheme = d.Scheme.Scheme; scheme == tpm2.TPMAlgRSASSA {
			s, err := d.Scheme.Details.RSASSA()
			if err != nil {
				return 0, fmt.Errorf("%w: %v", ErrMalformed, err)
			}
			hash = s.HashAlg
		}
	}
	if (scheme != tpm2.TPMAlgECDSA && scheme != tpm2.TPMAlgRSASSA) || hash != tpm2.TPMAlgSHA256 {
		return 0, fmt.Errorf("%w: an IAK's scheme must be ECDSA or RSASSA with SHA-256 (scheme %#x, hash %#x)", ErrKeyAttributes, scheme, hash)
	}
	return scheme, nil
}

// Certification is a TPM2_Certify answer the station checked.
type Certification struct {
	// Attest is the parsed TPMS_ATTEST.
	Attest tpm2.TPMSAttest
	// Name is the certified object's Name.
	Name []byte
	// Digest is SHA-256 of the attest bytes, what the signature signs.
	Digest [32]byte
}

// CheckCertify checks a TPM2_Certify answer: attest is a canonical TPMS_ATTEST with the
// TPM_GENERATED magic (else ErrMalformed) of type TPM_ST_ATTEST_CERTIFY (ErrCertifyType);
// sig, a TPMT_SIGNATURE in the IAK's scheme with SHA-256, verifies over SHA-256(attest) with
// the IAK's public key (ErrSignature); the certified Name is wantName (ErrCertifiedName); and
// extraData is nonce (ErrNonce). The signature is checked first: nothing an unsigned attest
// says counts.
func CheckCertify(attest, sig []byte, iak *Key, wantName, nonce []byte) (*Certification, error) {
	a, err := tpm2.Unmarshal[tpm2.TPMSAttest](attest)
	if err != nil {
		return nil, fmt.Errorf("%w: TPMS_ATTEST: %v", ErrMalformed, err)
	}
	if !bytes.Equal(tpm2.Marshal(a), attest) {
		return nil, fmt.Errorf("%w: TPMS_ATTEST has trailing or non-canonical bytes", ErrMalformed)
	}
	if a.Magic != tpm2.TPMGeneratedValue {
		return nil, fmt.Errorf("%w: TPMS_ATTEST magic %#x is not TPM_GENERATED_VALUE", ErrMalformed, uint32(a.Magic))
	}
	s, err := tpm2.Unmarshal[tpm2.TPMTSignature](sig)
	if err != nil || !bytes.Equal(tpm2.Marshal(s), sig) {
		return nil, fmt.Errorf("%w: TPMT_SIGNATURE does not parse", ErrSignature)
	}
	scheme, err := iakScheme(&iak.Public)
	if err != nil {
		return nil, err
	}
	c := &Certification{Attest: *a, Digest: sha256.Sum256(attest)}
	if s.SigAlg != scheme {
		return nil, fmt.Errorf("%w: signature algorithm %#x, the IAK signs with %#x", ErrSignature, s.SigAlg, scheme)
	}
	var der []byte
	switch scheme {
	case tpm2.TPMAlgECDSA:
		e, err := s.Signature.ECDSA()
		if err != nil || e.Hash != tpm2.TPMAlgSHA256 {
			return nil, fmt.Errorf("%w: not an ECDSA signature with SHA-256", ErrSignature)
		}
		der, err = asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(e.SignatureR.Buffer), new(big.Int).SetBytes(e.SignatureS.Buffer)})
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSignature, err)
		}
	default:
		r, err := s.Signature.RSASSA()
		if err != nil || r.Hash != tpm2.TPMAlgSHA256 {
			return nil, fmt.Errorf("%w: not an RSASSA signature with SHA-256", ErrSignature)
		}
		der = r.Sig.Buffer
	}
	if err := VerifySignature(iak.PublicKey, crypto.SHA256, c.Digest[:], der, false); err != nil {
		return nil, fmt.Errorf("the certification is not signed by the IAK: %w", err)
	}
	if a.Type != tpm2.TPMSTAttestCertify {
		return nil, fmt.Errorf("%w: type %#x", ErrCertifyType, a.Type)
	}
	info, err := a.Attested.Certify()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCertifyType, err)
	}
	c.Name = info.Name.Buffer
	if !bytes.Equal(c.Name, wantName) {
		return nil, fmt.Errorf("%w: certified %x, want %x", ErrCertifiedName, c.Name, wantName)
	}
	if subtle.ConstantTimeCompare(a.ExtraData.Buffer, nonce) != 1 {
		return nil, ErrNonce
	}
	return c, nil
}
