package workflow

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"math/big"
	"testing"
	"time"

	"github.com/devid-station/devid/station/attest"
)

// FuzzHardwareModuleName parses arbitrary subjectAltName values as the station reads the one
// in a CA's certificate: what it accepts is the one hardwareModuleName, which sanExtension
// encodes back to a value that parses to the same type and serial.
func FuzzHardwareModuleName(f *testing.F) {
	hwType := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1, 1}
	ext, _, err := sanExtension(hwType, []byte("SN-0042"))
	if err != nil {
		f.Fatal(err)
	}
	twice, _ := asn1.Marshal([]asn1.RawValue{{FullBytes: ext.Value[2:]}, {FullBytes: ext.Value[2:]}})
	f.Add(ext.Value)
	f.Add(twice)
	f.Add([]byte{0x30, 0x03, 0x82, 0x01, 'x'})
	f.Fuzz(func(t *testing.T, san []byte) {
		typ, serial, err := parseHardwareModuleName(san)
		if err != nil {
			if sameHardwareModuleName(san, san) {
				t.Fatal("an unparsable value matches itself")
			}
			return
		}
		if !sameHardwareModuleName(san, san) {
			t.Fatal("a parsed value does not match itself")
		}
		again, ok, err := sanExtension(typ, serial)
		if err != nil || !ok {
			return // an empty or unencodable type: nothing the station asks for
		}
		typ2, serial2, err := parseHardwareModuleName(again.Value)
		if err != nil || !typ2.Equal(typ) || !bytes.Equal(serial2, serial) {
			t.Fatalf("round trip gave %v %x, %v; want %v %x", typ2, serial2, err, typ, serial)
		}
	})
}

// FuzzRestore rebuilds the facts of a skipped CSR or enrollment step from arbitrary recorded
// results (the store keeps what the agent and the CA answered): a restored certificate is for
// the attested key, and every restored chain certificate is parsed.
func FuzzRestore(f *testing.F) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	cert := func(pub *ecdsa.PublicKey) []byte {
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(7),
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}, &x509.Certificate{}, pub, other)
		if err != nil {
			f.Fatal(err)
		}
		return der
	}
	leaf, ca := cert(&priv.PublicKey), cert(&other.PublicKey)
	steps := []string{StepIDevIDCSR, StepIDevIDEnroll, StepLDevIDCSR, StepLDevIDEnroll}
	for i, v := range []any{
		map[string]any{"csr": []byte{0x30, 0x00}},
		map[string]any{"cert": leaf, "chain": [][]byte{ca}},
		map[string]any{"csr": nil},
		map[string]any{"cert": ca, "chain": nil, "duplicate": true},
	} {
		raw, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), raw)
	}
	f.Add(uint8(1), []byte(`{"cert":"AAAA","chain":["!"]}`))
	f.Fuzz(func(t *testing.T, which uint8, raw []byte) {
		step := steps[int(which)%len(steps)]
		key := &attest.Key{PublicKey: &priv.PublicKey}
		u := &unit{keys: map[string]*devKey{roleIDevID: {key: key}, roleLDevID: {key: key}}}
		if err := u.restore(step, raw); err != nil {
			return
		}
		k := u.keys[roleFor(step)]
		if k.cert != nil && !publicKeyEqual(k.cert.PublicKey, key.PublicKey) {
			t.Fatal("restored a certificate for another key")
		}
		for i, c := range k.chain {
			if c == nil || len(c.Raw) == 0 {
				t.Fatalf("restored chain certificate %d is empty", i)
			}
		}
		if (step == StepIDevIDEnroll || step == StepLDevIDEnroll) && k.cert == nil {
			t.Fatal("an enrollment restored without a certificate")
		}
	})
}
