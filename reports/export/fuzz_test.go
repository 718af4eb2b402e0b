package export_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/devid-station/devid/reports/export"
	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/store"
)

// FuzzVerify replaces one file of a real QA export bundle with arbitrary bytes, as an auditor
// may receive it: manifest.json itself, a manifest body signed with the station's key (so that
// Verify reads past the signature), or any file the manifest lists, its hash and size updated
// and the manifest re-signed. Verify never panics, reports every unit the manifest names, and
// passes a bundle only when what the station signed still holds: the same signed body, the
// same certificates.
func FuzzVerify(f *testing.F) {
	key, roots, files := fuzzBundle(f)
	names := slices.Sorted(maps.Keys(files))
	var manifest export.Manifest
	if err := json.Unmarshal(files[export.ManifestFile], &manifest); err != nil {
		f.Fatal(err)
	}
	signedBody := len(names) // which: a manifest body to sign
	for i, name := range names {
		f.Add(uint8(i), files[name])
	}
	f.Add(uint8(signedBody), []byte(manifest.Body))
	f.Add(uint8(signedBody), []byte(`{"schema":"devid-station/qa-export/v1","units":[{"serial":"SN-1","traveler":"../x"}]}`))
	f.Add(uint8(slices.Index(names, export.AuditFile)), []byte("{}\n{\"seq\":1}\n"))
	f.Add(uint8(slices.Index(names, export.SummaryFile)), []byte("serial\nSN-1\n"))
	pub := key.Public()
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		bundle := maps.Clone(files)
		k := int(which) % (len(names) + 1)
		switch {
		case k == signedBody:
			m, err := export.SignBody(data, key)
			if err != nil {
				return // not JSON: the station signs none such
			}
			bundle[export.ManifestFile] = m
		case names[k] == export.ManifestFile:
			bundle[export.ManifestFile] = data
		default:
			bundle[names[k]] = data
			bundle[export.ManifestFile] = relisted(t, manifest.Body, names[k], data, key)
		}
		dir := t.TempDir()
		for name, content := range bundle {
			if err := export.WriteFile(dir, name, content); err != nil {
				t.Fatal(err)
			}
		}
		rep := export.Verify(dir, roots, pub)
		for _, p := range rep.Problems {
			if strings.TrimSpace(p) == "" {
				t.Fatal("an empty problem")
			}
		}
		if s := rep.String(); strings.HasSuffix(s, "FAIL\n") == rep.OK() {
			t.Fatalf("report says %q, OK() = %v", s[strings.LastIndex(s[:len(s)-1], "\n")+1:], rep.OK())
		}
		if k != signedBody && names[k] != export.ManifestFile {
			if len(rep.Units) != 1 || rep.Units[0].Serial != "SN-1" {
				t.Fatalf("units %+v reported, the manifest names SN-1", rep.Units)
			}
		}
		if !rep.OK() {
			return
		}
		switch {
		case k == signedBody:
			if !json.Valid(data) {
				t.Fatal("passed an invalid body")
			}
		case names[k] == export.ManifestFile:
			var m export.Manifest
			if json.Unmarshal(data, &m) != nil || compact(t, m.Body) != compact(t, manifest.Body) {
				t.Fatal("passed a manifest whose body the station did not sign")
			}
		case strings.HasSuffix(names[k], ".pem"):
			got, _ := pem.Decode(data)
			want, _ := pem.Decode(files[names[k]])
			if got == nil || !bytes.Equal(got.Bytes, want.Bytes) {
				t.Fatalf("passed %s with another certificate", names[k])
			}
		}
	})
}

// fuzzBundle writes a real store holding one provisioned unit, SN-1 of work order WO-1, and
// returns its audit key, the root of its DevID certificates and the files of its bundle. One
// unit and one checkpoint keep Verify's signature checks, the most of its time, to a few.
func fuzzBundle(f *testing.F) (*ecdsa.PrivateKey, *x509.CertPool, map[string][]byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	clock := travelertest.NewClock(time.Now().UTC().Truncate(time.Second))
	st, err := store.Open(filepath.Join(f.TempDir(), "station.db"), store.Options{StationID: "st-qa", Clock: clock,
		Checkpoints: store.CheckpointOptions{Signer: key, Every: 1000, Interval: time.Hour}})
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if _, err := st.CreateWorkOrder(ctx, store.WorkOrder{ID: "WO-1", Profile: "default", Serials: []string{"SN-1"}}); err != nil {
		f.Fatal(err)
	}
	w := travelertest.WriteUnit(f, st, travelertest.Unit{Serial: "SN-1", WorkOrder: "WO-1", Profile: "default", Clock: clock, StepTime: time.Second})
	roots := x509.NewCertPool()
	roots.AddCert(w.DevIDRoot)
	b, err := export.Build(ctx, st, export.Selection{WorkOrder: "WO-1"}, export.Options{Version: "v-fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	dir := filepath.Join(f.TempDir(), "bundle")
	if err := b.WriteDir(dir); err != nil {
		f.Fatal(err)
	}
	if rep := export.Verify(dir, roots, key.Public()); !rep.OK() {
		f.Fatalf("the intact bundle fails:\n%s", rep)
	}
	files := map[string][]byte{}
	for _, file := range b.Files {
		files[file.Path] = file.Data
	}
	return key, roots, files
}

// relisted returns manifest.json for body with the entry of file name taking data's SHA-256
// and size, signed with the line's audit key.
func relisted(t *testing.T, body []byte, name string, data []byte, key crypto.Signer) []byte {
	t.Helper()
	var b export.Body
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatal(err)
	}
	for i := range b.Files {
		if b.Files[i].Path == name {
			b.Files[i].SHA256, b.Files[i].Size = sha(data), len(data)
		}
	}
	raw, err := json.Marshal(&b)
	if err != nil {
		t.Fatal(err)
	}
	m, err := export.SignBody(raw, key)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func sha(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

// compact is b compacted, or a string no JSON compacts to.
func compact(t *testing.T, b []byte) string {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return "invalid: " + err.Error()
	}
	return out.String()
}

// FuzzParseKey reads arbitrary bytes as the station key file an auditor is given
// (devid-verify -station-key): a key it accepts is one Verify can check signatures with, and
// PublicKeyPEM writes it back to a file ParseKey reads as the same key.
func FuzzParseKey(f *testing.F) {
	key, _, files := fuzzBundle(f)
	pemKey, err := export.PublicKeyPEM(key.Public())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pemKey)
	for name, data := range files {
		if strings.HasSuffix(name, ".pem") {
			f.Add(data) // a certificate
			break
		}
	}
	f.Add([]byte("-----BEGIN RSA PUBLIC KEY-----\n-----END RSA PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pub, err := export.ParseKey(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "station key: ") {
				t.Fatalf("error does not name the station key: %v", err)
			}
			return
		}
		switch pub.(type) {
		case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
		default:
			t.Fatalf("accepted a %T key, which no manifest signature verifies with", pub)
		}
		again, err := export.PublicKeyPEM(pub)
		if err != nil {
			t.Fatalf("accepted key does not encode: %v", err)
		}
		back, err := export.ParseKey(again)
		if err != nil || !back.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
			t.Fatalf("round trip gave %v, %v", back, err)
		}
	})
}
