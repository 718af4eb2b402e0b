package tpm_test

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/device-agent/tpm/tpmtest"
)

// TestSWTPMInteropWithTPM2Tools writes with this package over swtpm and reads back with
// tpm2-tools, an independent implementation.
func TestSWTPMInteropWithTPM2Tools(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping swtpm tier in -short mode")
	}
	tpmtest.RequireTools(t, "swtpm", "tpm2_nvread", "tpm2_getcap", "tpm2_readpublic")
	spec, tcti, stop := tpmtest.StartSWTPM(t)
	defer stop()

	tp, err := tpm.Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	info, err := tp.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.NVBufferMax == 0 || info.Family != "2.0" {
		t.Errorf("swtpm Info = %+v", info)
	}
	key, err := tp.CreateKey(tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.ECCP256, Handle: tpm.IDevIDHandle})
	if err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, 1300) // a DER certificate's size, more than one NV buffer
	if _, err := rand.Read(blob); err != nil {
		t.Fatal(err)
	}
	res, err := tp.NVWrite(tpm.NVWriteRequest{Index: tpm.IDevIDCertIndex, Auth: tpm.Platform, Data: blob, WriteLock: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Defined || !res.Locked || res.Chunks < 2 {
		t.Errorf("NVWrite = %+v, want defined, locked, chunked (NV buffer max %d)", res, info.NVBufferMax)
	}
	// swtpm serves one client at a time.
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}

	tool := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+tcti)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, stderr.Bytes())
		}
		return out
	}

	// The default platform attributes allow owner reads.
	got := tool("tpm2_nvread", "-C", "o", "0x01C90000")
	if !bytes.Equal(got, blob) {
		t.Errorf("tpm2_nvread gave %d bytes, not the %d written", len(got), len(blob))
	}

	handles := string(tool("tpm2_getcap", "handles-persistent"))
	if !strings.Contains(strings.ToLower(handles), "0x81020000") {
		t.Errorf("tpm2_getcap handles-persistent = %q, lacks 0x81020000", handles)
	}

	pub := string(tool("tpm2_readpublic", "-c", "0x81020000"))
	m := regexp.MustCompile(`(?m)^attributes:\s*\n\s*value:\s*(\S+)\s*\n\s*raw:\s*(0x[0-9a-fA-F]+)`).FindStringSubmatch(pub)
	if m == nil {
		t.Fatalf("no attributes in tpm2_readpublic output:\n%s", pub)
	}
	flags := map[string]bool{}
	for _, f := range strings.Split(m[1], "|") {
		flags[strings.ToLower(f)] = true
	}
	for _, f := range []string{"fixedtpm", "fixedparent", "sensitivedataorigin", "userwithauth", "noda", "sign"} {
		if !flags[f] {
			t.Errorf("tpm2_readpublic attributes %q lack %s", m[1], f)
		}
	}
	for _, f := range []string{"decrypt", "restricted"} {
		if flags[f] {
			t.Errorf("tpm2_readpublic attributes %q include %s", m[1], f)
		}
	}
	if m[2] != "0x40472" {
		t.Errorf("raw attributes %s, want 0x40472", m[2])
	}
	name := regexp.MustCompile(`(?m)^name:\s*([0-9a-fA-F]+)`).FindStringSubmatch(pub)
	if name == nil || !strings.EqualFold(name[1], hex.EncodeToString(key.Name)) {
		t.Errorf("tpm2_readpublic name %v, want %x", name, key.Name)
	}
}

func TestSWTPMUnixSocket(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping swtpm tier in -short mode")
	}
	spec, _ := tpmtest.StartSWTPMUnix(t)
	tp, err := tpm.Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	k, err := tp.CreateKey(tpm.KeyRequest{Role: tpm.LDevID, Algorithm: tpm.ECCP256, Handle: tpm.LDevIDHandle})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 2000)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.NVWrite(tpm.NVWriteRequest{Index: 0x01500000, Auth: tpm.Owner, Data: data}); err != nil {
		t.Fatal(err)
	}
	got, err := tp.NVRead(0x01500000)
	if err != nil || !bytes.Equal(got.Data, data) {
		t.Fatalf("NVRead over the unix socket: %v", err)
	}
	ek, err := tp.ReadEK(tpm.ECCP256)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("proof of residency over swtpm...")
	blob, enc := makeCredential(t, ek.Public, k.Name, secret)
	out, err := tp.ActivateCredential(k.Handle, tpm.ECCP256, blob, enc)
	if err != nil || !bytes.Equal(out, secret) {
		t.Fatalf("ActivateCredential over swtpm = %x, %v", out, err)
	}

	// libtpms must sign RSA-PSS with the salt length Go's x509 expects (the hash length).
	rk, err := tp.CreateKey(tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.RSA2048, Handle: tpm.IDevIDHandle})
	if err != nil {
		t.Fatal(err)
	}
	subject, err := asn1.Marshal(pkix.Name{SerialNumber: "SN-1"}.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	for _, scheme := range []tpm.Scheme{tpm.RSAPSS, tpm.RSASSA} {
		der, err := tp.BuildCSR(rk.Handle, subject, nil, scheme)
		if err != nil {
			t.Fatalf("BuildCSR(scheme %d) over swtpm: %v", scheme, err)
		}
		csr, err := x509.ParseCertificateRequest(der)
		if err != nil || csr.CheckSignature() != nil {
			t.Fatalf("CSR over swtpm does not verify: %v", err)
		}
	}
}

// TestSWTPMIAKCertify runs the IAK on swtpm: created with the IAK attributes, it certifies the
// IDevID key and signs a CSR; tpm2-tools read the IAK and have the TPM verify the
// certification's signature with the IAK (and refuse it over a changed attest).
func TestSWTPMIAKCertify(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping swtpm tier in -short mode")
	}
	tpmtest.RequireTools(t, "swtpm", "tpm2_readpublic", "tpm2_verifysignature")
	spec, tcti, stop := tpmtest.StartSWTPM(t)
	defer stop()
	tp, err := tpm.Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	idevid, err := tp.CreateKey(tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.ECCP256, Handle: tpm.IDevIDHandle})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tp.CreateKey(tpm.KeyRequest{Role: tpm.IAK, Algorithm: tpm.ECCP256, Handle: tpm.IAKHandle}); err != nil {
		t.Fatal(err)
	}
	nonce := bytes.Repeat([]byte{0x42}, 32)
	c, err := tp.Certify(tpm.IDevIDHandle, tpm.IAKHandle, nonce)
	if err != nil {
		t.Fatalf("Certify over swtpm: %v", err)
	}
	der, err := tp.BuildCSR(tpm.IAKHandle, []byte{0x30, 0}, nil, tpm.SchemeDefault)
	if err != nil {
		t.Fatalf("BuildCSR with the IAK over swtpm: %v", err)
	}
	if csr, err := x509.ParseCertificateRequest(der); err != nil || csr.CheckSignature() != nil {
		t.Fatalf("IAK CSR over swtpm does not verify: %v", err)
	}
	if err := tp.Close(); err != nil { // swtpm serves one client at a time
		t.Fatal(err)
	}

	dir := t.TempDir()
	attestFile, sigFile := dir+"/attest.bin", dir+"/sig.bin"
	if err := os.WriteFile(attestFile, c.Attest, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sigFile, c.Signature, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+tcti)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, stderr.Bytes())
		}
		return string(out), nil
	}
	tool := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	pub := tool("tpm2_readpublic", "-c", "0x81020001")
	if m := regexp.MustCompile(`(?m)^attributes:\s*\n\s*value:\s*\S+\s*\n\s*raw:\s*(0x[0-9a-fA-F]+)`).FindStringSubmatch(pub); m == nil || m[1] != "0x50472" {
		t.Errorf("IAK attributes %v, want raw 0x50472 (fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|sign):\n%s", m, pub)
	}
	// TPMS_ATTEST: TPM_GENERATED_VALUE, TPM_ST_ATTEST_CERTIFY, and the nonce and the IDevID's
	// Name inside.
	if !bytes.HasPrefix(c.Attest, []byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x17}) || !bytes.Contains(c.Attest, nonce) || !bytes.Contains(c.Attest, idevid.Name) {
		t.Errorf("attest %x lacks the magic, the certify type, the nonce or the IDevID's Name", c.Attest)
	}
	// The TPM itself verifies the signature with the IAK (an error exit fails the test).
	tool("tpm2_verifysignature", "-c", "0x81020001", "-g", "sha256", "-m", attestFile, "-s", sigFile)
	changed := bytes.Clone(c.Attest)
	changed[len(changed)-1] ^= 1
	if err := os.WriteFile(attestFile, changed, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := run("tpm2_verifysignature", "-c", "0x81020001", "-g", "sha256", "-m", attestFile, "-s", sigFile); err == nil {
		t.Error("tpm2_verifysignature accepted the signature over a changed attest")
	}
}
