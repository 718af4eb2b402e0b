package reconcile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

func selfSigned(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "u"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<31, 0)}, &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "u"}}, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestParseLog(t *testing.T) {
	der := selfSigned(t)
	b64 := base64.StdEncoding.EncodeToString(der)
	pemText := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	csr := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name, in, wantErr string
		wantCSR           string
		wantTime          bool
	}{
		{name: "json lines", in: `{"der":"` + b64 + `","csr_sha256":"` + strings.ToUpper(csr) + `","time":"2026-01-02T03:04:05Z"}` + "\n\n", wantCSR: csr, wantTime: true},
		{name: "csv der", in: "time,der,csr_sha256\n2026-01-02T03:04:05Z," + b64 + "," + csr + "\n", wantCSR: csr, wantTime: true},
		{name: "csv pem", in: "serial,pem\n7,\"" + pemText + "\"\n"},
		{name: "csv without a certificate column", in: "serial,subject\n7,CN=u\n", wantErr: `no "der" or "pem"`},
		{name: "json without der", in: `{"csr_sha256":"` + csr + `"}`, wantErr: "no certificate"},
		{name: "bad base64", in: "der\n!!!\n", wantErr: "der"},
		{name: "bad time", in: "der,time\n" + b64 + ",yesterday\n", wantErr: "time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseLog(strings.NewReader(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || string(got[0].DER) != string(der) || got[0].CSRSHA256 != tc.wantCSR || got[0].Time.IsZero() == tc.wantTime {
				t.Fatalf("parsed %+v", got)
			}
		})
	}
}
