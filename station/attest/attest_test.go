package attest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/devid-station/devid/device-agent/tpm/tcgek"
	"github.com/google/go-tpm/tpm2"
)

// eccPublic returns tmpl with its unique field set to k's point, marshalled.
func eccPublic(t testing.TB, tmpl tpm2.TPMTPublic, k *ecdsa.PublicKey) []byte {
	t.Helper()
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: k.X.FillBytes(make([]byte, (k.Curve.Params().BitSize+7)/8))},
		Y: tpm2.TPM2BECCParameter{Buffer: k.Y.FillBytes(make([]byte, (k.Curve.Params().BitSize+7)/8))},
	})
	return tpm2.Marshal(tmpl)
}

func devIDTemplate() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, SignEncrypt: true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			CurveID: tpm2.TPMECCNistP256,
			Scheme:  tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
		}),
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParsePublic(t *testing.T) {
	good := eccPublic(t, devIDTemplate(), &newKey(t).PublicKey)
	sha1 := devIDTemplate()
	sha1.NameAlg = tpm2.TPMAlgSHA1
	tests := []struct {
		name string
		raw  []byte
		want error
	}{
		{"good", good, nil},
		{"trailing bytes", append(append([]byte{}, good...), 0), ErrMalformed},
		{"truncated", good[:len(good)-5], ErrMalformed},
		{"garbage", []byte{1, 2, 3}, ErrMalformed},
		{"sha1 name", eccPublic(t, sha1, &newKey(t).PublicKey), ErrKeyAttributes},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParsePublic(tc.raw)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ParsePublic: %v, want %v", err, tc.want)
			}
			if err == nil {
				h := sha256.Sum256(tc.raw)
				want := append([]byte{0x00, 0x0b}, h[:]...)
				if string(k.Name) != string(want) {
					t.Errorf("Name = %x, want %x", k.Name, want)
				}
				if n, err := tpm2.ObjectName(&k.Public); err != nil || string(n.Buffer) != string(k.Name) {
					t.Errorf("Name = %x, go-tpm's ObjectName %x (%v)", k.Name, n, err)
				}
			}
		})
	}
}

func TestCheckDevID(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*tpm2.TPMAObject)
		want   error
	}{
		{"devid template", func(*tpm2.TPMAObject) {}, nil},
		{"noDA", func(a *tpm2.TPMAObject) { a.NoDA = true }, nil},
		{"not noDA", func(a *tpm2.TPMAObject) { a.NoDA = false }, nil},
		{"noDA, not fixedTPM", func(a *tpm2.TPMAObject) { a.NoDA, a.FixedTPM = true, false }, ErrKeyAttributes},
		{"not fixedTPM", func(a *tpm2.TPMAObject) { a.FixedTPM = false }, ErrKeyAttributes},
		{"not fixedParent", func(a *tpm2.TPMAObject) { a.FixedParent = false }, ErrKeyAttributes},
		{"imported", func(a *tpm2.TPMAObject) { a.SensitiveDataOrigin = false }, ErrKeyAttributes},
		{"decrypt", func(a *tpm2.TPMAObject) { a.Decrypt = true }, ErrKeyAttributes},
		{"restricted", func(a *tpm2.TPMAObject) { a.Restricted = true }, ErrKeyAttributes},
		{"not sign", func(a *tpm2.TPMAObject) { a.SignEncrypt = false }, ErrKeyAttributes},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := devIDTemplate()
			tc.modify(&tmpl.ObjectAttributes)
			_, err := CheckDevID(eccPublic(t, tmpl, &newKey(t).PublicKey))
			if !errors.Is(err, tc.want) {
				t.Fatalf("CheckDevID: %v, want %v", err, tc.want)
			}
		})
	}
}

func selfSigned(t testing.TB, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
	}, &x509.Certificate{Subject: pkix.Name{CommonName: "issuer"}}, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCheckEK(t *testing.T) {
	ekKey, other, ca := newKey(t), newKey(t), newKey(t)
	cert := selfSigned(t, &ekKey.PublicKey, ca)
	badPolicy := tpm2.ECCEKTemplate
	badPolicy.AuthPolicy = tpm2.TPM2BDigest{Buffer: make([]byte, 32)}
	userAuth := tpm2.ECCEKTemplate
	userAuth.ObjectAttributes.UserWithAuth = true
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384Cert := selfSigned(t, &p384.PublicKey, ca)
	lowPolicyP384 := tcgek.ECCP384.Public
	lowPolicyP384.AuthPolicy = tpm2.ECCEKTemplate.AuthPolicy
	tests := []struct {
		name string
		raw  []byte
		want error
	}{
		{"matches", eccPublic(t, tpm2.ECCEKTemplate, &ekKey.PublicKey), nil},
		{"other key", eccPublic(t, tpm2.ECCEKTemplate, &other.PublicKey), ErrEKMismatch},
		{"not an EK template", eccPublic(t, devIDTemplate(), &ekKey.PublicKey), ErrEKTemplate},
		{"other policy", eccPublic(t, badPolicy, &ekKey.PublicKey), ErrEKTemplate},
		{"user auth", eccPublic(t, userAuth, &ekKey.PublicKey), ErrEKTemplate},
		{"P-384 H-3", eccPublic(t, tcgek.ECCP384.Public, &p384.PublicKey), nil},
		{"P-384 with the low-range policy", eccPublic(t, lowPolicyP384, &p384.PublicKey), ErrEKTemplate},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := cert
			if strings.HasPrefix(tc.name, "P-384") {
				c = p384Cert
			}
			k, _, err := CheckEK(tc.raw, c)
			if !errors.Is(err, tc.want) {
				t.Fatalf("CheckEK: %v, want %v", err, tc.want)
			}
			if err == nil {
				// The Name in the EK's own name algorithm (SHA-384 for H-3), as go-tpm computes it.
				if n, err := tpm2.ObjectName(&k.Public); err != nil || string(n.Buffer) != string(k.Name) {
					t.Errorf("Name = %x, go-tpm's ObjectName %x (%v)", k.Name, n, err)
				}
			}
		})
	}
}

func TestChallengeVerify(t *testing.T) {
	ek, err := ParsePublic(eccPublic(t, tpm2.ECCEKTemplate, &newKey(t).PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	key, err := ParsePublic(eccPublic(t, devIDTemplate(), &newKey(t).PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	c1, err := NewChallenge(nil, ek, key)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := NewChallenge(nil, ek, key)
	if err != nil {
		t.Fatal(err)
	}
	if string(c1.secret) == string(c2.secret) || string(c1.CredentialBlob) == string(c2.CredentialBlob) {
		t.Fatal("two challenges share a secret or blob")
	}
	if err := c1.Verify(c1.secret); err != nil {
		t.Fatalf("right answer refused: %v", err)
	}
	for _, bad := range [][]byte{nil, c2.secret, c1.secret[:31], append(append([]byte{}, c1.secret...), 0)} {
		if err := c1.Verify(bad); !errors.Is(err, ErrActivation) {
			t.Errorf("Verify(%x) = %v, want ErrActivation", bad, err)
		}
	}
}

func TestCheckCSR(t *testing.T) {
	priv := newKey(t)
	key, err := ParsePublic(eccPublic(t, devIDTemplate(), &priv.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	subject, _ := asn1.Marshal(pkix.Name{CommonName: "unit", SerialNumber: "SN1"}.ToRDNSequence())
	otherSubject, _ := asn1.Marshal(pkix.Name{CommonName: "unit", SerialNumber: "SN2"}.ToRDNSequence())
	ext := pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Critical: false, Value: []byte{0x30, 0x00}}
	csr := func(signer crypto.Signer, subj []byte, exts []pkix.Extension) []byte {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{RawSubject: subj, ExtraExtensions: exts}, signer)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	good := csr(priv, subject, []pkix.Extension{ext})
	tampered := append([]byte{}, good...)
	tampered[len(tampered)-1] ^= 1
	tests := []struct {
		name string
		der  []byte
		want error
	}{
		{"good", good, nil},
		{"other key", csr(newKey(t), subject, []pkix.Extension{ext}), ErrCSR},
		{"other subject", csr(priv, otherSubject, []pkix.Extension{ext}), ErrCSR},
		{"missing extension", csr(priv, subject, nil), ErrCSR},
		{"critical flipped", csr(priv, subject, []pkix.Extension{{Id: ext.Id, Critical: true, Value: ext.Value}}), ErrCSR},
		{"bad signature", tampered, ErrCSR},
		{"garbage", []byte("nope"), ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := CheckCSR(tc.der, key, subject, []pkix.Extension{ext}); !errors.Is(err, tc.want) {
				t.Fatalf("CheckCSR: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestVerifySignature(t *testing.T) {
	priv := newKey(t)
	nonce, err := NewNonce()
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(nonce)
	sig, err := ecdsa.SignASN1(rand.Reader, priv, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifySignature(&priv.PublicKey, crypto.SHA256, digest[:], sig, false); err != nil {
		t.Fatalf("good signature refused: %v", err)
	}
	if err := VerifySignature(&newKey(t).PublicKey, crypto.SHA256, digest[:], sig, false); !errors.Is(err, ErrSignature) {
		t.Fatalf("signature by another key: %v, want ErrSignature", err)
	}
}

// csrWithAttributes builds a PKCS#10 request signed by priv whose attribute list is exactly
// attrs (DER Attribute SEQUENCEs), as x509.CreateCertificateRequest cannot write a
// challengePassword.
func csrWithAttributes(t testing.TB, priv *ecdsa.PrivateKey, subject []byte, attrs ...[]byte) []byte {
	t.Helper()
	spki, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	var set []byte
	for _, a := range attrs {
		set = append(set, a...)
	}
	tbs, err := asn1.Marshal(struct {
		Version   int
		Subject   asn1.RawValue
		PublicKey asn1.RawValue
		Attrs     asn1.RawValue
	}{0, asn1.RawValue{FullBytes: subject}, asn1.RawValue{FullBytes: spki},
		asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: set}})
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, priv, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(struct {
		TBS       asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}{asn1.RawValue{FullBytes: tbs}, pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}},
		asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// attribute returns a DER Attribute of type oid with one value.
func attribute(t testing.TB, oid asn1.ObjectIdentifier, value any) []byte {
	t.Helper()
	v, err := asn1.Marshal(value)
	if err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(struct {
		Type   asn1.ObjectIdentifier
		Values asn1.RawValue
	}{oid, asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: v}})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestCheckCSRAttributes: a CSR whose signature, key, subject and extensions are right but that
// carries an attribute other than its one extension request is refused with ErrCSR.
func TestCheckCSRAttributes(t *testing.T) {
	priv := newKey(t)
	key, err := ParsePublic(eccPublic(t, devIDTemplate(), &priv.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	subject, _ := asn1.Marshal(pkix.Name{CommonName: "unit", SerialNumber: "SN1"}.ToRDNSequence())
	ext := pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: []byte{0x30, 0x00}}
	extReq := attribute(t, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14}, []pkix.Extension{ext})
	challengePassword := attribute(t, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 7}, "let-me-in")
	unstructuredName := attribute(t, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 2}, "SN2")
	for _, tc := range []struct {
		name  string
		attrs [][]byte
		want  error
	}{
		{"extension request only", [][]byte{extReq}, nil},
		{"challengePassword", [][]byte{extReq, challengePassword}, ErrCSR},
		{"challengePassword first", [][]byte{challengePassword, extReq}, ErrCSR},
		{"unstructuredName", [][]byte{extReq, unstructuredName}, ErrCSR},
		{"no attribute and no extension", nil, ErrCSR},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der := csrWithAttributes(t, priv, subject, tc.attrs...)
			if _, err := CheckCSR(der, key, subject, []pkix.Extension{ext}); !errors.Is(err, tc.want) {
				t.Fatalf("CheckCSR: %v, want %v", err, tc.want)
			}
		})
	}
}
