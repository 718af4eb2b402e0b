package agent

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/fixture/devpki"
	"github.com/devid-station/devid/fixture/tpmvendor"
	agentv1 "github.com/devid-station/devid/proto/agent/v1"
)

// TestEndorsementIdentityProtected drives a real agent on the TPM simulator, manufactured with
// persisted EKs and EK certificates in NV, as a station that asks it to destroy them: every
// write, undefine and evict in the TCG-reserved endorsement ranges is refused with
// ENDORSEMENT_RESERVED, and the EKs and their certificates are unchanged afterwards.
func TestEndorsementIdentityProtected(t *testing.T) {
	sim := needSim(t)
	ca, err := devpki.NewRoot("Test TPM Vendor", "EK CA", devpki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tpmvendor.Manufacture(sim, ca, tpmvendor.Options{}); err != nil {
		t.Fatalf("manufacturing the simulator: %v", err)
	}
	pki := newTestPKI(t)
	st := startStation(t, pki)
	cfg := testConfig(t, st, pki.pool)
	root := t.TempDir()
	cfg.FileRoots = []string{root}
	run := startAgent(t, cfg, sim)
	s := st.next(t)

	readEK := func() []*agentv1.EndorsementKey {
		t.Helper()
		res := s.call(t, &agentv1.Command{Op: &agentv1.Command_ReadEk{ReadEk: &agentv1.ReadEKRequest{}}})
		wantOK(t, "read_ek", res)
		return res.GetReadEk().GetKeys()
	}
	before := readEK()
	for _, k := range before {
		if len(k.GetCertificate()) == 0 || !k.GetPersisted() {
			t.Fatalf("manufactured EK %v: certificate of %d bytes, persisted %v", k.GetAlgorithm(), len(k.GetCertificate()), k.GetPersisted())
		}
	}

	for _, tc := range []struct {
		name string
		cmd  *agentv1.Command
	}{
		{"nv_undefine RSA EK certificate", &agentv1.Command{Op: &agentv1.Command_NvUndefine{NvUndefine: &agentv1.NVUndefineRequest{
			Index: tpm.EKCertIndexRSA, Auth: agentv1.Hierarchy_HIERARCHY_PLATFORM}}}},
		{"nv_undefine ECC EK certificate", &agentv1.Command{Op: &agentv1.Command_NvUndefine{NvUndefine: &agentv1.NVUndefineRequest{
			Index: tpm.EKCertIndexECC, Auth: agentv1.Hierarchy_HIERARCHY_PLATFORM}}}},
		{"nv_undefine EK template index", &agentv1.Command{Op: &agentv1.Command_NvUndefine{NvUndefine: &agentv1.NVUndefineRequest{
			Index: 0x01C0000C, Auth: agentv1.Hierarchy_HIERARCHY_OWNER}}}},
		{"nv_write over the ECC EK certificate", &agentv1.Command{Op: &agentv1.Command_NvWrite{NvWrite: &agentv1.NVWriteRequest{
			Index: tpm.EKCertIndexECC, Auth: agentv1.Hierarchy_HIERARCHY_PLATFORM, Data: []byte("not a certificate")}}}},
		{"nv_write into a free EK index", &agentv1.Command{Op: &agentv1.Command_NvWrite{NvWrite: &agentv1.NVWriteRequest{
			Index: 0x01C07FFF, Auth: agentv1.Hierarchy_HIERARCHY_OWNER, Data: []byte("x")}}}},
		{"evict RSA EK", &agentv1.Command{Op: &agentv1.Command_Evict{Evict: &agentv1.EvictRequest{Handle: tpm.EKHandleRSA}}}},
		{"evict ECC EK", &agentv1.Command{Op: &agentv1.Command_Evict{Evict: &agentv1.EvictRequest{
			Handle: tpm.EKHandleECC, Auth: agentv1.Hierarchy_HIERARCHY_OWNER}}}},
		{"create_key at an EK handle", &agentv1.Command{Op: &agentv1.Command_CreateKey{CreateKey: &agentv1.CreateKeyRequest{
			Role: agentv1.KeyRole_KEY_ROLE_IDEVID, Algorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, Handle: 0x810100FF}}}},
		{"create_key with the SRK at an EK handle", &agentv1.Command{Op: &agentv1.Command_CreateKey{CreateKey: &agentv1.CreateKeyRequest{
			Role: agentv1.KeyRole_KEY_ROLE_LDEVID, Algorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, Handle: 0x81000002, SrkHandle: 0x81010003}}}},
	} {
		res := s.call(t, tc.cmd)
		if got := res.GetError().GetCode(); got != agentv1.ErrorCode_ERROR_CODE_ENDORSEMENT_RESERVED {
			t.Errorf("%s: %v, want ENDORSEMENT_RESERVED", tc.name, res)
		}
	}

	after := readEK()
	if len(after) != len(before) {
		t.Fatalf("read_ek after the refusals: %d keys, want %d", len(after), len(before))
	}
	for i := range before {
		b, a := before[i], after[i]
		if !bytes.Equal(a.GetCertificate(), b.GetCertificate()) || !bytes.Equal(a.GetPublicArea(), b.GetPublicArea()) ||
			a.GetPersisted() != b.GetPersisted() || a.GetHandle() != b.GetHandle() {
			t.Errorf("EK %v changed: certificate %d -> %d bytes, persisted %v -> %v", b.GetAlgorithm(),
				len(b.GetCertificate()), len(a.GetCertificate()), b.GetPersisted(), a.GetPersisted())
		}
	}

	// A file mode that lets group or others write is refused and nothing is written.
	for _, mode := range []uint32{0o666, 0o620, 0o602} {
		p := filepath.Join(root, "etc", "aziot", "config.toml")
		res := s.call(t, &agentv1.Command{Op: &agentv1.Command_WriteFile{WriteFile: &agentv1.WriteFileRequest{
			Path: p, Content: []byte("x"), Mode: mode}}})
		if res.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
			t.Errorf("write_file mode %#o = %v, want INVALID_ARGUMENT", mode, res)
		}
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("write_file mode %#o left %s (%v)", mode, p, err)
		}
	}

	res := s.call(t, &agentv1.Command{Op: &agentv1.Command_Finish{Finish: &agentv1.FinishRequest{Passed: true}}})
	wantOK(t, "finish", res)
	s.close(nil)
	if _, err := run.wait(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}
