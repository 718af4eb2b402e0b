package attest_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"math/big"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/station/attest"
	"github.com/google/go-tpm/tpm2"
)

// certifyOnSim has a simulator's IAK of alg certify its IDevID with nonce; it returns the
// checked keys and the TPM's answer.
func certifyOnSim(t *testing.T, alg tpm.Algorithm, nonce []byte) (idevid, iak *attest.Key, c *tpm.Certification) {
	t.Helper()
	tp, err := tpm.Open("simulator")
	if errors.Is(err, tpm.ErrInvalidArgument) {
		t.Skipf("no TPM simulator in this build: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	id, err := tp.CreateKey(tpm.KeyRequest{Role: tpm.IDevID, Algorithm: alg, Handle: tpm.IDevIDHandle})
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tp.CreateKey(tpm.KeyRequest{Role: tpm.IAK, Algorithm: alg, Handle: tpm.IAKHandle})
	if err != nil {
		t.Fatal(err)
	}
	if c, err = tp.Certify(tpm.IDevIDHandle, tpm.IAKHandle, nonce); err != nil {
		t.Fatal(err)
	}
	if idevid, err = attest.CheckDevID(id.Public); err != nil {
		t.Fatal(err)
	}
	if iak, err = attest.CheckIAK(ak.Public); err != nil {
		t.Fatalf("CheckIAK of the TPM's IAK: %v", err)
	}
	if _, err := attest.CheckIAK(id.Public); !errors.Is(err, attest.ErrKeyAttributes) {
		t.Errorf("CheckIAK of the IDevID: %v, want ErrKeyAttributes", err)
	}
	if _, err := attest.CheckDevID(ak.Public); !errors.Is(err, attest.ErrKeyAttributes) {
		t.Errorf("CheckDevID of the IAK: %v, want ErrKeyAttributes", err)
	}
	return idevid, iak, c
}

// softwareSignature signs attest with a key that is not the IAK, as a TPMT_SIGNATURE.
func softwareSignature(t *testing.T, attestBytes []byte) []byte {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(attestBytes)
	r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
		Hash: tpm2.TPMAlgSHA256, SignatureR: tpm2.TPM2BECCParameter{Buffer: r.Bytes()}, SignatureS: tpm2.TPM2BECCParameter{Buffer: new(big.Int).Set(s).Bytes()}})})
}

func TestCheckCertify(t *testing.T) {
	nonce := bytes.Repeat([]byte{0xA5}, 32)
	for _, alg := range []tpm.Algorithm{tpm.ECCP256, tpm.RSA2048} {
		t.Run(alg.String(), func(t *testing.T) {
			idevid, iak, c := certifyOnSim(t, alg, nonce)
			got, err := attest.CheckCertify(c.Attest, c.Signature, iak, idevid.Name, nonce)
			if err != nil {
				t.Fatalf("CheckCertify of the TPM's answer: %v", err)
			}
			if !bytes.Equal(got.Name, idevid.Name) || got.Digest != sha256.Sum256(c.Attest) {
				t.Errorf("certification %x / %x", got.Name, got.Digest)
			}
			tampered := bytes.Clone(c.Attest)
			tampered[len(tampered)-1] ^= 1
			badMagic := bytes.Clone(c.Attest)
			badMagic[0] ^= 1
			stale := bytes.Repeat([]byte{0x5A}, 32)
			for _, tc := range []struct {
				name            string
				attest, sig     []byte
				wantName, nonce []byte
				want            error
			}{
				{"signed by another key", c.Attest, softwareSignature(t, c.Attest), idevid.Name, nonce, attest.ErrSignature},
				{"attest changed after signing", tampered, c.Signature, idevid.Name, nonce, attest.ErrSignature},
				{"not TPM-generated", badMagic, c.Signature, idevid.Name, nonce, attest.ErrMalformed},
				{"signature not a TPMT_SIGNATURE", c.Attest, c.Signature[:3], idevid.Name, nonce, attest.ErrSignature},
				{"another object certified", c.Attest, c.Signature, iak.Name, nonce, attest.ErrCertifiedName},
				{"stale nonce", c.Attest, c.Signature, idevid.Name, stale, attest.ErrNonce},
				{"trailing bytes", append(bytes.Clone(c.Attest), 0), c.Signature, idevid.Name, nonce, attest.ErrMalformed},
			} {
				if _, err := attest.CheckCertify(tc.attest, tc.sig, iak, tc.wantName, tc.nonce); !errors.Is(err, tc.want) {
					t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
				}
			}
			// The IDevID (unrestricted, no fixed scheme) is no IAK to check against.
			if _, err := attest.CheckCertify(c.Attest, c.Signature, idevid, idevid.Name, nonce); !errors.Is(err, attest.ErrKeyAttributes) {
				t.Errorf("checked against the IDevID: %v, want ErrKeyAttributes", err)
			}
		})
	}
}
