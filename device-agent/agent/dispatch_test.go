package agent

import (
	"bytes"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/devid-station/devid/device-agent/tpm"
	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/google/go-tpm/tpm2"
	"google.golang.org/protobuf/proto"
)

// newTestDispatcher returns a dispatcher on f with roots and a 64 KiB message bound.
func newTestDispatcher(t *testing.T, f *fakeTPM, roots ...string) *dispatcher {
	t.Helper()
	return &dispatcher{tpm: f, files: &fileRoots{roots: roots}, maxBytes: 64 << 10, log: slog.New(slog.DiscardHandler)}
}

// subjectDER returns a DER Name with CN=cn.
func subjectDER(t *testing.T, cn string) []byte {
	t.Helper()
	der, err := asn1.Marshal(pkix.Name{CommonName: cn, SerialNumber: "SN1"}.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestDispatchCommands(t *testing.T) {
	subj := subjectDER(t, "unit")
	san := []byte{0x30, 0x03, 0x82, 0x01, 'x'} // SEQUENCE { dNSName "x" }
	digest32 := bytes.Repeat([]byte{1}, 32)
	digest48 := bytes.Repeat([]byte{2}, 48)
	tests := []struct {
		name      string
		cmd       *agentv1.Command
		wantCalls []string
		want      *agentv1.Result
	}{
		{
			name:      "info",
			cmd:       &agentv1.Command{Op: &agentv1.Command_Info{Info: &agentv1.InfoRequest{}}},
			wantCalls: []string{"Info()"},
			want: &agentv1.Result{Op: &agentv1.Result_Info{Info: &agentv1.InfoResult{
				Manufacturer: 0x49465800, ManufacturerId: "IFX", VendorString: "SLB9672", FirmwareVersion: 0x0010_0002_0000_0003,
				Family: "2.0", SpecRevision: 159, SpecYear: 2021, SpecDayOfYear: 300, NvBufferMax: 1024, VendorTpmType: 1, StartupClear: proto.Uint32(0x8000000F),
				PersistentHandles: []uint32{0x81010001}, NvIndices: []uint32{0x01C00002},
			}}},
		},
		{
			name:      "read_ek default algorithms",
			cmd:       &agentv1.Command{Op: &agentv1.Command_ReadEk{ReadEk: &agentv1.ReadEKRequest{}}},
			wantCalls: []string{"ReadEK(RSA-2048)", "ReadEK(ECC-P256)", "ReadEKChain()"},
			want: &agentv1.Result{Op: &agentv1.Result_ReadEk{ReadEk: &agentv1.ReadEKResult{Keys: []*agentv1.EndorsementKey{
				{Algorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_RSA_2048, PublicArea: []byte{'p', 1}, Persisted: true, Handle: 0x81010001,
					Certificate: []byte{'c', 1}, CertificateIndex: 0x01C00001, CertificateRawSize: 101},
				{Algorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, PublicArea: []byte{'p', 2}, Handle: 0x81010002,
					Certificate: []byte{'c', 2}, CertificateIndex: 0x01C00002, CertificateRawSize: 102},
			}}}},
		},
		{
			name: "read_ek ecc only",
			cmd: &agentv1.Command{Op: &agentv1.Command_ReadEk{ReadEk: &agentv1.ReadEKRequest{
				Algorithms: []agentv1.KeyAlgorithm{agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256}}}},
			wantCalls: []string{"ReadEK(ECC-P256)", "ReadEKChain()"},
			want: &agentv1.Result{Op: &agentv1.Result_ReadEk{ReadEk: &agentv1.ReadEKResult{Keys: []*agentv1.EndorsementKey{
				{Algorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, PublicArea: []byte{'p', 2}, Handle: 0x81010002,
					Certificate: []byte{'c', 2}, CertificateIndex: 0x01C00002, CertificateRawSize: 102},
			}}}},
		},
		{
			name: "create_key idevid",
			cmd: &agentv1.Command{Op: &agentv1.Command_CreateKey{CreateKey: &agentv1.CreateKeyRequest{
				Role: agentv1.KeyRole_KEY_ROLE_IDEVID, Algorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, Handle: 0x81020000}}},
			wantCalls: []string{"CreateKey(1 ECC-P256 0x81020000 0x0 )"},
			want: &agentv1.Result{Op: &agentv1.Result_CreateKey{CreateKey: &agentv1.CreateKeyResult{
				PublicArea: []byte("pub"), Name: []byte("name"), Existed: true, Handle: 0x81020000}}},
		},
		{
			name: "create_key ldevid with template and no algorithm",
			cmd: &agentv1.Command{Op: &agentv1.Command_CreateKey{CreateKey: &agentv1.CreateKeyRequest{
				Role: agentv1.KeyRole_KEY_ROLE_LDEVID, Handle: 0x81000002, SrkHandle: 0x81000001, Template: []byte{0xde, 0xad}}}},
			wantCalls: []string{"CreateKey(2 Algorithm(0) 0x81000002 0x81000001 dead)"},
			want: &agentv1.Result{Op: &agentv1.Result_CreateKey{CreateKey: &agentv1.CreateKeyResult{
				PublicArea: []byte("pub"), Name: []byte("name"), Existed: true, SrkCreated: true, Handle: 0x81000002}}},
		},
		{
			name: "activate_credential",
			cmd: &agentv1.Command{Op: &agentv1.Command_ActivateCredential{ActivateCredential: &agentv1.ActivateCredentialRequest{
				KeyHandle: 0x81020000, EkAlgorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_RSA_2048, CredentialBlob: []byte{1}, EncryptedSecret: []byte{2}}}},
			wantCalls: []string{"ActivateCredential(0x81020000 RSA-2048 01 02)"},
			want:      &agentv1.Result{Op: &agentv1.Result_ActivateCredential{ActivateCredential: &agentv1.ActivateCredentialResult{Secret: []byte("secret")}}},
		},
		{
			name: "build_csr",
			cmd: &agentv1.Command{Op: &agentv1.Command_BuildCsr{BuildCsr: &agentv1.BuildCSRRequest{
				KeyHandle: 0x81020000, Subject: subj, Scheme: agentv1.SignatureScheme_SIGNATURE_SCHEME_ECDSA,
				Extensions: []*agentv1.Extension{{Oid: "2.5.29.17", Critical: true, Value: san}}}}},
			wantCalls: []string{fmt.Sprintf("BuildCSR(0x81020000 %x %v 1)", subj,
				[]pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Critical: true, Value: san}})},
			want: &agentv1.Result{Op: &agentv1.Result_BuildCsr{BuildCsr: &agentv1.BuildCSRResult{Csr: []byte("csr")}}},
		},
		{
			name: "sign sha256 default scheme",
			cmd: &agentv1.Command{Op: &agentv1.Command_Sign{Sign: &agentv1.SignRequest{
				KeyHandle: 0x81020000, Digest: digest32, Hash: agentv1.HashAlgorithm_HASH_ALGORITHM_SHA256}}},
			wantCalls: []string{"Sign(0x81020000 32 SHA-256 0)"},
			want:      &agentv1.Result{Op: &agentv1.Result_Sign{Sign: &agentv1.SignResult{Signature: []byte("sig")}}},
		},
		{
			name: "sign sha384 pss",
			cmd: &agentv1.Command{Op: &agentv1.Command_Sign{Sign: &agentv1.SignRequest{
				KeyHandle: 0x81000002, Digest: digest48, Hash: agentv1.HashAlgorithm_HASH_ALGORITHM_SHA384,
				Scheme: agentv1.SignatureScheme_SIGNATURE_SCHEME_RSAPSS}}},
			wantCalls: []string{"Sign(0x81000002 48 SHA-384 3)"},
			want:      &agentv1.Result{Op: &agentv1.Result_Sign{Sign: &agentv1.SignResult{Signature: []byte("sig")}}},
		},
		{
			name: "nv_write",
			cmd: &agentv1.Command{Op: &agentv1.Command_NvWrite{NvWrite: &agentv1.NVWriteRequest{
				Index: 0x01C90000, Auth: agentv1.Hierarchy_HIERARCHY_PLATFORM, Attributes: 0x42, Size: 8, Data: []byte{9, 9}, WriteLock: true}}},
			wantCalls: []string{"NVWrite(0x1c90000 platform 0x42 8 0909 true)"},
			want: &agentv1.Result{Op: &agentv1.Result_NvWrite{NvWrite: &agentv1.NVWriteResult{
				Defined: true, Chunks: 2, Locked: true, Name: []byte("nvname")}}},
		},
		{
			name:      "nv_read",
			cmd:       &agentv1.Command{Op: &agentv1.Command_NvRead{NvRead: &agentv1.NVReadRequest{Index: 0x01C90000}}},
			wantCalls: []string{"NVRead(0x1c90000)"},
			want: &agentv1.Result{Op: &agentv1.Result_NvRead{NvRead: &agentv1.NVReadResult{
				Data: []byte("data"), Attributes: 0x2000, Size: 4, Name: []byte("nvname")}}},
		},
		{
			name:      "evict unspecified auth means owner",
			cmd:       &agentv1.Command{Op: &agentv1.Command_Evict{Evict: &agentv1.EvictRequest{Handle: 0x81020000}}},
			wantCalls: []string{"Evict(0x81020000 owner)"},
			want:      &agentv1.Result{Op: &agentv1.Result_Evict{Evict: &agentv1.EvictResult{Existed: true}}},
		},
		{
			name: "evict platform",
			cmd: &agentv1.Command{Op: &agentv1.Command_Evict{Evict: &agentv1.EvictRequest{
				Handle: 0x81800000, Auth: agentv1.Hierarchy_HIERARCHY_PLATFORM}}},
			wantCalls: []string{"Evict(0x81800000 platform)"},
			want:      &agentv1.Result{Op: &agentv1.Result_Evict{Evict: &agentv1.EvictResult{Existed: true}}},
		},
		{
			name: "nv_undefine",
			cmd: &agentv1.Command{Op: &agentv1.Command_NvUndefine{NvUndefine: &agentv1.NVUndefineRequest{
				Index: 0x01C90000, Auth: agentv1.Hierarchy_HIERARCHY_OWNER}}},
			wantCalls: []string{"NVUndefine(0x1c90000 owner)"},
			want:      &agentv1.Result{Op: &agentv1.Result_NvUndefine{NvUndefine: &agentv1.NVUndefineResult{}}},
		},
		{
			name: "finish passed",
			cmd:  &agentv1.Command{Op: &agentv1.Command_Finish{Finish: &agentv1.FinishRequest{Passed: true}}},
			want: &agentv1.Result{Op: &agentv1.Result_Finish{Finish: &agentv1.FinishResult{ExitCode: 0}}},
		},
		{
			name: "finish failed",
			cmd:  &agentv1.Command{Op: &agentv1.Command_Finish{Finish: &agentv1.FinishRequest{Code: "EK_UNTRUSTED"}}},
			want: &agentv1.Result{Op: &agentv1.Result_Finish{Finish: &agentv1.FinishResult{ExitCode: 3}}},
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeTPM{}
			d := newTestDispatcher(t, f)
			tc.cmd.Id = uint64(100 + i)
			got := d.execute(tc.cmd)
			tc.want.Id = uint64(100 + i)
			if !proto.Equal(got, tc.want) {
				t.Errorf("result:\n got %v\nwant %v", got, tc.want)
			}
			if fmt.Sprint(f.calls) != fmt.Sprint(tc.wantCalls) {
				t.Errorf("TPM calls = %q, want %q", f.calls, tc.wantCalls)
			}
		})
	}
}

func TestDispatchErrorMapping(t *testing.T) {
	info := &agentv1.Command{Id: 9, Op: &agentv1.Command_Info{Info: &agentv1.InfoRequest{}}}
	tests := []struct {
		name   string
		err    error
		code   agentv1.ErrorCode
		tpmRC  uint32
		inText string
	}{
		{"handle occupied", fmt.Errorf("creating: %w", tpm.ErrHandleOccupied), agentv1.ErrorCode_ERROR_CODE_HANDLE_OCCUPIED, 0, "handle occupied"},
		{"not found", fmt.Errorf("reading: %w", tpm.ErrNotFound), agentv1.ErrorCode_ERROR_CODE_NOT_FOUND, 0, "not found"},
		{"nv too large", fmt.Errorf("writing: %w", tpm.ErrNVTooLarge), agentv1.ErrorCode_ERROR_CODE_NV_TOO_LARGE, 0, "larger"},
		{"wrong hierarchy", fmt.Errorf("x: %w", tpm.ErrWrongHierarchy), agentv1.ErrorCode_ERROR_CODE_WRONG_HIERARCHY, 0, "wrong hierarchy"},
		{"activation failed with rc", fmt.Errorf("x: %w: %w", tpm.ErrActivationFailed, tpm2.TPMRCIntegrity),
			agentv1.ErrorCode_ERROR_CODE_ACTIVATION_FAILED, uint32(tpm2.TPMRCIntegrity), "activation"},
		{"nv locked with rc", fmt.Errorf("x: %w: %w", tpm.ErrNVLocked, tpm2.TPMRCNVLocked),
			agentv1.ErrorCode_ERROR_CODE_NV_LOCKED, uint32(tpm2.TPMRCNVLocked), "write-locked"},
		{"tpm invalid argument", fmt.Errorf("template: %w", tpm.ErrInvalidArgument), agentv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, 0, "template"},
		{"lockout", fmt.Errorf("signing: %w", tpm2.TPMRCLockout), agentv1.ErrorCode_ERROR_CODE_TPM_LOCKOUT, uint32(tpm2.TPMRCLockout), "signing"},
		{"lockout during activation", fmt.Errorf("x: %w: %w", tpm.ErrActivationFailed, tpm2.TPMRCLockout),
			agentv1.ErrorCode_ERROR_CODE_TPM_LOCKOUT, uint32(tpm2.TPMRCLockout), "activation"},
		{"raw tpm response code", fmt.Errorf("x: %w", tpm2.TPMRCFailure), agentv1.ErrorCode_ERROR_CODE_TPM, uint32(tpm2.TPMRCFailure), "x:"},
		{"transport failure", errors.New("write /dev/tpmrm0: broken pipe"), agentv1.ErrorCode_ERROR_CODE_TPM, 0, "broken pipe"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newTestDispatcher(t, &fakeTPM{err: tc.err})
			got := d.execute(info)
			want := &agentv1.Error{Code: tc.code, TpmRc: tc.tpmRC}
			if got.GetId() != 9 || got.GetOp() != nil || got.GetError().GetCode() != want.Code || got.GetError().GetTpmRc() != want.TpmRc {
				t.Fatalf("result = %v, want id 9 and error %v", got, want)
			}
			if !strings.Contains(got.GetError().GetMessage(), tc.inText) {
				t.Errorf("message %q does not contain %q", got.GetError().GetMessage(), tc.inText)
			}
		})
	}
}

// TestDispatchCertifyUnsupported: a TPM without TPM2_Certify (the fake) answers certify with
// UNKNOWN_COMMAND, having been asked nothing.
func TestDispatchCertifyUnsupported(t *testing.T) {
	f := &fakeTPM{}
	d := newTestDispatcher(t, f, "/x")
	got := d.execute(&agentv1.Command{Id: 3, Op: &agentv1.Command_Certify{Certify: &agentv1.CertifyRequest{ObjectHandle: 0x81020000, SignHandle: 0x81020001}}})
	if got.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_UNKNOWN_COMMAND || len(f.calls) != 0 {
		t.Fatalf("result %v, calls %v; want UNKNOWN_COMMAND and no call", got, f.calls)
	}
}

func TestDispatchInvalidRequests(t *testing.T) {
	subj := subjectDER(t, "unit")
	d32 := make([]byte, 32)
	ecc := agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256
	idev := agentv1.KeyRole_KEY_ROLE_IDEVID
	owner := agentv1.Hierarchy_HIERARCHY_OWNER
	sha256 := agentv1.HashAlgorithm_HASH_ALGORITHM_SHA256
	csr := func(exts ...*agentv1.Extension) *agentv1.Command {
		return &agentv1.Command{Op: &agentv1.Command_BuildCsr{BuildCsr: &agentv1.BuildCSRRequest{KeyHandle: 0x81020000, Subject: subj, Extensions: exts}}}
	}
	tests := []struct {
		name string
		cmd  *agentv1.Command
	}{
		{"read_ek unspecified algorithm", &agentv1.Command{Op: &agentv1.Command_ReadEk{ReadEk: &agentv1.ReadEKRequest{
			Algorithms: []agentv1.KeyAlgorithm{ecc, agentv1.KeyAlgorithm_KEY_ALGORITHM_UNSPECIFIED}}}}},
		{"read_ek unknown algorithm", &agentv1.Command{Op: &agentv1.Command_ReadEk{ReadEk: &agentv1.ReadEKRequest{
			Algorithms: []agentv1.KeyAlgorithm{7}}}}},
		{"create_key unspecified role", &agentv1.Command{Op: &agentv1.Command_CreateKey{CreateKey: &agentv1.CreateKeyRequest{
			Algorithm: ecc, Handle: 0x81020000}}}},
		{"create_key unspecified algorithm without template", &agentv1.Command{Op: &agentv1.Command_CreateKey{CreateKey: &agentv1.CreateKeyRequest{
			Role: idev, Handle: 0x81020000}}}},
		{"create_key unknown algorithm with template", &agentv1.Command{Op: &agentv1.Command_CreateKey{CreateKey: &agentv1.CreateKeyRequest{
			Role: idev, Algorithm: 9, Handle: 0x81020000, Template: []byte{1}}}}},
		{"create_key handle zero", &agentv1.Command{Op: &agentv1.Command_CreateKey{CreateKey: &agentv1.CreateKeyRequest{
			Role: idev, Algorithm: ecc}}}},
		{"create_key platform handle", &agentv1.Command{Op: &agentv1.Command_CreateKey{CreateKey: &agentv1.CreateKeyRequest{
			Role: idev, Algorithm: ecc, Handle: 0x81800000}}}},
		{"create_key transient srk handle", &agentv1.Command{Op: &agentv1.Command_CreateKey{CreateKey: &agentv1.CreateKeyRequest{
			Role: agentv1.KeyRole_KEY_ROLE_LDEVID, Algorithm: ecc, Handle: 0x81000002, SrkHandle: 0x80000001}}}},
		{"activate_credential nv handle", &agentv1.Command{Op: &agentv1.Command_ActivateCredential{ActivateCredential: &agentv1.ActivateCredentialRequest{
			KeyHandle: 0x01C00002, EkAlgorithm: ecc, CredentialBlob: []byte{1}, EncryptedSecret: []byte{1}}}}},
		{"activate_credential unspecified ek", &agentv1.Command{Op: &agentv1.Command_ActivateCredential{ActivateCredential: &agentv1.ActivateCredentialRequest{
			KeyHandle: 0x81020000, CredentialBlob: []byte{1}, EncryptedSecret: []byte{1}}}}},
		{"activate_credential empty blob", &agentv1.Command{Op: &agentv1.Command_ActivateCredential{ActivateCredential: &agentv1.ActivateCredentialRequest{
			KeyHandle: 0x81020000, EkAlgorithm: ecc, EncryptedSecret: []byte{1}}}}},
		{"build_csr bad subject", &agentv1.Command{Op: &agentv1.Command_BuildCsr{BuildCsr: &agentv1.BuildCSRRequest{
			KeyHandle: 0x81020000, Subject: []byte{0x30, 0x05}}}}},
		{"build_csr subject with trailing bytes", &agentv1.Command{Op: &agentv1.Command_BuildCsr{BuildCsr: &agentv1.BuildCSRRequest{
			KeyHandle: 0x81020000, Subject: append(append([]byte{}, subj...), 0)}}}},
		{"build_csr unknown scheme", &agentv1.Command{Op: &agentv1.Command_BuildCsr{BuildCsr: &agentv1.BuildCSRRequest{
			KeyHandle: 0x81020000, Subject: subj, Scheme: 17}}}},
		{"build_csr OID one arc", csr(&agentv1.Extension{Oid: "2", Value: []byte{5, 0}})},
		{"build_csr OID not numeric", csr(&agentv1.Extension{Oid: "2.5.x", Value: []byte{5, 0}})},
		{"build_csr OID empty arc", csr(&agentv1.Extension{Oid: "2..5", Value: []byte{5, 0}})},
		{"build_csr OID first arc 3", csr(&agentv1.Extension{Oid: "3.5", Value: []byte{5, 0}})},
		{"build_csr OID leading zero", csr(&agentv1.Extension{Oid: "2.05.29", Value: []byte{5, 0}})},
		{"build_csr OID negative", csr(&agentv1.Extension{Oid: "2.-5.29", Value: []byte{5, 0}})},
		{"build_csr duplicate extension", csr(&agentv1.Extension{Oid: "2.5.29.17", Value: []byte{5, 0}}, &agentv1.Extension{Oid: "2.5.29.17", Value: []byte{5, 0}})},
		{"build_csr extension value not DER", csr(&agentv1.Extension{Oid: "2.5.29.17", Value: []byte{0x30, 0x09, 1}})},
		{"build_csr empty extension value", csr(&agentv1.Extension{Oid: "2.5.29.17"})},
		{"sign unspecified hash", &agentv1.Command{Op: &agentv1.Command_Sign{Sign: &agentv1.SignRequest{KeyHandle: 0x81020000, Digest: d32}}}},
		{"sign digest too short", &agentv1.Command{Op: &agentv1.Command_Sign{Sign: &agentv1.SignRequest{KeyHandle: 0x81020000, Digest: d32[:31], Hash: sha256}}}},
		{"sign sha384 with 32-byte digest", &agentv1.Command{Op: &agentv1.Command_Sign{Sign: &agentv1.SignRequest{
			KeyHandle: 0x81020000, Digest: d32, Hash: agentv1.HashAlgorithm_HASH_ALGORITHM_SHA384}}}},
		{"sign unknown scheme", &agentv1.Command{Op: &agentv1.Command_Sign{Sign: &agentv1.SignRequest{KeyHandle: 0x81020000, Digest: d32, Hash: sha256, Scheme: 4}}}},
		{"sign handle out of range", &agentv1.Command{Op: &agentv1.Command_Sign{Sign: &agentv1.SignRequest{KeyHandle: 0x82000000, Digest: d32, Hash: sha256}}}},
		{"nv_write index out of range", &agentv1.Command{Op: &agentv1.Command_NvWrite{NvWrite: &agentv1.NVWriteRequest{Index: 0x02000000, Auth: owner, Data: []byte{1}}}}},
		{"nv_write unspecified auth", &agentv1.Command{Op: &agentv1.Command_NvWrite{NvWrite: &agentv1.NVWriteRequest{Index: 0x01500000, Data: []byte{1}}}}},
		{"nv_write unknown auth", &agentv1.Command{Op: &agentv1.Command_NvWrite{NvWrite: &agentv1.NVWriteRequest{Index: 0x01500000, Auth: 8, Data: []byte{1}}}}},
		{"nv_write neither data nor size", &agentv1.Command{Op: &agentv1.Command_NvWrite{NvWrite: &agentv1.NVWriteRequest{Index: 0x01500000, Auth: owner}}}},
		{"nv_read index zero", &agentv1.Command{Op: &agentv1.Command_NvRead{NvRead: &agentv1.NVReadRequest{}}}},
		{"evict transient handle", &agentv1.Command{Op: &agentv1.Command_Evict{Evict: &agentv1.EvictRequest{Handle: 0x80000000}}}},
		{"evict unknown auth", &agentv1.Command{Op: &agentv1.Command_Evict{Evict: &agentv1.EvictRequest{Handle: 0x81020000, Auth: 5}}}},
		{"nv_undefine unspecified auth", &agentv1.Command{Op: &agentv1.Command_NvUndefine{NvUndefine: &agentv1.NVUndefineRequest{Index: 0x01500000}}}},
		{"nv_undefine persistent handle", &agentv1.Command{Op: &agentv1.Command_NvUndefine{NvUndefine: &agentv1.NVUndefineRequest{Index: 0x81000000, Auth: owner}}}},
		{"certify sign handle transient", &agentv1.Command{Op: &agentv1.Command_Certify{Certify: &agentv1.CertifyRequest{ObjectHandle: 0x81020000, SignHandle: 0x80000000}}}},
		{"certify object handle nv", &agentv1.Command{Op: &agentv1.Command_Certify{Certify: &agentv1.CertifyRequest{ObjectHandle: 0x01C00002, SignHandle: 0x81020001}}}},
		{"certify qualifying data too long", &agentv1.Command{Op: &agentv1.Command_Certify{Certify: &agentv1.CertifyRequest{
			ObjectHandle: 0x81020000, SignHandle: 0x81020001, QualifyingData: make([]byte, 65)}}}},
		{"write_file mode beyond 0777", &agentv1.Command{Op: &agentv1.Command_WriteFile{WriteFile: &agentv1.WriteFileRequest{Path: "/x/y", Mode: 0o4755}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeTPM{}
			d := newTestDispatcher(t, f, "/x")
			tc.cmd.Id = 5
			got := d.execute(tc.cmd)
			if got.GetId() != 5 || got.GetOp() != nil || got.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
				t.Fatalf("result = %v, want id 5 and INVALID_ARGUMENT", got)
			}
			if len(f.calls) != 0 {
				t.Errorf("TPM was called for an invalid request: %q", f.calls)
			}
		})
	}
}

func TestDispatchTemplatePassedThrough(t *testing.T) {
	f := &fakeTPM{err: fmt.Errorf("parsing template: %w", tpm.ErrInvalidArgument)}
	d := newTestDispatcher(t, f)
	got := d.execute(&agentv1.Command{Id: 3, Op: &agentv1.Command_CreateKey{CreateKey: &agentv1.CreateKeyRequest{
		Role: agentv1.KeyRole_KEY_ROLE_IDEVID, Handle: 0x81020000, Template: []byte{0xff, 0xfe}}}})
	if got.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Fatalf("result = %v, want INVALID_ARGUMENT", got)
	}
	if want := []string{"CreateKey(1 Algorithm(0) 0x81020000 0x0 fffe)"}; fmt.Sprint(f.calls) != fmt.Sprint(want) {
		t.Errorf("TPM calls = %q, want %q", f.calls, want)
	}
}

func TestDispatchUnknownCommand(t *testing.T) {
	f := &fakeTPM{}
	d := newTestDispatcher(t, f)
	got := d.execute(&agentv1.Command{Id: 77})
	if got.GetId() != 77 || got.GetOp() != nil || got.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_UNKNOWN_COMMAND {
		t.Fatalf("result = %v, want id 77 and UNKNOWN_COMMAND", got)
	}
	if len(f.calls) != 0 {
		t.Errorf("TPM calls = %q, want none", f.calls)
	}
}

func TestDispatchOversizedResult(t *testing.T) {
	f := &fakeTPM{chain: [][]byte{bytes.Repeat([]byte{'a'}, 40<<10), bytes.Repeat([]byte{'b'}, 40<<10)}}
	d := newTestDispatcher(t, f)
	got := d.execute(&agentv1.Command{Id: 4, Op: &agentv1.Command_ReadEk{ReadEk: &agentv1.ReadEKRequest{}}})
	if got.GetId() != 4 || got.GetOp() != nil || got.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_MESSAGE_TOO_LARGE {
		t.Fatalf("result = %v, want MESSAGE_TOO_LARGE", got)
	}
	// Just under the bound passes.
	f.chain = [][]byte{bytes.Repeat([]byte{'a'}, 60<<10)}
	if got := d.execute(&agentv1.Command{Id: 5, Op: &agentv1.Command_ReadEk{ReadEk: &agentv1.ReadEKRequest{}}}); got.GetError() != nil {
		t.Fatalf("result under the bound failed: %v", got.GetError())
	} else if n := messageSize(got); n > d.maxBytes {
		t.Fatalf("result of %d bytes exceeds the bound %d", n, d.maxBytes)
	}
}

func TestDispatchPanicBecomesInternal(t *testing.T) {
	f := &fakeTPM{panicMsg: "boom"}
	d := newTestDispatcher(t, f)
	got := d.execute(&agentv1.Command{Id: 6, Op: &agentv1.Command_NvRead{NvRead: &agentv1.NVReadRequest{Index: 0x01C90000}}})
	if got.GetId() != 6 || got.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_INTERNAL || !strings.Contains(got.GetError().GetMessage(), "boom") {
		t.Fatalf("result = %v, want INTERNAL mentioning the panic", got)
	}
	// The dispatcher keeps working afterwards.
	f.panicMsg = ""
	if got := d.execute(&agentv1.Command{Id: 7, Op: &agentv1.Command_NvRead{NvRead: &agentv1.NVReadRequest{Index: 0x01C90000}}}); got.GetError() != nil {
		t.Fatalf("command after panic failed: %v", got.GetError())
	}
}

func TestParseOID(t *testing.T) {
	tests := []struct {
		in   string
		want asn1.ObjectIdentifier
	}{
		{"2.5.29.17", asn1.ObjectIdentifier{2, 5, 29, 17}},
		{"1.3.6.1.5.5.7.8.4", asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 8, 4}},
		{"2.999.0", asn1.ObjectIdentifier{2, 999, 0}},
		{"0.39", asn1.ObjectIdentifier{0, 39}},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseOID(tc.in)
			if err != nil || !got.Equal(tc.want) {
				t.Fatalf("parseOID(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
	for _, bad := range []string{"", "1", "1.40", "0.40", "3.1", "1..2", "1.2.", "+1.2", "1.2.99999999999"} {
		if _, err := parseOID(bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("parseOID(%q) error = %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func TestErrorMessageBounded(t *testing.T) {
	d := newTestDispatcher(t, &fakeTPM{}, "/x")
	long := "/" + strings.Repeat("é", 40<<10) // a path of 80 KiB outside the roots
	res := d.execute(&agentv1.Command{Id: 1, Op: &agentv1.Command_ReadFile{ReadFile: &agentv1.ReadFileRequest{Path: long}}})
	msg := res.GetError().GetMessage()
	if res.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED || len(msg) > maxErrorMessage+len("…") || !utf8.ValidString(msg) {
		t.Fatalf("error = %v (message of %d bytes), want PATH_NOT_ALLOWED with a short valid message", res.GetError().GetCode(), len(msg))
	}
	if r := errorResult(1, agentv1.ErrorCode_ERROR_CODE_TPM, "bad \xff byte", 0); r.GetError().GetMessage() != "bad \uFFFD byte" {
		t.Errorf("invalid UTF-8 message = %q", r.GetError().GetMessage())
	}
}
