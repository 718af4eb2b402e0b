package tpm_test

import (
	"crypto"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm"
)

// The benchmarks run against the in-process simulator: they measure this package's overhead
// plus the simulator's crypto, not a real chip's latency.

func BenchmarkInfo(b *testing.B) {
	tp := openSim(b)
	for b.Loop() {
		if _, err := tp.Info(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadEK(b *testing.B) {
	for _, bc := range []struct {
		name string
		alg  tpm.Algorithm
	}{{"RSA", tpm.RSA2048}, {"ECC", tpm.ECCP256}} {
		b.Run(bc.name, func(b *testing.B) {
			tp := openSim(b)
			for b.Loop() {
				if _, err := tp.ReadEK(bc.alg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCreateKey(b *testing.B) {
	for _, bc := range []struct {
		name string
		req  tpm.KeyRequest
	}{
		{"IDevID-ECC", tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.ECCP256, Handle: tpm.IDevIDHandle}},
		{"IDevID-RSA", tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.RSA2048, Handle: tpm.IDevIDHandle}},
		{"LDevID-ECC", tpm.KeyRequest{Role: tpm.LDevID, Algorithm: tpm.ECCP256, Handle: tpm.LDevIDHandle}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tp := openSim(b)
			for b.Loop() {
				if _, err := tp.CreateKey(bc.req); err != nil {
					b.Fatal(err)
				}
				if existed, err := tp.Evict(bc.req.Handle, tpm.Owner); err != nil || !existed {
					b.Fatal(existed, err)
				}
			}
		})
	}
}

func BenchmarkActivateCredential(b *testing.B) {
	tp := openSim(b)
	if _, err := tp.ProvisionEK(tpm.RSA2048, tpm.EKHandleRSA); err != nil {
		b.Fatal(err)
	}
	ek, err := tp.ReadEK(tpm.RSA2048)
	if err != nil {
		b.Fatal(err)
	}
	k, err := tp.CreateKey(tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.ECCP256, Handle: tpm.IDevIDHandle})
	if err != nil {
		b.Fatal(err)
	}
	blob, enc := makeCredentialB(b, ek.Public, k.Name, []byte("0123456789abcdef"))
	for b.Loop() {
		if _, err := tp.ActivateCredential(k.Handle, tpm.RSA2048, blob, enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBuildCSR(b *testing.B) {
	tp := openSim(b)
	k, err := tp.CreateKey(tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.ECCP256, Handle: tpm.IDevIDHandle})
	if err != nil {
		b.Fatal(err)
	}
	subject, err := asn1.Marshal(pkix.Name{CommonName: "unit", SerialNumber: "SN-1"}.ToRDNSequence())
	if err != nil {
		b.Fatal(err)
	}
	exts := []tpm.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: []byte{0x30, 0x03, 0x82, 0x01, 0x61}}}
	for b.Loop() {
		if _, err := tp.BuildCSR(k.Handle, subject, exts, tpm.SchemeDefault); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSign(b *testing.B) {
	tp := openSim(b)
	k, err := tp.CreateKey(tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.ECCP256, Handle: tpm.IDevIDHandle})
	if err != nil {
		b.Fatal(err)
	}
	d := digestOf(crypto.SHA256, []byte("nonce"))
	for b.Loop() {
		if _, err := tp.Sign(k.Handle, d, crypto.SHA256, tpm.SchemeDefault); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNVWrite2KiB(b *testing.B) {
	tp := openSim(b)
	data := make([]byte, 2048)
	if _, err := rand.Read(data); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := tp.NVWrite(tpm.NVWriteRequest{Index: 0x01500000, Auth: tpm.Owner, Data: data}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNVRead2KiB(b *testing.B) {
	tp := openSim(b)
	data := make([]byte, 2048)
	if _, err := tp.NVWrite(tpm.NVWriteRequest{Index: 0x01500000, Auth: tpm.Owner, Data: data}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := tp.NVRead(0x01500000); err != nil {
			b.Fatal(err)
		}
	}
}
