package workflow_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"golang.org/x/sys/unix"

	"github.com/devid-station/devid/fixture/devpki"
	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/ekcert"
	"github.com/devid-station/devid/station/workflow"
)

// softUnit is an instant fake of an agent and its TPM, in software: it answers every command
// the workflow sends with answers that pass the station's checks (its EK certificate is issued
// by the test's TPM vendor). It exists to measure the station alone.
type softUnit struct {
	hello *agentv1.Hello
	ek    *ecdh.PrivateKey
	ekPub []byte
	cert  []byte
	keys  map[uint32]*ecdsa.PrivateKey
	nv    map[uint32][]byte
	files map[string][]byte
	mu    sync.Mutex
	// calls are the commands Do answered, for replay (recorded while not nil: made with room
	// for a unit's commands, so that recording does not allocate); fresh says the call made its key.
	calls []softCall
}

// softCalls is room for the commands of a unit's session.
const softCalls = 64

type softCall struct {
	cmd   *agentv1.Command
	fresh bool
}

func eccPublic(tmpl tpm2.TPMTPublic, x, y []byte) []byte {
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y},
	})
	return tpm2.Marshal(tmpl)
}

func devIDTemplate() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, SignEncrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			CurveID: tpm2.TPMECCNistP256, Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
		}),
	}
}

func newSoftUnit(tb testing.TB, serial string, vendor *devpki.CA) *softUnit {
	tb.Helper()
	ek, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	raw := ek.PublicKey().Bytes() // 0x04 || X || Y
	x, y := raw[1:33], raw[33:]
	pub := &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}
	cert, err := vendor.IssueEKCert(pub, ekcert.TPMIdentity{Manufacturer: "id:534F4654", Model: "soft", Version: "id:00010000"}, devpki.EKCertOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	return &softUnit{
		hello: &agentv1.Hello{ProtocolVersion: 1, HardwareSerial: serial, BootId: "boot", FileRoots: []string{"/etc"}},
		ek:    ek, ekPub: eccPublic(tpm2.ECCEKTemplate, x, y), cert: cert,
		keys: map[uint32]*ecdsa.PrivateKey{}, nv: map[uint32][]byte{}, files: map[string][]byte{},
		calls: make([]softCall, 0, softCalls),
	}
}

func (s *softUnit) Hello() *agentv1.Hello { return s.hello }

func (s *softUnit) Peer() string { return "soft" }

func (s *softUnit) Admit(context.Context) error { return nil }

func (s *softUnit) Do(_ context.Context, cmd *agentv1.Command) (*agentv1.Result, error) {
	defer fakeWork()()
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &agentv1.Result{Id: cmd.GetId()}
	var err error
	if s.calls != nil { // recording
		c := softCall{cmd: cmd}
		if create, ok := cmd.GetOp().(*agentv1.Command_CreateKey); ok {
			c.fresh = s.keys[create.CreateKey.GetHandle()] == nil
		}
		s.calls = append(s.calls, c)
	}
	switch op := cmd.GetOp().(type) {
	case *agentv1.Command_Info:
		r.Op = &agentv1.Result_Info{Info: &agentv1.InfoResult{ManufacturerId: "SOFT", NvBufferMax: 1024}}
	case *agentv1.Command_ReadEk:
		r.Op = &agentv1.Result_ReadEk{ReadEk: &agentv1.ReadEKResult{Keys: []*agentv1.EndorsementKey{{
			Algorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, PublicArea: s.ekPub, Certificate: s.cert,
		}}}}
	case *agentv1.Command_CreateKey:
		h := op.CreateKey.GetHandle()
		k := s.keys[h]
		existed := k != nil
		if k == nil {
			if k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
				return nil, err
			}
			s.keys[h] = k
		}
		pub := eccPublic(devIDTemplate(), k.X.FillBytes(make([]byte, 32)), k.Y.FillBytes(make([]byte, 32)))
		sum := sha256.Sum256(pub)
		r.Op = &agentv1.Result_CreateKey{CreateKey: &agentv1.CreateKeyResult{PublicArea: pub, Name: append([]byte{0, 0x0b}, sum[:]...), Existed: existed, Handle: h}}
	case *agentv1.Command_ActivateCredential:
		k := s.keys[op.ActivateCredential.GetKeyHandle()]
		pub := eccPublic(devIDTemplate(), k.X.FillBytes(make([]byte, 32)), k.Y.FillBytes(make([]byte, 32)))
		sum := sha256.Sum256(pub)
		var secret []byte
		secret, err = s.activate(append([]byte{0, 0x0b}, sum[:]...), op.ActivateCredential.GetCredentialBlob(), op.ActivateCredential.GetEncryptedSecret())
		r.Op = &agentv1.Result_ActivateCredential{ActivateCredential: &agentv1.ActivateCredentialResult{Secret: secret}}
	case *agentv1.Command_BuildCsr:
		req := op.BuildCsr
		var exts []pkix.Extension
		for _, e := range req.GetExtensions() {
			oid, perr := parseOID(e.GetOid())
			if perr != nil {
				return nil, perr
			}
			exts = append(exts, pkix.Extension{Id: oid, Critical: e.GetCritical(), Value: e.GetValue()})
		}
		var der []byte
		der, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{RawSubject: req.GetSubject(), ExtraExtensions: exts}, s.keys[req.GetKeyHandle()])
		r.Op = &agentv1.Result_BuildCsr{BuildCsr: &agentv1.BuildCSRResult{Csr: der}}
	case *agentv1.Command_Sign:
		var sig []byte
		sig, err = ecdsa.SignASN1(rand.Reader, s.keys[op.Sign.GetKeyHandle()], op.Sign.GetDigest())
		r.Op = &agentv1.Result_Sign{Sign: &agentv1.SignResult{Signature: sig}}
	case *agentv1.Command_NvWrite:
		if old, ok := s.nv[op.NvWrite.GetIndex()]; ok && !bytes.Equal(old, op.NvWrite.GetData()) {
			r.Error = &agentv1.Error{Code: agentv1.ErrorCode_ERROR_CODE_NV_LOCKED}
			return r, nil
		}
		s.nv[op.NvWrite.GetIndex()] = op.NvWrite.GetData()
		r.Op = &agentv1.Result_NvWrite{NvWrite: &agentv1.NVWriteResult{Locked: true}}
	case *agentv1.Command_NvRead:
		r.Op = &agentv1.Result_NvRead{NvRead: &agentv1.NVReadResult{Data: s.nv[op.NvRead.GetIndex()], Attributes: 1 << 11}}
	case *agentv1.Command_WriteFile:
		s.files[op.WriteFile.GetPath()] = op.WriteFile.GetContent()
		sum := sha256.Sum256(op.WriteFile.GetContent())
		r.Op = &agentv1.Result_WriteFile{WriteFile: &agentv1.WriteFileResult{Sha256: sum[:]}}
	case *agentv1.Command_ReadFile:
		r.Op = &agentv1.Result_ReadFile{ReadFile: &agentv1.ReadFileResult{Content: s.files[op.ReadFile.GetPath()]}}
	case *agentv1.Command_Finish:
		r.Op = &agentv1.Result_Finish{Finish: &agentv1.FinishResult{}}
	default:
		return nil, fmt.Errorf("soft unit: unexpected command %T", op)
	}
	return r, err
}

// replay answers every call Do answered again, in order, each as it was answered (a key made
// by a call is made again, then the first one put back), and does not record them: what the
// unit's fakes cost, measured alone.
func (s *softUnit) replay() {
	calls := s.calls
	s.calls = nil
	for _, c := range calls {
		if !c.fresh {
			_, _ = s.Do(context.Background(), c.cmd)
			continue
		}
		h := c.cmd.GetCreateKey().GetHandle()
		k := s.keys[h]
		delete(s.keys, h)
		_, _ = s.Do(context.Background(), c.cmd)
		s.keys[h] = k
	}
	s.calls = calls[:0]
}

// activate is TPM2_ActivateCredential in software for an ECC P-256 EK (TPM 2.0 Part 1, 24).
func (s *softUnit) activate(name, blob, encSecret []byte) ([]byte, error) {
	point, err := tpm2.Unmarshal[tpm2.TPMSECCPoint](encSecret)
	if err != nil {
		return nil, err
	}
	eph, err := ecdh.P256().NewPublicKey(append(append([]byte{4}, point.X.Buffer...), point.Y.Buffer...))
	if err != nil {
		return nil, err
	}
	z, err := s.ek.ECDH(eph)
	if err != nil {
		return nil, err
	}
	ekX := s.ek.PublicKey().Bytes()[1:33]
	seed := tpm2.KDFe(crypto.SHA256, z, "IDENTITY", point.X.Buffer, ekX, 256)
	if len(blob) < 2 {
		return nil, errors.New("short credential")
	}
	n := int(binary.BigEndian.Uint16(blob))
	integrity, encIdentity := blob[2:2+n], blob[2+n:]
	mac := hmac.New(sha256.New, tpm2.KDFa(crypto.SHA256, seed, "INTEGRITY", nil, nil, 256))
	mac.Write(encIdentity)
	mac.Write(name)
	if !hmac.Equal(mac.Sum(nil), integrity) {
		return nil, errors.New("credential integrity check failed")
	}
	block, err := aes.NewCipher(tpm2.KDFa(crypto.SHA256, seed, "STORAGE", name, nil, 128))
	if err != nil {
		return nil, err
	}
	plain := make([]byte, len(encIdentity))
	cipher.NewCFBDecrypter(block, make([]byte, aes.BlockSize)).XORKeyStream(plain, encIdentity)
	digest, err := tpm2.Unmarshal[tpm2.TPM2BDigest](plain)
	if err != nil {
		return nil, err
	}
	return digest.Buffer, nil
}

func parseOID(s string) (asn1.ObjectIdentifier, error) {
	var oid asn1.ObjectIdentifier
	var n int
	for _, part := range bytes.Split([]byte(s), []byte(".")) {
		if _, err := fmt.Sscanf(string(part), "%d", &n); err != nil {
			return nil, err
		}
		oid = append(oid, n)
	}
	return oid, nil
}

// instantCA is an Issuer that signs in process with a dev issuing CA.
type instantCA struct {
	ca    *devpki.CA
	roots *x509.CertPool
	mu    sync.Mutex
	reqs  []workflow.EnrollRequest // the requests Enroll answered, for replay (while not nil)
}

// replay answers every request Enroll answered again, and does not record them.
func (c *instantCA) replay() {
	c.mu.Lock()
	reqs := c.reqs
	c.reqs = nil
	c.mu.Unlock()
	for _, r := range reqs {
		_, _ = c.Enroll(context.Background(), r)
	}
	c.mu.Lock()
	c.reqs = reqs[:0]
	c.mu.Unlock()
}

func (c *instantCA) Roots() *x509.CertPool { return c.roots }

func (c *instantCA) Enroll(_ context.Context, req workflow.EnrollRequest) (*workflow.Issued, error) {
	defer fakeWork()()
	c.mu.Lock()
	if c.reqs != nil {
		c.reqs = append(c.reqs, req)
	}
	c.mu.Unlock()
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, err
	}
	leaf, err := c.ca.Issue(&x509.Certificate{NotBefore: time.Now().UTC().Truncate(time.Second), RawSubject: csr.RawSubject, ExtraExtensions: csr.Extensions, KeyUsage: x509.KeyUsageDigitalSignature}, csr.PublicKey)
	if err != nil {
		return nil, err
	}
	return &workflow.Issued{Leaf: leaf, Chain: c.ca.Chain()}, nil
}

// fakeCPU adds up the CPU time the fakes spend, so the benchmark can report the station's own.
var fakeCPU atomic.Int64

// fakeWork measures the calling goroutine's CPU time until the returned func is called: the
// goroutine is locked to its thread meanwhile, so the thread's CPU clock is its own.
func fakeWork() func() {
	runtime.LockOSThread()
	start := threadCPU()
	return func() {
		fakeCPU.Add(int64(threadCPU() - start))
		runtime.UnlockOSThread()
	}
}

func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		panic(err)
	}
	return time.Duration(ts.Nano())
}
