package workflow

import (
	"context"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"slices"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/attest"
	"github.com/devid-station/devid/station/journal"
	"github.com/devid-station/devid/station/store"
)

// The IAK steps (TCG TPM 2.0 Keys for Device Identity and Attestation): with Profile.IAK set
// the TPM creates an Initial Attestation Key, proves it resides beside the EK by credential
// activation, certifies the IDevID key with it (TPM2_Certify) and gets an IAK certificate from
// the maker's CA. A profile without an IAK runs none of them and journals nothing for them
// (units provisioned before recorded journal.SkipResult for each).
const (
	StepIAKKey     = journal.StepIAKKey
	StepIAKProof   = journal.StepIAKProof
	StepIAKCertify = journal.StepIAKCertify
	StepIAKCSR     = journal.StepIAKCSR
	StepIAKEnroll  = journal.StepIAKEnroll
)

const roleIAK = string(store.RoleIAK)

var (
	// OIDAIKCertificate is tcg-kp-AIKCertificate, the extended key usage of an IAK certificate
	// (TCG TPM 2.0 Keys for Device Identity and Attestation).
	OIDAIKCertificate = asn1.ObjectIdentifier{2, 23, 133, 8, 3}
	// OIDVerifiedTPMRestricted is tcg-cap-verifiedTPMRestricted: the key's restricted
	// attribute was verified (an IAK).
	OIDVerifiedTPMRestricted = asn1.ObjectIdentifier{2, 23, 133, 11, 1, 3}
)

// iakPolicies are the TCG certificate policies an IAK certificate asks for: residency beside
// the EK (iak_residency), fixedTPM and restricted (CheckIAK).
var iakPolicies = []asn1.ObjectIdentifier{OIDVerifiedTPMResidency, OIDVerifiedTPMFixed, OIDVerifiedTPMRestricted}

// enrollStep lists the steps that enroll a certificate at a CA.
var enrollStep = map[string]bool{StepIDevIDEnroll: true, StepIAKEnroll: true, StepLDevIDEnroll: true}

// enrolls reports whether step asks a CA for a certificate of the unit's: an enroll step, but
// not iak_enroll of a profile without an IAK; and field_check of a profile whose field check
// re-enrolls the LDevID.
func (u *unit) enrolls(step string) bool {
	if step == StepFieldCheck {
		return u.profile != nil && u.profile.FieldCheck.Mode == FieldCheckReenroll
	}
	return enrollStep[step] && (step != StepIAKEnroll || u.profile != nil && u.profile.IAK != nil)
}

// createIAK has the TPM create (or find) the IAK at the profile's handle and checks its public
// area.
func (u *unit) createIAK(ctx context.Context) (any, error) {
	kp := *u.profile.IAK
	res, err := u.do(ctx, &agentv1.Command{Op: &agentv1.Command_CreateKey{CreateKey: &agentv1.CreateKeyRequest{
		Role: agentv1.KeyRole_KEY_ROLE_IAK, Algorithm: kp.Algorithm, Handle: kp.Handle}}})
	if err != nil {
		return nil, err
	}
	ck := res.GetCreateKey()
	key, err := attest.CheckIAK(ck.GetPublicArea())
	if err != nil {
		return nil, fail(CodeKeyAttributes, err, "IAK")
	}
	return u.recordKey(ctx, roleIAK, StepIAKKey, kp, key, ck)
}

// certifyIDevID has the IAK certify the IDevID key with a fresh nonce and checks the evidence.
func (u *unit) certifyIDevID(ctx context.Context) (any, error) {
	iak, id := u.keys[roleIAK], u.keys[roleIDevID]
	if !iak.activated {
		// Also before the command: a certification by an IAK not proven beside the EK proves
		// nothing.
		return nil, fail(CodeIAKNotActivated, nil, "the IAK at %#x is not proven to reside beside the EK", iak.profile.Handle)
	}
	nonce, err := attest.NewNonce()
	if err != nil {
		return nil, fail(CodeInternal, err, "drawing a nonce")
	}
	res, err := u.do(ctx, &agentv1.Command{Op: &agentv1.Command_Certify{Certify: &agentv1.CertifyRequest{
		ObjectHandle: id.profile.Handle, SignHandle: iak.profile.Handle, QualifyingData: nonce}}})
	if err != nil {
		return nil, err
	}
	return checkCertification(iak, id, nonce, res.GetCertify().GetAttest(), res.GetCertify().GetSignature())
}

// checkCertification checks the IAK's certification of the IDevID key: the IAK activated, the
// IDevID's public area a DevID key's (fixedTPM, fixedParent, sensitiveDataOrigin, sign, not
// decrypt), then attest.CheckCertify against the IAK's public key, the IDevID's Name and the
// nonce.
func checkCertification(iak, idevid *devKey, nonce, attestBytes, sig []byte) (journal.CertifyResult, error) {
	if !iak.activated {
		return journal.CertifyResult{}, fail(CodeIAKNotActivated, nil, "the IAK is not proven to reside beside the EK")
	}
	if _, err := attest.CheckDevID(idevid.key.Raw); err != nil {
		return journal.CertifyResult{}, fail(CodeKeyAttributes, err, "the certified IDevID key")
	}
	c, err := attest.CheckCertify(attestBytes, sig, iak.key, idevid.key.Name, nonce)
	if err != nil {
		code := CodeCertifyInvalid
		switch {
		case errors.Is(err, attest.ErrSignature):
			code = CodeCertifySignature
		case errors.Is(err, attest.ErrCertifiedName):
			code = CodeCertifyNameMismatch
		case errors.Is(err, attest.ErrNonce):
			code = CodeCertifyNonce
		}
		return journal.CertifyResult{}, fail(code, err, "the IAK's certification of the IDevID key")
	}
	return journal.CertifyResult{Attest: attestBytes, Signature: sig, AttestSHA256: hex.EncodeToString(c.Digest[:]),
		Nonce: nonce, CertifiedName: c.Name, IAKName: iak.key.Name}, nil
}

// checkIAKCert checks what only an IAK certificate carries: the extended key usage
// tcg-kp-AIKCertificate.
func checkIAKCert(leaf *x509.Certificate) error {
	if !slices.ContainsFunc(leaf.UnknownExtKeyUsage, OIDAIKCertificate.Equal) {
		return fail(CodeCertInvalid, nil, "IAK certificate lacks the extended key usage tcg-kp-AIKCertificate (%s)", OIDAIKCertificate)
	}
	return nil
}
