package tpm

import (
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// ActivateCredential runs TPM2_ActivateCredential for the key at keyHandle with the EK of
// ekAlg (persistent if a default EK sits at its handle, else recreated and flushed), authorizing
// the EK with a policy session in the EK's name algorithm: PolicySecret(TPM_RH_ENDORSEMENT), as
// a low-range EK's policy requires, then for a high-range EK PolicyOR of the profile's
// branches. credentialBlob is the TPM2B_ID_OBJECT contents and encryptedSecret the
// TPM2B_ENCRYPTED_SECRET contents, without size prefixes. It returns the credential.
//
// A credential the TPM refuses (made for another key's Name or another EK, or corrupted)
// gives an error wrapping ErrActivationFailed and the TPM response code; no key at keyHandle
// gives ErrNotFound.
func (t *TPM) ActivateCredential(keyHandle uint32, ekAlg Algorithm, credentialBlob, encryptedSecret []byte) ([]byte, error) {
	ekt, err := ekType(ekAlg)
	if err != nil {
		return nil, fmt.Errorf("activating credential: %w", err)
	}
	if len(credentialBlob) == 0 || len(encryptedSecret) == 0 {
		return nil, fmt.Errorf("activating credential: %w: empty credential", ErrInvalidArgument)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	key, err := t.readPublic(keyHandle)
	if err != nil {
		return nil, fmt.Errorf("activating credential: %w", err)
	}
	ek, persisted, err := t.ek(ekAlg)
	if err != nil {
		return nil, fmt.Errorf("activating credential: loading EK: %w", err)
	}
	if !persisted {
		defer t.flush(ek.handle)
	}
	// The default EK policy: PolicySecret(TPM_RH_ENDORSEMENT) in a policy session.
	sess, closeSess, err := tpm2.PolicySession(t.tr, ekt.Public.NameAlg, 16)
	if err != nil {
		return nil, fmt.Errorf("activating credential: starting EK policy session: %w", err)
	}
	defer func() {
		if err := closeSess(); err != nil {
			t.log.Warn("flushing EK policy session failed", "err", err)
		}
	}()
	if _, err := (tpm2.PolicySecret{
		AuthHandle:    hierarchyAuth(tpm2.TPMRHEndorsement),
		PolicySession: sess.Handle(),
		NonceTPM:      sess.NonceTPM(),
	}).Execute(t.tr); err != nil {
		return nil, fmt.Errorf("activating credential: satisfying EK policy: %w", err)
	}
	if len(ekt.PolicyBranches) > 0 {
		var list tpm2.TPMLDigest
		for _, b := range ekt.PolicyBranches {
			list.Digests = append(list.Digests, tpm2.TPM2BDigest{Buffer: b})
		}
		if _, err := (tpm2.PolicyOr{PolicySession: sess.Handle(), PHashList: list}).Execute(t.tr); err != nil {
			return nil, fmt.Errorf("activating credential: satisfying EK policy (PolicyOR): %w", err)
		}
	}
	rsp, err := (tpm2.ActivateCredential{
		ActivateHandle: tpm2.AuthHandle{Handle: key.handle, Name: tpm2.TPM2BName{Buffer: key.name}, Auth: tpm2.PasswordAuth(nil)},
		KeyHandle:      tpm2.AuthHandle{Handle: ek.handle, Name: tpm2.TPM2BName{Buffer: ek.name}, Auth: sess},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: credentialBlob},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: encryptedSecret},
	}).Execute(t.tr)
	if err != nil {
		var rc tpm2.TPMRC
		if errors.As(err, &rc) && !rc.IsWarning() {
			return nil, fmt.Errorf("activating credential for %#x: %w (TPM RC %#x): %w", keyHandle, ErrActivationFailed, uint32(rc), err)
		}
		return nil, fmt.Errorf("activating credential for %#x: %w", keyHandle, err)
	}
	t.log.Debug("activated credential", logKeyOp, "activate_credential", logKeyHandle, fmt.Sprintf("%#x", keyHandle), "ek_alg", ekAlg.String())
	return rsp.CertInfo.Buffer, nil
}
