// Package tcgek lists the endorsement key (EK) types of the TCG EK Credential Profile for TPM
// Family 2.0 (version 2.x) that a manufacturing line meets, with everything the profile fixes
// for each: the template, the persistent handle, the NV indexes of the certificate and of the
// template, and the EK's authorization policy.
//
//   - RSA-2048, template L-1 (low range): certificate 0x01C00002, template 0x01C00004, handle
//     0x81010001 (TCG Provisioning Guidance).
//   - ECC NIST P-256, template L-2 (low range): certificate 0x01C0000A, template 0x01C0000C,
//     handle 0x81010002 (the handle vendors and tools use for it).
//   - ECC NIST P-384, template H-3 (high range; swtpm_setup's default ECC EK): certificate
//     0x01C00016, template 0x01C00017, handle 0x81010016.
//   - RSA-3072, template H-6 (high range): certificate 0x01C0001C, template 0x01C0001D, handle
//     0x8101001C.
//
// Low-range EKs have the authorization policy PolicyA (PolicySecret(TPM_RH_ENDORSEMENT)) and a
// unique field of zeros; high-range EKs have userWithAuth, the policy PolicyB =
// PolicyOR(PolicyA, PolicyC) in their name algorithm and an empty unique field.
//
// The package holds values only; it is safe for concurrent use.
package tcgek

import (
	"bytes"
	"encoding/hex"
	"slices"
	"sync"

	"github.com/google/go-tpm/tpm2"
)

// Type is one EK type of the TCG EK Credential Profile.
type Type struct {
	// Name is the key type ("RSA-2048", "ECC-P256", "ECC-P384", "RSA-3072").
	Name string
	// Template is the profile's template name ("L-1", "L-2", "H-3", "H-6").
	Template string
	// Public is the template, unique field included.
	Public tpm2.TPMTPublic
	// Handle is the persistent handle the EK is kept at.
	Handle uint32
	// CertIndex is the NV index of the EK certificate.
	CertIndex uint32
	// TemplateIndex is the NV index a non-default template would be stored in.
	TemplateIndex uint32
	// PolicyBranches are, for a high-range EK, the digests (in the name algorithm) that its
	// PolicyOR authorization policy joins: PolicyA then PolicyC. A session that has run
	// PolicySecret(TPM_RH_ENDORSEMENT) then PolicyOR(PolicyBranches) satisfies the EK's
	// policy. Empty for a low-range EK, whose policy is PolicyA itself.
	PolicyBranches [][]byte
}

// Policy digests of the TCG EK Credential Profile (annex B), in hex.
const (
	policyASHA384 = "8bbf2266537c171cb56e403c4dc1d4b64f432611dc386e6f532050c3278c930e143e8bb1133824ccb431053871c6db53"
	policyBSHA384 = "b26e7d28d11a50bc53d882bcf5fd3a1a074148bb35d3b4e4cb1c0ad9bde419cacb47ba09699646150f9fc000f3f80e12"
	policyCSHA384 = "d6032ce61f2fb3c240eb3cf6a33237ef2b6a16f4293c22b455e261cffd217ad5b4947c2d73e63005eed2dc2b3593d165"
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic("tcgek: bad hex constant")
	}
	return b
}

// highRangeAttributes are the object attributes of every high-range storage EK: fixedTPM,
// fixedParent, sensitiveDataOrigin, userWithAuth, adminWithPolicy, restricted, decrypt.
var highRangeAttributes = tpm2.TPMAObject{
	FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true,
	AdminWithPolicy: true, Restricted: true, Decrypt: true,
}

// aes256CFB is the symmetric definition of the SHA-384 high-range EKs.
var aes256CFB = tpm2.TPMTSymDefObject{
	Algorithm: tpm2.TPMAlgAES,
	KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(256)),
	Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
}

// The EK types. Use them read-only.
var (
	RSA2048 = Type{Name: "RSA-2048", Template: "L-1", Public: tpm2.RSAEKTemplate,
		Handle: 0x81010001, CertIndex: 0x01C00002, TemplateIndex: 0x01C00004}
	ECCP256 = Type{Name: "ECC-P256", Template: "L-2", Public: tpm2.ECCEKTemplate,
		Handle: 0x81010002, CertIndex: 0x01C0000A, TemplateIndex: 0x01C0000C}
	ECCP384 = Type{Name: "ECC-P384", Template: "H-3",
		Public: tpm2.TPMTPublic{
			Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA384, ObjectAttributes: highRangeAttributes,
			AuthPolicy: tpm2.TPM2BDigest{Buffer: mustHex(policyBSHA384)},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: aes256CFB,
				Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
				CurveID:   tpm2.TPMECCNistP384,
				KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
		},
		Handle: 0x81010016, CertIndex: 0x01C00016, TemplateIndex: 0x01C00017,
		PolicyBranches: [][]byte{mustHex(policyASHA384), mustHex(policyCSHA384)}}
	RSA3072 = Type{Name: "RSA-3072", Template: "H-6",
		Public: tpm2.TPMTPublic{
			Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA384, ObjectAttributes: highRangeAttributes,
			AuthPolicy: tpm2.TPM2BDigest{Buffer: mustHex(policyBSHA384)},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Symmetric: aes256CFB,
				Scheme:    tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
				KeyBits:   3072,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
		},
		Handle: 0x8101001C, CertIndex: 0x01C0001C, TemplateIndex: 0x01C0001D,
		PolicyBranches: [][]byte{mustHex(policyASHA384), mustHex(policyCSHA384)}}
)

// All returns every EK type, low range first.
func All() []Type { return []Type{RSA2048, ECCP256, ECCP384, RSA3072} }

// Match returns the EK type whose template p follows, its unique field aside.
func Match(p tpm2.TPMTPublic) (Type, bool) {
	got := tpm2.Marshal(WithoutUnique(p))
	for i, t := range All() {
		if t.Public.Type == p.Type && bytes.Equal(got, templates()[i]) {
			return t, true
		}
	}
	return Type{}, false
}

// templates holds the encoded template of each of All's types, unique field aside, in All's
// order: go-tpm encodes by reflection, and Match runs once per unit.
var templates = sync.OnceValue(func() [][]byte {
	var out [][]byte
	for _, t := range All() {
		out = append(out, tpm2.Marshal(WithoutUnique(t.Public)))
	}
	return out
})

// WithoutUnique returns p with an empty unique field of its type.
func WithoutUnique(p tpm2.TPMTPublic) tpm2.TPMTPublic {
	switch p.Type {
	case tpm2.TPMAlgRSA:
		p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{})
	case tpm2.TPMAlgECC:
		p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
	}
	return p
}

// Held returns the EK types a TPM holds, judged from its persistent handles and defined NV
// indexes: those whose EK handle or EK certificate index is present, in All order.
func Held(persistentHandles, nvIndices []uint32) []Type {
	var out []Type
	for _, t := range All() {
		if slices.Contains(persistentHandles, t.Handle) || slices.Contains(nvIndices, t.CertIndex) {
			out = append(out, t)
		}
	}
	return out
}
