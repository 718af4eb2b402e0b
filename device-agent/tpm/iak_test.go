package tpm_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"math/big"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/google/go-tpm/tpm2"
)

// TestIAKCertify creates an IDevID and an IAK of each algorithm, has the IAK certify the IDevID
// and checks the TPMS_ATTEST and its signature with the IAK's public key; the IAK also signs a
// CSR (through TPM2_Hash) but no bare digest.
func TestIAKCertify(t *testing.T) {
	for _, alg := range []tpm.Algorithm{tpm.ECCP256, tpm.RSA2048} {
		t.Run(alg.String(), func(t *testing.T) {
			tp := openSim(t)
			idevid := mustCreate(t, tp, tpm.KeyRequest{Role: tpm.IDevID, Algorithm: alg, Handle: tpm.IDevIDHandle})
			iak := mustCreate(t, tp, tpm.KeyRequest{Role: tpm.IAK, Algorithm: alg, Handle: tpm.IAKHandle})
			if again := mustCreate(t, tp, tpm.KeyRequest{Role: tpm.IAK, Algorithm: alg, Handle: tpm.IAKHandle}); !again.Existed || !bytes.Equal(again.Name, iak.Name) {
				t.Fatalf("second CreateKey(IAK): existed %v, same name %v", again.Existed, bytes.Equal(again.Name, iak.Name))
			}
			pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](iak.Public)
			if err != nil {
				t.Fatal(err)
			}
			if a := pub.ObjectAttributes; !a.Restricted || !a.SignEncrypt || a.Decrypt || !a.FixedTPM || !a.FixedParent {
				t.Fatalf("IAK attributes %+v", a)
			}
			iakPub, err := tpm.PublicKey(iak.Public)
			if err != nil {
				t.Fatal(err)
			}
			nonce := bytes.Repeat([]byte{7}, 32)
			c, err := tp.Certify(tpm.IDevIDHandle, tpm.IAKHandle, nonce)
			if err != nil {
				t.Fatalf("Certify: %v", err)
			}
			att, err := tpm2.Unmarshal[tpm2.TPMSAttest](c.Attest)
			if err != nil {
				t.Fatal(err)
			}
			info, err := att.Attested.Certify()
			if err != nil || att.Type != tpm2.TPMSTAttestCertify {
				t.Fatalf("attest type %#x: %v", att.Type, err)
			}
			if !bytes.Equal(info.Name.Buffer, idevid.Name) || !bytes.Equal(att.ExtraData.Buffer, nonce) {
				t.Errorf("certified name %x extra %x, want %x and the nonce", info.Name.Buffer, att.ExtraData.Buffer, idevid.Name)
			}
			sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](c.Signature)
			if err != nil {
				t.Fatal(err)
			}
			digest := sha256.Sum256(c.Attest)
			switch k := iakPub.(type) {
			case *ecdsa.PublicKey:
				s, err := sig.Signature.ECDSA()
				if err != nil || !ecdsa.Verify(k, digest[:], new(big.Int).SetBytes(s.SignatureR.Buffer), new(big.Int).SetBytes(s.SignatureS.Buffer)) {
					t.Errorf("ECDSA signature over the attest does not verify (%v)", err)
				}
			case *rsa.PublicKey:
				s, err := sig.Signature.RSASSA()
				if err != nil || rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], s.Sig.Buffer) != nil {
					t.Errorf("RSASSA signature over the attest does not verify (%v)", err)
				}
			}

			csr, err := tp.BuildCSR(tpm.IAKHandle, []byte{0x30, 0}, nil, tpm.SchemeDefault)
			if err != nil {
				t.Fatalf("BuildCSR with the IAK: %v", err)
			}
			req, err := x509.ParseCertificateRequest(csr)
			if err != nil || req.CheckSignature() != nil {
				t.Fatalf("IAK CSR: %v", err)
			}
			if _, err := tp.Sign(tpm.IAKHandle, digest[:], crypto.SHA256, tpm.SchemeDefault); !errors.Is(err, tpm.ErrInvalidArgument) {
				t.Errorf("Sign of a bare digest with the IAK: %v, want ErrInvalidArgument", err)
			}
			if _, err := tp.Certify(tpm.IDevIDHandle, tpm.IAKHandle, make([]byte, 65)); !errors.Is(err, tpm.ErrInvalidArgument) {
				t.Errorf("Certify with 65 bytes of qualifying data: %v", err)
			}
			if _, err := tp.Certify(tpm.LDevIDHandle, tpm.IAKHandle, nonce); !errors.Is(err, tpm.ErrNotFound) {
				t.Errorf("Certify of an empty handle: %v, want ErrNotFound", err)
			}
			if _, err := tp.CreateKey(tpm.KeyRequest{Role: tpm.IAK, Algorithm: alg, Handle: tpm.IAKHandle, Template: idevid.Public}); !errors.Is(err, tpm.ErrInvalidArgument) {
				t.Errorf("CreateKey(IAK) with a template: %v", err)
			}
		})
	}
}
