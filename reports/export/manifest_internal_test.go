package export

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"testing"
	"time"

	"github.com/devid-station/devid/station/store"
)

// TestMarshalBody holds marshalBody to json.Marshal, and signManifest's output to
// json.MarshalIndent's, for plain and not plain listings, empty and missing ones.
func TestMarshalBody(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	base := Body{Schema: Schema, StationID: "st-1", SoftwareVersion: "v1", CreatedAt: time.Unix(1700000000, 5).UTC(),
		Selection: Selection{WorkOrder: "WO-1"}, AuditPublicKey: pub,
		Audit: Range{First: 1, Last: 9, Head: store.ChainHead{Seq: 9, Hash: []byte{9}},
			Checkpoints: []CheckpointEntry{{Record: 9, Seq: 8, Hash: []byte{8}}}}}
	units := []Unit{
		{Serial: "SN-1", Traveler: "travelers/SN-1.json", Certificates: []string{"certificates/SN-1/idevid-ab.pem", "certificates/SN-1/ldevid-cd.pem"}, EKCertificate: "certificates/SN-1/ek-ef.pem"},
		{Serial: "SN-2", Traveler: "travelers/SN-2.json"},
		{Serial: "SN-3", Traveler: "travelers/SN-3.json", Certificates: []string{}},
	}
	files := []File{{Path: "travelers/SN-1.json", SHA256: "ab", Size: 12}, {Path: "audit.jsonl", SHA256: "cd", Size: 0}}
	for _, tc := range []struct {
		name  string
		units []Unit
		files []File
	}{
		{"plain", units, files},
		{"none", nil, nil},
		{"empty", []Unit{}, []File{}},
		{"serial to escape", append([]Unit{{Serial: "SN-<4>", Traveler: "travelers/SN-<4>.json"}}, units...), files},
		{"path to escape", units, append([]File{{Path: "travelers/\u00e9\"x.json", SHA256: "ab", Size: 1}}, files...)},
		{"certificate to escape", []Unit{{Serial: "SN-5", Traveler: "t", Certificates: []string{"a&b"}}}, files},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := base
			b.Units, b.Files = tc.units, tc.files
			want, err := json.Marshal(&b)
			if err != nil {
				t.Fatal(err)
			}
			got, err := marshalBody(&b)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("marshalBody:\n got %s, %v\nwant %s", got, err, want)
			}
			// The room made for the listing holds it: the buffer grows once.
			head := b
			head.Units, head.Files = nil, nil
			headJSON, err := json.Marshal(&head)
			if err != nil {
				t.Fatal(err)
			}
			if size, plain := plainListing(&b); plain && len(headJSON)+size < len(want) {
				t.Errorf("plainListing's size %d + the rest %d < %d bytes", size, len(headJSON), len(want))
			}
			data, err := signManifest(&b, key)
			if err != nil {
				t.Fatal(err)
			}
			var m Manifest
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatal(err)
			}
			indented, err := json.MarshalIndent(m, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, append(indented, '\n')) {
				t.Fatalf("signManifest:\n got %s\nwant %s", data, indented)
			}
			if _, err := openManifest(data, key.Public()); err != nil {
				t.Fatalf("openManifest: %v", err)
			}
		})
	}
}
