package tpm

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// TestNoLeakedContexts runs every operation, failing ones included, and checks that no
// transient object or session is left loaded (the TPM has only 3 object slots).
func TestNoLeakedContexts(t *testing.T) {
	tp, err := Open("simulator")
	if errors.Is(err, ErrInvalidArgument) {
		t.Skipf("skipping: no TPM simulator in this build (it needs cgo): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()

	loaded := func(step string) {
		t.Helper()
		tp.mu.Lock()
		defer tp.mu.Unlock()
		for _, r := range [][2]uint32{{0x80000000, 0x80FFFFFF}, {0x02000000, 0x02FFFFFF}, {0x03000000, 0x03FFFFFF}} {
			hs, err := tp.handles(r[0], r[1])
			if err != nil {
				t.Fatal(err)
			}
			if len(hs) != 0 {
				t.Fatalf("after %s: handles %#x still loaded", step, hs)
			}
		}
	}
	for _, alg := range []Algorithm{RSA2048, ECCP256} {
		if _, err := tp.ReadEK(alg); err != nil {
			t.Fatal(err)
		}
		loaded("ReadEK " + alg.String())
	}
	id, err := tp.CreateKey(KeyRequest{Role: IDevID, Algorithm: ECCP256, Handle: IDevIDHandle})
	if err != nil {
		t.Fatal(err)
	}
	loaded("CreateKey IDevID")
	if _, err := tp.CreateKey(KeyRequest{Role: LDevID, Algorithm: RSA2048, Handle: LDevIDHandle}); err != nil {
		t.Fatal(err)
	}
	loaded("CreateKey LDevID")
	if _, err := tp.CreateKey(KeyRequest{Role: IDevID, Algorithm: RSA2048, Handle: IDevIDHandle}); !errors.Is(err, ErrHandleOccupied) {
		t.Fatal(err)
	}
	loaded("CreateKey occupied")

	ek, err := tp.ReadEK(RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	ekPub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ek.Public)
	if err != nil {
		t.Fatal(err)
	}
	encap, err := tpm2.ImportEncapsulationKey(ekPub)
	if err != nil {
		t.Fatal(err)
	}
	blob, enc, err := tpm2.CreateCredential(rand.Reader, encap, id.Name, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ { // more rounds than object slots
		if _, err := tp.ActivateCredential(id.Handle, RSA2048, blob, enc); err != nil {
			t.Fatal(err)
		}
		blob[len(blob)-1] ^= 1
		if _, err := tp.ActivateCredential(id.Handle, RSA2048, blob, enc); !errors.Is(err, ErrActivationFailed) {
			t.Fatal(err)
		}
		blob[len(blob)-1] ^= 1
	}
	loaded("ActivateCredential")
	d := sha256.Sum256([]byte("x"))
	if _, err := tp.Sign(id.Handle, d[:], crypto.SHA256, SchemeDefault); err != nil {
		t.Fatal(err)
	}
	loaded("Sign")
	if _, err := tp.NVWrite(NVWriteRequest{Index: 0x01500000, Auth: Owner, Data: make([]byte, 1500), WriteLock: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.NVRead(0x01500000); err != nil {
		t.Fatal(err)
	}
	loaded("NV")
}
