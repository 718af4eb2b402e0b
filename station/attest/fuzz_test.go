package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm/tcgek"
	"github.com/google/go-tpm/tpm2"
)

// rsaEKPublic returns the TCG RSA-2048 EK template with k's modulus, marshalled.
func rsaEKPublic(k *rsa.PublicKey) []byte {
	tmpl := tpm2.RSAEKTemplate
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})
	return tpm2.Marshal(tmpl)
}

// rsaPublic returns an RSA-2048 public key with a random odd modulus: the EK and DevID checks
// only read public keys, and generating a real key would slow every fuzz worker's start.
func rsaPublic(tb testing.TB) *rsa.PublicKey {
	n := make([]byte, 256)
	if _, err := rand.Read(n); err != nil {
		tb.Fatal(err)
	}
	n[0] |= 0x80
	n[255] |= 1
	return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537}
}

// wantName is the Name a SHA-256 object with public area raw must have.
func wantName(raw []byte) []byte {
	h := sha256.Sum256(raw)
	return append([]byte{0x00, 0x0b}, h[:]...)
}

// FuzzCheckEK feeds arbitrary public areas to the EK check against an ECC and an RSA EK
// certificate. A failure wraps ErrMalformed, ErrEKTemplate or ErrEKMismatch; a success is a
// TCG EK template holding the certificate's key, its Raw is the input and its Name is
// recomputed, and the station can make a credential for it.
func FuzzCheckEK(f *testing.F) {
	t := f
	eccKey, ca := newKey(t), newKey(t)
	rsaPub := rsaPublic(f)
	certs := []*x509.Certificate{selfSigned(t, &eccKey.PublicKey, ca), selfSigned(t, rsaPub, ca)}
	devID, err := ParsePublic(eccPublic(t, devIDTemplate(), &newKey(t).PublicKey))
	if err != nil {
		f.Fatal(err)
	}
	eccEK, rsaEK := eccPublic(t, tpm2.ECCEKTemplate, &eccKey.PublicKey), rsaEKPublic(rsaPub)
	for _, s := range []struct {
		raw  []byte
		cert uint8
	}{
		{eccEK, 0}, {rsaEK, 1}, {rsaEK, 0}, {eccEK[:len(eccEK)-1], 0},
		{eccPublic(t, devIDTemplate(), &eccKey.PublicKey), 0}, {append(bytes.Clone(rsaEK), 0), 1},
	} {
		f.Add(s.raw, s.cert)
	}
	f.Fuzz(func(t *testing.T, raw []byte, which uint8) {
		cert := certs[int(which)%len(certs)]
		k, typ, err := CheckEK(raw, cert)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrEKTemplate) && !errors.Is(err, ErrEKMismatch) {
				t.Fatalf("error wraps none of the EK errors: %v", err)
			}
			return
		}
		if !bytes.Equal(k.Raw, raw) || !bytes.Equal(tpm2.Marshal(k.Public), raw) {
			t.Fatal("accepted key is not the bytes given")
		}
		if got, ok := tcgek.Match(k.Public); !ok || got.Template != typ.Template {
			t.Fatalf("accepted key matches template %v, %v; CheckEK said %v", got, ok, typ)
		}
		if !publicKeysEqual(k.PublicKey, cert.PublicKey) {
			t.Fatal("accepted key is not the certificate's key")
		}
		if k.Public.NameAlg == tpm2.TPMAlgSHA256 && !bytes.Equal(k.Name, wantName(raw)) {
			t.Fatal("Name is not recomputed from the public area")
		}
		if _, err := NewChallenge(nil, k, devID); err != nil {
			t.Fatalf("accepted EK cannot take a credential: %v", err)
		}
	})
}

// FuzzCheckDevID feeds arbitrary public areas to the DevID key check: a failure wraps
// ErrMalformed or ErrKeyAttributes, and a success has every attribute the profile requires,
// none it forbids, SHA-256 naming and a Name recomputed from the input.
func FuzzCheckDevID(f *testing.F) {
	t := f
	rsaPub := rsaPublic(f)
	rsaDevID := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: devIDTemplate().ObjectAttributes,
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Scheme: tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull}, KeyBits: 2048,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: rsaPub.N.Bytes()}),
	}
	good := eccPublic(t, devIDTemplate(), &newKey(t).PublicKey)
	f.Add(good)
	f.Add(tpm2.Marshal(rsaDevID))
	f.Add(eccPublic(t, tpm2.ECCEKTemplate, &newKey(t).PublicKey))
	f.Add(good[:10])
	f.Fuzz(func(t *testing.T, raw []byte) {
		k, err := CheckDevID(raw)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrKeyAttributes) {
				t.Fatalf("error wraps neither ErrMalformed nor ErrKeyAttributes: %v", err)
			}
			return
		}
		a := k.Public.ObjectAttributes
		if !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.SignEncrypt || a.Decrypt || a.Restricted {
			t.Fatalf("accepted key has attributes %x", attrBits(a))
		}
		if !bytes.Equal(k.Raw, raw) || !bytes.Equal(k.Name, wantName(raw)) {
			t.Fatal("accepted key's Raw or Name is not computed from the input")
		}
		if err := checkKeySize(k.PublicKey); err != nil {
			t.Fatalf("accepted key: %v", err)
		}
	})
}

// FuzzChallenge makes credentials for arbitrary EK and key public areas (the station makes them
// from the agent's bytes once they are checked) and answers them with arbitrary bytes: making
// one fails cleanly or works, and only the secret itself is accepted as the answer.
func FuzzChallenge(f *testing.F) {
	t := f
	rsaPub := rsaPublic(f)
	devID := eccPublic(t, devIDTemplate(), &newKey(t).PublicKey)
	f.Add(eccPublic(t, tpm2.ECCEKTemplate, &newKey(t).PublicKey), devID, make([]byte, 32))
	f.Add(rsaEKPublic(rsaPub), devID, []byte{1})
	f.Add(devID, devID, []byte(nil))
	f.Fuzz(func(t *testing.T, ekRaw, keyRaw, answer []byte) {
		ek, _, err := parseAny(ekRaw)
		if err != nil {
			return
		}
		key, _, err := parseAny(keyRaw)
		if err != nil {
			return
		}
		ch, err := NewChallenge(nil, ek, key)
		if err != nil {
			if !errors.Is(err, ErrEKTemplate) {
				t.Fatalf("error does not wrap ErrEKTemplate: %v", err)
			}
			return
		}
		if len(ch.CredentialBlob) == 0 || len(ch.EncryptedSecret) == 0 {
			t.Fatal("empty credential")
		}
		if err := ch.Verify(ch.secret); err != nil {
			t.Fatalf("the secret is refused: %v", err)
		}
		if err := ch.Verify(answer); (err == nil) != bytes.Equal(answer, ch.secret) || (err != nil && !errors.Is(err, ErrActivation)) {
			t.Fatalf("Verify(%x) = %v", answer, err)
		}
	})
}

// FuzzCheckCSR feeds arbitrary requests to the CSR check for one attested key, subject and
// extension list: a failure wraps ErrMalformed or ErrCSR, and a success is signed by the
// attested key and asks for exactly that subject and those extensions.
func FuzzCheckCSR(f *testing.F) {
	t := f
	priv := newKey(t)
	key, err := ParsePublic(eccPublic(t, devIDTemplate(), &priv.PublicKey))
	if err != nil {
		f.Fatal(err)
	}
	subject, _ := asn1.Marshal(pkix.Name{CommonName: "unit", SerialNumber: "SN1"}.ToRDNSequence())
	exts := []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: []byte{0x30, 0x00}}}
	good, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{RawSubject: subject, ExtraExtensions: exts}, priv)
	if err != nil {
		f.Fatal(err)
	}
	extReq := attribute(t, oidExtensionRequest, exts)
	f.Add(good)
	f.Add(csrWithAttributes(t, priv, subject, extReq))
	f.Add(csrWithAttributes(t, priv, subject, extReq, attribute(t, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 7}, "pw")))
	f.Add(good[:len(good)-5])
	f.Fuzz(func(t *testing.T, der []byte) {
		csr, err := CheckCSR(der, key, subject, exts)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrCSR) {
				t.Fatalf("error wraps neither ErrMalformed nor ErrCSR: %v", err)
			}
			return
		}
		if err := csr.CheckSignature(); err != nil || !publicKeysEqual(csr.PublicKey, key.PublicKey) {
			t.Fatalf("accepted CSR not signed by the attested key: %v", err)
		}
		if !bytes.Equal(csr.RawSubject, subject) || len(csr.Extensions) != len(exts) {
			t.Fatal("accepted CSR asks for another subject or other extensions")
		}
	})
}

// FuzzVerifySignature checks signatures from the agent over a station nonce: anything but a
// signature by the key fails with ErrSignature, for ECDSA, RSA PKCS #1 v1.5 and RSA-PSS.
func FuzzVerifySignature(f *testing.F) {
	t := f
	ecc := newKey(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	digest := sha256.Sum256([]byte("station nonce"))
	eccSig, _ := ecc.Sign(rand.Reader, digest[:], crypto.SHA256)
	rsaSig, _ := rsaKey.Sign(rand.Reader, digest[:], crypto.SHA256)
	f.Add(eccSig, uint8(0))
	f.Add(rsaSig, uint8(1))
	f.Add(rsaSig[:100], uint8(2))
	keys := []crypto.PublicKey{&ecc.PublicKey, &rsaKey.PublicKey, &rsaKey.PublicKey}
	f.Fuzz(func(t *testing.T, sig []byte, which uint8) {
		i := int(which) % len(keys)
		err := VerifySignature(keys[i], crypto.SHA256, digest[:], sig, i == 2)
		if err != nil && !errors.Is(err, ErrSignature) {
			t.Fatalf("error does not wrap ErrSignature: %v", err)
		}
		if err == nil && i != 0 && !bytes.Equal(sig, rsaSig) {
			t.Fatal("an RSA signature other than the key's own verifies")
		}
	})
}

// iakTemplate is an ECC P-256 IAK's template: restricted signing, ECDSA with SHA-256.
func iakTemplate() tpm2.TPMTPublic {
	t := devIDTemplate()
	t.ObjectAttributes.Restricted = true
	t.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		CurveID: tpm2.TPMECCNistP256,
		Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA,
			&tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
	})
	return t
}

// certifyAttest is the TPMS_ATTEST a TPM2_Certify of the object called name with nonce answers.
func certifyAttest(name, nonce []byte) []byte {
	return tpm2.Marshal(tpm2.TPMSAttest{
		Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestCertify,
		QualifiedSigner: tpm2.TPM2BName{Buffer: name}, ExtraData: tpm2.TPM2BData{Buffer: nonce},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestCertify, &tpm2.TPMSCertifyInfo{
			Name: tpm2.TPM2BName{Buffer: name}, QualifiedName: tpm2.TPM2BName{Buffer: name},
		}),
	})
}

// signAttest signs attest with k as an IAK does: ECDSA over SHA-256, as a TPMT_SIGNATURE.
func signAttest(t testing.TB, k *ecdsa.PrivateKey, attest []byte) []byte {
	d := sha256.Sum256(attest)
	r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA,
		&tpm2.TPMSSignatureECC{Hash: tpm2.TPMAlgSHA256, SignatureR: tpm2.TPM2BECCParameter{Buffer: r.Bytes()},
			SignatureS: tpm2.TPM2BECCParameter{Buffer: s.Bytes()}})})
}

// FuzzCheckIAK feeds arbitrary public areas to the IAK check: a failure wraps ErrMalformed or
// ErrKeyAttributes, and a success is a restricted signing key, not a decryption key, whose
// scheme is ECDSA or RSASSA with SHA-256 and whose Name is recomputed from the input.
func FuzzCheckIAK(f *testing.F) {
	t := f
	good := eccPublic(t, iakTemplate(), &newKey(t).PublicKey)
	if _, err := CheckIAK(good); err != nil {
		f.Fatalf("an IAK template is refused: %v", err)
	}
	f.Add(good)
	f.Add(eccPublic(t, devIDTemplate(), &newKey(t).PublicKey))
	f.Add(eccPublic(t, tpm2.ECCEKTemplate, &newKey(t).PublicKey))
	f.Add(good[:len(good)-3])
	f.Fuzz(func(t *testing.T, raw []byte) {
		k, err := CheckIAK(raw)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrKeyAttributes) {
				t.Fatalf("error wraps neither ErrMalformed nor ErrKeyAttributes: %v", err)
			}
			return
		}
		a := k.Public.ObjectAttributes
		if !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.SignEncrypt || !a.Restricted || a.Decrypt {
			t.Fatalf("accepted IAK has attributes %x", attrBits(a))
		}
		if s, err := iakScheme(&k.Public); err != nil || (s != tpm2.TPMAlgECDSA && s != tpm2.TPMAlgRSASSA) {
			t.Fatalf("accepted IAK's scheme %#x: %v", s, err)
		}
		if !bytes.Equal(k.Raw, raw) || !bytes.Equal(k.Name, wantName(raw)) {
			t.Fatal("accepted IAK's Raw or Name is not computed from the input")
		}
	})
}

// FuzzCheckCertify feeds arbitrary TPM2_Certify answers (attestation and signature) to the
// check of the IAK's evidence: a failure wraps one of the attestation errors, and a success is
// an attestation the IAK signed (checked here with crypto/ecdsa), of type certify, naming the
// IDevID and carrying the station's nonce.
func FuzzCheckCertify(f *testing.F) {
	t := f
	iakPriv := newKey(t)
	iak, err := CheckIAK(eccPublic(t, iakTemplate(), &iakPriv.PublicKey))
	if err != nil {
		f.Fatal(err)
	}
	idevid, err := CheckDevID(eccPublic(t, devIDTemplate(), &newKey(t).PublicKey))
	if err != nil {
		f.Fatal(err)
	}
	nonce := bytes.Repeat([]byte{0xA5}, 32)
	good := certifyAttest(idevid.Name, nonce)
	goodSig := signAttest(t, iakPriv, good)
	if _, err := CheckCertify(good, goodSig, iak, idevid.Name, nonce); err != nil {
		f.Fatalf("the IAK's own certification is refused: %v", err)
	}
	f.Add(good, goodSig)
	f.Add(good, signAttest(t, newKey(t), good))
	other := certifyAttest(iak.Name, nonce)
	f.Add(other, signAttest(t, iakPriv, other))
	stale := certifyAttest(idevid.Name, nonce[:16])
	f.Add(stale, signAttest(t, iakPriv, stale))
	f.Add(good[:len(good)-1], []byte{0, 0x18})
	f.Fuzz(func(t *testing.T, attest, sig []byte) {
		c, err := CheckCertify(attest, sig, iak, idevid.Name, nonce)
		if err != nil {
			for _, want := range []error{ErrMalformed, ErrSignature, ErrCertifyType, ErrCertifiedName, ErrNonce} {
				if errors.Is(err, want) {
					return
				}
			}
			t.Fatalf("error wraps none of the attestation errors: %v", err)
		}
		s, err := tpm2.Unmarshal[tpm2.TPMTSignature](sig)
		if err != nil {
			t.Fatalf("accepted signature does not parse: %v", err)
		}
		e, err := s.Signature.ECDSA()
		if err != nil {
			t.Fatalf("accepted signature is not ECDSA: %v", err)
		}
		d := sha256.Sum256(attest)
		if !ecdsa.Verify(&iakPriv.PublicKey, d[:], new(big.Int).SetBytes(e.SignatureR.Buffer), new(big.Int).SetBytes(e.SignatureS.Buffer)) {
			t.Fatal("accepted an attestation the IAK did not sign")
		}
		if c.Digest != d || !bytes.Equal(c.Name, idevid.Name) || c.Attest.Type != tpm2.TPMSTAttestCertify ||
			!bytes.Equal(c.Attest.ExtraData.Buffer, nonce) {
			t.Fatal("accepted certification does not name the IDevID with the nonce")
		}
	})
}
