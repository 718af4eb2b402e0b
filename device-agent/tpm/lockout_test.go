package tpm_test

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// lockOut drives the TPM into dictionary-attack lockout, as repeated unorderly power losses do:
// failed authorizations of a DA-protected key with an auth value until the TPM answers
// TPM_RC_LOCKOUT (the simulator's limit is a few tries; 64 bounds the loop).
func lockOut(t *testing.T, tr transport.TPM) {
	t.Helper()
	tmpl := tpm.DevIDTemplate(tpm.ECCP256)
	tmpl.ObjectAttributes.NoDA = false
	key, err := (tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InSensitive:   tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{UserAuth: tpm2.TPM2BAuth{Buffer: []byte("secret")}}},
		InPublic:      tpm2.New2B(tmpl),
	}).Execute(tr)
	if err != nil {
		t.Fatalf("CreatePrimary: %v", err)
	}
	defer func() { _, _ = (tpm2.FlushContext{FlushHandle: key.ObjectHandle}).Execute(tr) }()
	digest := sha256.Sum256([]byte("guess"))
	for range 64 {
		_, err = (tpm2.Sign{
			KeyHandle: tpm2.AuthHandle{Handle: key.ObjectHandle, Name: key.Name, Auth: tpm2.PasswordAuth([]byte("wrong"))},
			Digest:    tpm2.TPM2BDigest{Buffer: digest[:]},
			InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256})},
			Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck},
		}).Execute(tr)
		switch {
		case errors.Is(err, tpm2.TPMRCLockout):
			return
		case !errors.Is(err, tpm2.TPMRCAuthFail):
			t.Fatalf("Sign with a wrong auth value: %v, want TPM_RC_AUTH_FAIL or TPM_RC_LOCKOUT", err)
		}
	}
	t.Fatal("no lockout after 64 failed authorizations")
}

// TestLockoutSparesDevIDKeys locks the TPM out: a DevID key of the template before noDA is
// refused with TPM_RC_LOCKOUT (Lockout reports it, the agent's ERROR_CODE_TPM_LOCKOUT), while
// the IDevID key and IAK of DevIDTemplate and IAKTemplate (noDA) still sign and certify.
func TestLockoutSparesDevIDKeys(t *testing.T) {
	tr, err := tpm.OpenTransport("simulator")
	if errors.Is(err, tpm.ErrInvalidArgument) {
		t.Skipf("skipping: no TPM simulator in this build (it needs cgo): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	tp := tpm.New(tr, "simulator")
	t.Cleanup(func() { _ = tp.Close() })

	mustCreate(t, tp, tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.ECCP256, Handle: tpm.IDevIDHandle})
	mustCreate(t, tp, tpm.KeyRequest{Role: tpm.IAK, Algorithm: tpm.ECCP256, Handle: tpm.IAKHandle})
	old := tpm.DevIDTemplate(tpm.ECCP256)
	old.ObjectAttributes.NoDA = false
	const oldHandle = 0x81020010
	mustCreate(t, tp, tpm.KeyRequest{Role: tpm.IDevID, Handle: oldHandle, Template: tpm2.Marshal(old)})

	lockOut(t, tr)

	digest := sha256.Sum256([]byte("nonce"))
	_, err = tp.Sign(oldHandle, digest[:], crypto.SHA256, tpm.SchemeDefault)
	if !tpm.Lockout(err) {
		t.Fatalf("Sign with a DA-protected key in lockout: %v, want TPM_RC_LOCKOUT", err)
	}
	if tpm.Lockout(errors.New("other")) || tpm.Lockout(tpm2.TPMRCAuthFail) {
		t.Error("Lockout reports other errors")
	}
	if _, err := tp.Sign(tpm.IDevIDHandle, digest[:], crypto.SHA256, tpm.SchemeDefault); err != nil {
		t.Errorf("Sign with the IDevID key in lockout: %v", err)
	}
	if _, err := tp.Certify(tpm.IDevIDHandle, tpm.IAKHandle, []byte("nonce")); err != nil {
		t.Errorf("the IAK certifying the IDevID key in lockout: %v", err)
	}
}

// TestCreateKeyKeepsKeyBeforeNoDA finds an IDevID key made from DevIDTemplate before it set
// noDA: it is the unit's key (existed), not another template's object.
func TestCreateKeyKeepsKeyBeforeNoDA(t *testing.T) {
	tp := openSim(t)
	old := tpm.DevIDTemplate(tpm.ECCP256)
	old.ObjectAttributes.NoDA = false
	k := mustCreate(t, tp, tpm.KeyRequest{Role: tpm.IDevID, Handle: tpm.IDevIDHandle, Template: tpm2.Marshal(old)})
	again, err := tp.CreateKey(tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.ECCP256, Handle: tpm.IDevIDHandle})
	if err != nil || !again.Existed || !bytes.Equal(again.Name, k.Name) {
		t.Fatalf("CreateKey over a key before noDA: %+v, %v; want it found", again, err)
	}
}
