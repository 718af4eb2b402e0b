package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devid-station/devid/device-agent/tpm"
	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/google/go-tpm/tpm2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

const (
	testKeyHandle uint32 = 0x81020000
	testNVIndex   uint32 = 0x01000010
)

// checkHello verifies the Hello of a session.
func checkHello(t *testing.T, h *agentv1.Hello, cfg Config, transport string, attempt uint32) {
	t.Helper()
	want := &agentv1.Hello{
		ProtocolVersion: 1,
		AgentVersion:    h.GetAgentVersion(),
		HardwareSerial:  "SN-TEST-0001",
		SerialSource:    "file:" + cfg.Serial.File,
		FixtureSlot:     "slot-7",
		BootId:          "6f1c3a9e-0b7d-4c52-9d2e-1a2b3c4d5e6f",
		TpmTransport:    transport,
		SessionAttempt:  attempt,
		FileRoots:       cfg.FileRoots,
	}
	if h.GetAgentVersion() == "" || !proto.Equal(h, want) {
		t.Fatalf("hello = %v\nwant    %v (with a non-empty agent version)", h, want)
	}
}

// wantOK fails the test when res carries an error.
func wantOK(t *testing.T, what string, res *agentv1.Result) {
	t.Helper()
	if res.GetError() != nil {
		t.Fatalf("%s failed: %v", what, res.GetError())
	}
}

func signCmd(digest []byte) *agentv1.Command {
	return &agentv1.Command{Op: &agentv1.Command_Sign{Sign: &agentv1.SignRequest{
		KeyHandle: testKeyHandle, Digest: digest, Hash: agentv1.HashAlgorithm_HASH_ALGORITHM_SHA256}}}
}

// verifySign has the agent sign a fresh nonce and verifies the signature with pub.
func verifySign(t *testing.T, s *stubSession, pub *ecdsa.PublicKey) {
	t.Helper()
	nonce := make([]byte, 32)
	rand.Read(nonce)
	digest := sha256.Sum256(nonce)
	res := s.call(t, signCmd(digest[:]))
	wantOK(t, "sign", res)
	if !ecdsa.VerifyASN1(pub, digest[:], res.GetSign().GetSignature()) {
		t.Fatal("signature over the nonce does not verify")
	}
}

func TestSessionOnSimulator(t *testing.T) {
	sim := needSim(t)
	pki := newTestPKI(t)
	st := startStation(t, pki)
	cfg := testConfig(t, st, pki.pool)
	root := t.TempDir()
	cfg.FileRoots = []string{root}
	run := startAgent(t, cfg, sim)

	s := st.next(t)
	checkHello(t, s.hello, cfg, "simulator", 1)

	// Info.
	res := s.call(t, &agentv1.Command{Op: &agentv1.Command_Info{Info: &agentv1.InfoRequest{}}})
	wantOK(t, "info", res)
	info := res.GetInfo()
	if info.GetFamily() != "2.0" || info.GetManufacturer() == 0 || info.GetNvBufferMax() == 0 {
		t.Fatalf("info = %v", info)
	}

	// IDevID key, ECC, created then found again.
	createCmd := func() *agentv1.Command {
		return &agentv1.Command{Op: &agentv1.Command_CreateKey{CreateKey: &agentv1.CreateKeyRequest{
			Role: agentv1.KeyRole_KEY_ROLE_IDEVID, Algorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, Handle: testKeyHandle}}}
	}
	res = s.call(t, createCmd())
	wantOK(t, "create_key", res)
	key := res.GetCreateKey()
	if key.GetExisted() || key.GetHandle() != testKeyHandle || len(key.GetName()) == 0 {
		t.Fatalf("create_key = %v", key)
	}
	pubAny, err := tpm.PublicKey(key.GetPublicArea())
	if err != nil {
		t.Fatalf("parsing key public area: %v", err)
	}
	pub, ok := pubAny.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("key is %T, want ECDSA", pubAny)
	}
	res = s.call(t, createCmd())
	wantOK(t, "create_key again", res)
	if !res.GetCreateKey().GetExisted() || !bytes.Equal(res.GetCreateKey().GetPublicArea(), key.GetPublicArea()) {
		t.Fatalf("second create_key = %v, want the same key reused", res.GetCreateKey())
	}
	res = s.call(t, &agentv1.Command{Op: &agentv1.Command_Info{Info: &agentv1.InfoRequest{}}})
	wantOK(t, "info", res)
	if !slices.Contains(res.GetInfo().GetPersistentHandles(), testKeyHandle) {
		t.Errorf("persistent handles %x do not list %#x", res.GetInfo().GetPersistentHandles(), testKeyHandle)
	}

	// A malformed template is refused by the TPM layer as INVALID_ARGUMENT.
	res = s.call(t, &agentv1.Command{Op: &agentv1.Command_CreateKey{CreateKey: &agentv1.CreateKeyRequest{
		Role: agentv1.KeyRole_KEY_ROLE_IDEVID, Handle: testKeyHandle + 1, Template: []byte{0x00, 0x23, 0xff}}}})
	if res.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Fatalf("create_key with a bad template = %v, want INVALID_ARGUMENT", res)
	}

	// Proof of residency: the station makes a credential for the key's Name under the EK.
	res = s.call(t, &agentv1.Command{Op: &agentv1.Command_ReadEk{ReadEk: &agentv1.ReadEKRequest{
		Algorithms: []agentv1.KeyAlgorithm{agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256}}}})
	wantOK(t, "read_ek", res)
	if len(res.GetReadEk().GetKeys()) != 1 {
		t.Fatalf("read_ek = %v, want one key", res.GetReadEk())
	}
	ekPub, err := tpm2.Unmarshal[tpm2.TPMTPublic](res.GetReadEk().GetKeys()[0].GetPublicArea())
	if err != nil {
		t.Fatalf("parsing EK public area: %v", err)
	}
	ek, err := tpm2.ImportEncapsulationKey(ekPub)
	if err != nil {
		t.Fatal(err)
	}
	activate := func(name []byte) (secret []byte, res *agentv1.Result) {
		secret = make([]byte, 32)
		rand.Read(secret)
		blob, encSecret, err := tpm2.CreateCredential(rand.Reader, ek, name, secret)
		if err != nil {
			t.Fatal(err)
		}
		return secret, s.call(t, &agentv1.Command{Op: &agentv1.Command_ActivateCredential{ActivateCredential: &agentv1.ActivateCredentialRequest{
			KeyHandle: testKeyHandle, EkAlgorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, CredentialBlob: blob, EncryptedSecret: encSecret}}})
	}
	secret, res := activate(key.GetName())
	wantOK(t, "activate_credential", res)
	if !bytes.Equal(res.GetActivateCredential().GetSecret(), secret) {
		t.Fatal("activate_credential returned a different secret")
	}
	otherName := append([]byte{}, key.GetName()...)
	otherName[len(otherName)-1] ^= 1
	if _, res := activate(otherName); res.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_ACTIVATION_FAILED || res.GetError().GetTpmRc() == 0 {
		t.Fatalf("activate_credential for another Name = %v, want ACTIVATION_FAILED with a TPM rc", res.GetError())
	}

	// CSR, verified at the station.
	subject, err := asn1.Marshal(pkix.Name{CommonName: "unit SN-TEST-0001", SerialNumber: "SN-TEST-0001"}.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte("unit.test")}})
	if err != nil {
		t.Fatal(err)
	}
	res = s.call(t, &agentv1.Command{Op: &agentv1.Command_BuildCsr{BuildCsr: &agentv1.BuildCSRRequest{
		KeyHandle: testKeyHandle, Subject: subject, Extensions: []*agentv1.Extension{{Oid: "2.5.29.17", Value: san}}}}})
	wantOK(t, "build_csr", res)
	csr, err := x509.ParseCertificateRequest(res.GetBuildCsr().GetCsr())
	if err != nil {
		t.Fatalf("parsing CSR: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("CSR signature: %v", err)
	}
	if !pub.Equal(csr.PublicKey) || !bytes.Equal(csr.RawSubject, subject) || !slices.Equal(csr.DNSNames, []string{"unit.test"}) {
		t.Fatalf("CSR key/subject/SAN = %v / %x / %v", csr.PublicKey, csr.RawSubject, csr.DNSNames)
	}

	// Sign a nonce.
	verifySign(t, s, pub)

	// NV: 2 KiB written in chunks and read back.
	data := make([]byte, 2048)
	rand.Read(data)
	res = s.call(t, &agentv1.Command{Op: &agentv1.Command_NvWrite{NvWrite: &agentv1.NVWriteRequest{
		Index: testNVIndex, Auth: agentv1.Hierarchy_HIERARCHY_OWNER, Data: data}}})
	wantOK(t, "nv_write", res)
	chunks := (uint32(len(data)) + info.GetNvBufferMax() - 1) / info.GetNvBufferMax()
	if w := res.GetNvWrite(); !w.GetDefined() || w.GetChunks() != chunks || len(w.GetName()) == 0 {
		t.Fatalf("nv_write = %v, want defined in %d chunks", w, chunks)
	}
	res = s.call(t, &agentv1.Command{Op: &agentv1.Command_NvRead{NvRead: &agentv1.NVReadRequest{Index: testNVIndex}}})
	wantOK(t, "nv_read", res)
	if r := res.GetNvRead(); !bytes.Equal(r.GetData(), data) || r.GetSize() != uint32(len(data)) {
		t.Fatalf("nv_read returned %d bytes (size %d), want the 2048 written", len(r.GetData()), r.GetSize())
	}

	// Files below the root.
	p := filepath.Join(root, "devid", "ldevid.pem")
	content := []byte("certificate chain\n")
	res = s.call(t, &agentv1.Command{Op: &agentv1.Command_WriteFile{WriteFile: &agentv1.WriteFileRequest{Path: p, Content: content, Mode: 0o644}}})
	wantOK(t, "write_file", res)
	if sum := sha256.Sum256(content); !bytes.Equal(res.GetWriteFile().GetSha256(), sum[:]) {
		t.Fatalf("write_file digest %x, want %x", res.GetWriteFile().GetSha256(), sum)
	}
	res = s.call(t, &agentv1.Command{Op: &agentv1.Command_ReadFile{ReadFile: &agentv1.ReadFileRequest{Path: p}}})
	wantOK(t, "read_file", res)
	if !bytes.Equal(res.GetReadFile().GetContent(), content) || res.GetReadFile().GetMode() != 0o644 {
		t.Fatalf("read_file = %v", res.GetReadFile())
	}
	res = s.call(t, &agentv1.Command{Op: &agentv1.Command_ReadFile{ReadFile: &agentv1.ReadFileRequest{Path: "/etc/hostname"}}})
	if res.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED {
		t.Fatalf("read_file outside the root = %v, want PATH_NOT_ALLOWED", res)
	}

	// The station breaks the stream: the agent comes back with attempt 2, same boot.
	s.close(status.Error(codes.Unavailable, "station restarting"))
	s = st.next(t)
	checkHello(t, s.hello, cfg, "simulator", 2)
	verifySign(t, s, pub) // the key survived, the session works

	// The station process goes away and comes back on the same port: attempt 3.
	st.stop()
	st.start()
	s = st.next(t)
	checkHello(t, s.hello, cfg, "simulator", 3)

	// Rework commands leave the simulator clean for other tests.
	res = s.call(t, &agentv1.Command{Op: &agentv1.Command_Evict{Evict: &agentv1.EvictRequest{Handle: testKeyHandle}}})
	wantOK(t, "evict", res)
	if !res.GetEvict().GetExisted() {
		t.Error("evict: key did not exist")
	}
	res = s.call(t, &agentv1.Command{Op: &agentv1.Command_NvUndefine{NvUndefine: &agentv1.NVUndefineRequest{
		Index: testNVIndex, Auth: agentv1.Hierarchy_HIERARCHY_OWNER}}})
	wantOK(t, "nv_undefine", res)
	if !res.GetNvUndefine().GetExisted() {
		t.Error("nv_undefine: index did not exist")
	}
	res = s.call(t, &agentv1.Command{Op: &agentv1.Command_NvRead{NvRead: &agentv1.NVReadRequest{Index: testNVIndex}}})
	if res.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("nv_read after undefine = %v, want NOT_FOUND", res)
	}

	// Finish.
	res = s.call(t, &agentv1.Command{Op: &agentv1.Command_Finish{Finish: &agentv1.FinishRequest{Passed: true, Message: "provisioned"}}})
	wantOK(t, "finish", res)
	if res.GetFinish().GetExitCode() != ExitPassed {
		t.Fatalf("finish exit code %d, want %d", res.GetFinish().GetExitCode(), ExitPassed)
	}
	s.close(nil)
	v, err := run.wait(t, 10*time.Second)
	if err != nil || v != (Verdict{Passed: true, Message: "provisioned"}) || v.ExitCode() != ExitPassed {
		t.Fatalf("Run = %+v, %v; want passed", v, err)
	}
}

func TestSessionFailedVerdict(t *testing.T) {
	sim := needSim(t)
	pki := newTestPKI(t)
	st := startStation(t, pki)
	cfg := testConfig(t, st, pki.pool)
	run := startAgent(t, cfg, sim)
	s := st.next(t)
	checkHello(t, s.hello, cfg, "simulator", 1)
	res := s.call(t, &agentv1.Command{Op: &agentv1.Command_Finish{Finish: &agentv1.FinishRequest{
		Code: "EK_UNTRUSTED", Message: "EK certificate does not chain to a pinned vendor root"}}})
	wantOK(t, "finish", res)
	if res.GetFinish().GetExitCode() != ExitFailed {
		t.Fatalf("finish exit code %d, want %d", res.GetFinish().GetExitCode(), ExitFailed)
	}
	// The agent half-closes its side after answering Finish.
	if _, err := s.stream.Recv(); err == nil {
		t.Fatal("agent sent more after finish")
	}
	s.close(nil)
	v, err := run.wait(t, 10*time.Second)
	if err != nil || v.Passed || v.Code != "EK_UNTRUSTED" || v.ExitCode() != ExitFailed {
		t.Fatalf("Run = %+v, %v; want failed verdict with exit code 3", v, err)
	}
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	accepted *atomic.Int32
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

func TestRefusesUnpinnedStation(t *testing.T) {
	pki := newTestPKI(t)
	st := startStation(t, pki)
	// Count the agent's TLS attempts on a second listener served by the same station.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int32
	st.mu.Lock()
	srv := st.srv
	st.mu.Unlock()
	go srv.Serve(countingListener{Listener: lis, accepted: &accepted})

	other := newTestPKI(t) // the agent pins a different CA
	cfg := testConfig(t, st, other.pool)
	cfg.StationAddr = lis.Addr().String()
	run := startAgent(t, cfg, &fakeTPM{})

	deadline := time.Now().Add(5 * time.Second)
	for accepted.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := accepted.Load(); n < 3 {
		t.Fatalf("agent made %d connection attempts in 5s, want it to keep retrying", n)
	}
	if n := st.gateway.opened.Load(); n != 0 {
		t.Fatalf("%d sessions reached the station despite the unpinned certificate", n)
	}
	run.cancel()
	_, err = run.wait(t, 5*time.Second)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel = %v, want context.Canceled", err)
	}
}

func TestOversizedStationMessage(t *testing.T) {
	pki := newTestPKI(t)
	st := startStation(t, pki)
	cfg := testConfig(t, st, pki.pool)
	cfg.MaxMessageBytes = 64 << 10
	root := t.TempDir()
	cfg.FileRoots = []string{root}
	f := &fakeTPM{}
	run := startAgent(t, cfg, f)

	s := st.next(t)
	big := &agentv1.Command{Id: 1, Op: &agentv1.Command_WriteFile{WriteFile: &agentv1.WriteFileRequest{
		Path: filepath.Join(root, "big"), Content: make([]byte, 100<<10)}}}
	if err := s.stream.Send(&agentv1.StationMessage{Body: &agentv1.StationMessage_Command{Command: big}}); err != nil {
		t.Fatalf("sending oversized command: %v", err)
	}
	if msg, err := s.stream.Recv(); err == nil {
		t.Fatalf("agent answered an oversized command: %v", msg)
	}
	// The agent survives and reconnects.
	s = st.next(t)
	checkHello(t, s.hello, cfg, "fake", 2)
	if _, err := os.Stat(filepath.Join(root, "big")); !os.IsNotExist(err) {
		t.Errorf("oversized command was executed: %v", err)
	}
	// A result above the bound is answered with MESSAGE_TOO_LARGE.
	f.chain = [][]byte{make([]byte, 70<<10)}
	res := s.call(t, &agentv1.Command{Op: &agentv1.Command_ReadEk{ReadEk: &agentv1.ReadEKRequest{}}})
	if res.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_MESSAGE_TOO_LARGE {
		t.Fatalf("oversized result = %v, want MESSAGE_TOO_LARGE", res.GetError())
	}
	res = s.call(t, &agentv1.Command{Op: &agentv1.Command_Finish{Finish: &agentv1.FinishRequest{Passed: true}}})
	wantOK(t, "finish", res)
	s.close(nil)
	if v, err := run.wait(t, 10*time.Second); err != nil || !v.Passed {
		t.Fatalf("Run = %+v, %v; want passed", v, err)
	}
}

// BenchmarkSessionRoundTrip measures one Sign command over the TLS session to an agent on the
// simulator: station send, agent dispatch, TPM ECDSA signature, result back.
func BenchmarkSessionRoundTrip(b *testing.B) {
	sim := needSim(b)
	pki := newTestPKI(b)
	st := startStation(b, pki)
	cfg := testConfig(b, st, pki.pool)
	run := startAgent(b, cfg, sim)
	s := st.next(b)
	const h = 0x81020010
	res := s.call(b, &agentv1.Command{Op: &agentv1.Command_CreateKey{CreateKey: &agentv1.CreateKeyRequest{
		Role: agentv1.KeyRole_KEY_ROLE_IDEVID, Algorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, Handle: h}}})
	if res.GetError() != nil {
		b.Fatalf("create_key: %v", res.GetError())
	}
	digest := sha256.Sum256([]byte("nonce"))
	for b.Loop() {
		res := s.call(b, &agentv1.Command{Op: &agentv1.Command_Sign{Sign: &agentv1.SignRequest{
			KeyHandle: h, Digest: digest[:], Hash: agentv1.HashAlgorithm_HASH_ALGORITHM_SHA256}}})
		if res.GetError() != nil {
			b.Fatalf("sign: %v", res.GetError())
		}
	}
	s.call(b, &agentv1.Command{Op: &agentv1.Command_Evict{Evict: &agentv1.EvictRequest{Handle: h}}})
	s.call(b, &agentv1.Command{Op: &agentv1.Command_Finish{Finish: &agentv1.FinishRequest{Passed: true}}})
	s.close(nil)
	if _, err := run.wait(b, 10*time.Second); err != nil {
		b.Fatal(err)
	}
}
