package tpm_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/devid-station/devid/device-agent/tpm"
)

// openSim opens a fresh in-process simulator (each open is a manufacture reset) and closes it
// when the test ends. Tests using it must not run in parallel: one simulator per process.
func openSim(tb testing.TB) *tpm.TPM {
	tb.Helper()
	tp, err := tpm.Open("simulator")
	if errors.Is(err, tpm.ErrInvalidArgument) {
		tb.Skipf("skipping: no TPM simulator in this build (it needs cgo): %v", err)
	}
	if err != nil {
		tb.Fatalf("Open(simulator): %v", err)
	}
	tb.Cleanup(func() {
		if err := tp.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return tp
}

// selfSigned returns a throwaway self-signed DER certificate whose common name is cn.
func selfSigned(tb testing.TB, cn string) []byte {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

// mustCreate creates a DevID key or fails the test.
func mustCreate(tb testing.TB, tp *tpm.TPM, req tpm.KeyRequest) *tpm.Key {
	tb.Helper()
	k, err := tp.CreateKey(req)
	if err != nil {
		tb.Fatalf("CreateKey(%+v): %v", req, err)
	}
	return k
}
