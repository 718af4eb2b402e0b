package workflow

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/station/attest"
	"github.com/google/go-tpm/tpm2"
)

// TestCheckCertification checks the IAK's certification of the IDevID key with evidence a TPM
// simulator made, and refuses each kind of bad evidence with its stable code.
func TestCheckCertification(t *testing.T) {
	tp, err := tpm.Open("simulator")
	if errors.Is(err, tpm.ErrInvalidArgument) {
		t.Skipf("no TPM simulator in this build: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	create := func(req tpm.KeyRequest, check func([]byte) (*attest.Key, error)) *devKey {
		k, err := tp.CreateKey(req)
		if err != nil {
			t.Fatal(err)
		}
		key, err := check(k.Public)
		if err != nil {
			t.Fatal(err)
		}
		return &devKey{key: key, profile: KeyProfile{Handle: req.Handle}}
	}
	idevid := create(tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.ECCP256, Handle: tpm.IDevIDHandle}, attest.CheckDevID)
	iak := create(tpm.KeyRequest{Role: tpm.IAK, Algorithm: tpm.ECCP256, Handle: tpm.IAKHandle}, attest.CheckIAK)
	// Another key for the IAK to certify: the certification of the wrong object.
	_ = create(tpm.KeyRequest{Role: tpm.LDevID, Algorithm: tpm.ECCP256, Handle: tpm.LDevIDHandle}, attest.CheckDevID)
	iak.activated = true

	nonce, stale := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	certify := func(object uint32, n []byte) *tpm.Certification {
		c, err := tp.Certify(object, tpm.IAKHandle, n)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	good := certify(tpm.IDevIDHandle, nonce)
	res, err := checkCertification(iak, idevid, nonce, good.Attest, good.Signature)
	if err != nil {
		t.Fatalf("the TPM's certification: %v", err)
	}
	if sum := sha256.Sum256(good.Attest); !bytes.Equal(res.CertifiedName, idevid.key.Name) || res.AttestSHA256 != hex.EncodeToString(sum[:]) ||
		!bytes.Equal(res.Attest, good.Attest) || !bytes.Equal(res.Nonce, nonce) || !bytes.Equal(res.IAKName, iak.key.Name) {
		t.Errorf("result %+v", res)
	}

	// A certification signed by a key other than the IAK.
	sw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(good.Attest)
	r, s, err := ecdsa.Sign(rand.Reader, sw, d[:])
	if err != nil {
		t.Fatal(err)
	}
	foreign := tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
		Hash: tpm2.TPMAlgSHA256, SignatureR: tpm2.TPM2BECCParameter{Buffer: r.Bytes()}, SignatureS: tpm2.TPM2BECCParameter{Buffer: s.Bytes()}})})
	otherName := certify(tpm.LDevIDHandle, nonce)
	old := certify(tpm.IDevIDHandle, stale)
	notActivated := *iak
	notActivated.activated = false
	badMagic := bytes.Clone(good.Attest)
	badMagic[0] ^= 0xFF

	for _, tc := range []struct {
		name        string
		iak         *devKey
		attest, sig []byte
		want        string
	}{
		{"signed by a different key", iak, good.Attest, foreign, CodeCertifySignature},
		{"another object certified (wrong Name)", iak, otherName.Attest, otherName.Signature, CodeCertifyNameMismatch},
		{"stale nonce", iak, old.Attest, old.Signature, CodeCertifyNonce},
		{"IAK not activated", &notActivated, good.Attest, good.Signature, CodeIAKNotActivated},
		{"not TPM-generated", iak, badMagic, good.Signature, CodeCertifyInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := checkCertification(tc.iak, idevid, nonce, tc.attest, tc.sig); CodeOf(err) != tc.want {
				t.Fatalf("code %s (%v), want %s", CodeOf(err), err, tc.want)
			}
			if Class(tc.want) != ClassSecurity {
				t.Errorf("%s is not a security failure", tc.want)
			}
		})
	}
}
