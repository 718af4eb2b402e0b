package agent

import (
	"crypto"
	"crypto/x509/pkix"
	"fmt"

	"github.com/devid-station/devid/device-agent/tpm"
)

// fakeTPM records calls and answers canned values; err (when set) is returned by every TPM
// operation, and panicMsg (when set) makes every operation panic.
type fakeTPM struct {
	err      error
	panicMsg string
	chain    [][]byte
	calls    []string
}

var _ TPM = (*fakeTPM)(nil)
var _ TPM = (*tpm.TPM)(nil)
var _ Certifier = (*tpm.TPM)(nil)

func (f *fakeTPM) record(format string, args ...any) error {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
	if f.panicMsg != "" {
		panic(f.panicMsg)
	}
	return f.err
}

func (f *fakeTPM) Description() string { return "fake" }

func (f *fakeTPM) Info() (*tpm.Info, error) {
	if err := f.record("Info()"); err != nil {
		return nil, err
	}
	return &tpm.Info{
		Manufacturer: 0x49465800, ManufacturerID: "IFX", VendorString: "SLB9672", FirmwareVersion: 0x0010_0002_0000_0003,
		Family: "2.0", SpecLevel: 0, SpecRevision: 159, SpecYear: 2021, SpecDayOfYear: 300, NVBufferMax: 1024,
		VendorTPMType: 1, StartupClear: 0x8000000F, PersistentHandles: []uint32{0x81010001}, NVIndices: []uint32{0x01C00002},
	}, nil
}

func (f *fakeTPM) ReadEK(alg tpm.Algorithm) (*tpm.EK, error) {
	if err := f.record("ReadEK(%v)", alg); err != nil {
		return nil, err
	}
	return &tpm.EK{Algorithm: alg, Public: []byte{'p', byte(alg)}, Persisted: alg == tpm.RSA2048, Handle: 0x81010000 + uint32(alg),
		Certificate: []byte{'c', byte(alg)}, CertificateIndex: 0x01C00000 + uint32(alg), CertificateRawSize: 100 + uint32(alg)}, nil
}

func (f *fakeTPM) ReadEKChain() ([][]byte, error) {
	if err := f.record("ReadEKChain()"); err != nil {
		return nil, err
	}
	return f.chain, nil
}

func (f *fakeTPM) CreateKey(req tpm.KeyRequest) (*tpm.Key, error) {
	if err := f.record("CreateKey(%d %v %#x %#x %x)", req.Role, req.Algorithm, req.Handle, req.SRKHandle, req.Template); err != nil {
		return nil, err
	}
	return &tpm.Key{Public: []byte("pub"), Name: []byte("name"), Existed: true, SRKCreated: req.Role == tpm.LDevID, Handle: req.Handle}, nil
}

func (f *fakeTPM) ActivateCredential(keyHandle uint32, ekAlg tpm.Algorithm, blob, secret []byte) ([]byte, error) {
	if err := f.record("ActivateCredential(%#x %v %x %x)", keyHandle, ekAlg, blob, secret); err != nil {
		return nil, err
	}
	return []byte("secret"), nil
}

func (f *fakeTPM) Sign(handle uint32, digest []byte, hash crypto.Hash, scheme tpm.Scheme) ([]byte, error) {
	if err := f.record("Sign(%#x %d %v %d)", handle, len(digest), hash, scheme); err != nil {
		return nil, err
	}
	return []byte("sig"), nil
}

func (f *fakeTPM) BuildCSR(handle uint32, subject []byte, exts []pkix.Extension, scheme tpm.Scheme) ([]byte, error) {
	if err := f.record("BuildCSR(%#x %x %v %d)", handle, subject, exts, scheme); err != nil {
		return nil, err
	}
	return []byte("csr"), nil
}

func (f *fakeTPM) NVWrite(req tpm.NVWriteRequest) (*tpm.NVWriteResult, error) {
	if err := f.record("NVWrite(%#x %v %#x %d %x %v)", req.Index, req.Auth, req.Attributes, req.Size, req.Data, req.WriteLock); err != nil {
		return nil, err
	}
	return &tpm.NVWriteResult{Defined: true, Chunks: 2, Locked: req.WriteLock, Name: []byte("nvname")}, nil
}

func (f *fakeTPM) NVRead(index uint32) (*tpm.NVData, error) {
	if err := f.record("NVRead(%#x)", index); err != nil {
		return nil, err
	}
	return &tpm.NVData{Data: []byte("data"), Attributes: 0x2000, Size: 4, Name: []byte("nvname")}, nil
}

func (f *fakeTPM) Evict(handle uint32, auth tpm.Hierarchy) (bool, error) {
	if err := f.record("Evict(%#x %v)", handle, auth); err != nil {
		return false, err
	}
	return true, nil
}

func (f *fakeTPM) NVUndefine(index uint32, auth tpm.Hierarchy) (bool, error) {
	if err := f.record("NVUndefine(%#x %v)", index, auth); err != nil {
		return false, err
	}
	return false, nil
}
