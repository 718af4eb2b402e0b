package tpm_test

import (
	"bytes"
	"encoding/pem"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm"
)

// TestTSS2PrivateKeyPEM checks that a freshly created LDevID carries its parent and private
// area, that they encode as a TSS2 PRIVATE KEY PEM naming that key and parent, and that an
// IDevID or an LDevID found at its handle carries none (the private area exists only when
// TPM2_Create returns it). tpm2_ptool link and the tpm2-openssl provider load such files in
// fixture/line's field test.
func TestTSS2PrivateKeyPEM(t *testing.T) {
	tp := openSim(t)
	req := tpm.KeyRequest{Role: tpm.LDevID, Algorithm: tpm.ECCP256, Handle: tpm.LDevIDHandle}
	k := mustCreate(t, tp, req)
	if k.Parent != tpm.SRKHandleECC || len(k.Private) == 0 {
		t.Fatalf("created LDevID: parent %#x, %d private bytes; want %#x and some", k.Parent, len(k.Private), tpm.SRKHandleECC)
	}
	data, err := tpm.TSS2PrivateKeyPEM(k.Parent, k.Public, k.Private)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(data); b == nil || b.Type != "TSS2 PRIVATE KEY" {
		t.Fatalf("not a TSS2 PRIVATE KEY PEM:\n%s", data)
	}
	parent, pub, err := tpm.ParseTSS2PrivateKeyPEM(data)
	if err != nil || parent != k.Parent || !bytes.Equal(pub, k.Public) {
		t.Errorf("parsed back: parent %#x, public equal %v, %v", parent, bytes.Equal(pub, k.Public), err)
	}
	if again := mustCreate(t, tp, req); !again.Existed || again.Private != nil {
		t.Errorf("existing LDevID: existed %v, %d private bytes; want existed and none", again.Existed, len(again.Private))
	}
	if id := mustCreate(t, tp, tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.ECCP256, Handle: tpm.IDevIDHandle}); id.Private != nil {
		t.Errorf("IDevID has %d private bytes; want none (a primary key has no blob)", len(id.Private))
	}

	for name, in := range map[string][]byte{
		"no PEM":     []byte("not pem"),
		"other type": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{0x30, 0}}),
		"not ASN.1":  pem.EncodeToMemory(&pem.Block{Type: "TSS2 PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
	} {
		if _, _, err := tpm.ParseTSS2PrivateKeyPEM(in); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
	if _, err := tpm.TSS2PrivateKeyPEM(k.Parent, k.Public, nil); err == nil {
		t.Error("TSS2PrivateKeyPEM without a private area: no error")
	}
}
