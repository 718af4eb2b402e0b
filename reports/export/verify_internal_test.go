package export

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/devid-station/devid/reports/traveler"
	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/store"
)

func TestCertCacheKnowsRoots(t *testing.T) {
	root, stranger := travelertest.NewCA(t, "root"), travelertest.NewCA(t, "root") // same name, other key
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sub := root.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "sub"}, IsCA: true, BasicConstraintsValid: true}, key.Public())
	pool := x509.NewCertPool()
	pool.AddCert(root.Cert)
	c := &certCache{roots: pool}
	for _, tc := range []struct {
		name string
		der  []byte
		root bool
	}{{"the root", root.Cert.Raw, true}, {"a root of the same name", stranger.Cert.Raw, false}, {"an intermediate", sub, false}} {
		for range 2 { // the second answer is the cached one
			got, isRoot, err := c.chainCert(tc.der)
			if err != nil || isRoot != tc.root || got == nil || !got.Equal(mustParse(t, tc.der)) {
				t.Errorf("%s: root %v, %v; want root %v", tc.name, isRoot, err, tc.root)
			}
		}
	}
	if _, _, err := c.chainCert([]byte("junk")); err == nil {
		t.Error("junk parses")
	}
	// A lot whose units each have CAs of their own does not grow it.
	for i := range 3 * certCacheSize {
		c.chainCert([]byte{byte(i), byte(i >> 8)})
	}
	if len(c.certs) > certCacheSize {
		t.Errorf("%d certificates cached, at most %d", len(c.certs), certCacheSize)
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTravelerFacts keeps the verifier's view of a traveler in step with the traveler's
// format: each field it decodes is the record's field of the same name and JSON key.
func TestTravelerFacts(t *testing.T) {
	rec := reflect.TypeFor[traveler.Record]()
	facts := reflect.TypeFor[travelerFacts]()
	for i := range facts.NumField() {
		f := facts.Field(i)
		r, ok := rec.FieldByName(f.Name)
		if !ok || r.Type != f.Type {
			t.Errorf("traveler.Record has no field %s of type %s", f.Name, f.Type)
			continue
		}
		if key, _, _ := strings.Cut(r.Tag.Get("json"), ","); key != f.Tag.Get("json") {
			t.Errorf("field %s: traveler key %q, the verifier reads %q", f.Name, key, f.Tag.Get("json"))
		}
	}
}

// memBundle is a bundle folder in memory.
type memBundle map[string][]byte

func (m memBundle) ReadFile(name string) ([]byte, error) {
	if d, ok := m[name]; ok {
		return d, nil
	}
	return nil, errNotInArchive
}

func (m memBundle) Open(name string) (io.ReadCloser, error) {
	d, err := m.ReadFile(name)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(d)), nil
}

func (m memBundle) Others(func(string) bool) []string { return nil }
func (m memBundle) Close() error                      { return nil }

// TestReadManifest holds readManifest, which reads a manifest in the station's form as a
// stream, to openManifest, which reads it whole: the same body or the same error, for the
// station's manifest and for manifests in other forms, damaged or signed by another key; the
// station's forms take the stream.
func TestReadManifest(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	body := &Body{Schema: Schema, StationID: "st 1: \"x\" \\ {y} <&>\t", SoftwareVersion: "v 1", CreatedAt: time.Now(),
		AuditPublicKey: der, Selection: Selection{WorkOrder: "WO 1"},
		Audit: Range{First: 1, Last: 9, Head: store.ChainHead{Seq: 9, Hash: bytes.Repeat([]byte{7}, 32)},
			Checkpoints: []CheckpointEntry{{Record: 9, Seq: 8, Hash: bytes.Repeat([]byte{8}, 32)}}}}
	for i := range 3 {
		s := fmt.Sprintf("SN-%d", i)
		body.Units = append(body.Units, Unit{Serial: s, Traveler: "travelers/" + s + ".json", Certificates: []string{"certificates/" + s + "/a b.pem"}})
		body.Files = append(body.Files, File{Path: "travelers/" + s + ".json", SHA256: strings.Repeat("ab", 32), Size: i},
			File{Path: "certificates/" + s + "/a b.pem", SHA256: strings.Repeat("cd", 32), Size: i})
	}
	body.Files = append(body.Files, File{Path: AuditFile, SHA256: strings.Repeat("ef", 32)})
	indented, err := signManifest(body, key)
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	if err := json.Unmarshal(indented, &m); err != nil {
		t.Fatal(err)
	}
	compact, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(b []byte) []byte {
		out, err := SignBody(b, key)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	sig, _ := json.Marshal(m.Signature)
	bodyWith := func(old, new string) []byte {
		if !strings.Contains(string(m.Body), old) {
			t.Fatalf("the body lacks %s", old)
		}
		return sign([]byte(strings.Replace(string(m.Body), old, new, 1)))
	}
	cases := []struct {
		name   string
		data   []byte
		stream bool
	}{
		{"the station's", indented, true},
		{"compact", compact, true},
		{"trailing whitespace", append(bytes.Clone(indented), " \n\t"...), true},
		{"signature first", []byte(`{"signature":` + string(sig) + `, "body":` + string(m.Body) + `}`), true},
		{"no units", bodyWith(`"units"`, `"units":null,"x"`), false},
		{"units null", sign([]byte(strings.Replace(string(m.Body), `"units": [`, `"units": null, "y": [`, 1))), false},
		{"another key", []byte(`{"body":` + string(m.Body) + `,"signature":` + string(sig) + `,"note":1}`), false},
		{"Body", []byte(`{"Body":` + string(m.Body) + `,"signature":` + string(sig) + `}`), false},
		{"body twice", []byte(`{"body":{},"body":` + string(m.Body) + `,"signature":` + string(sig) + `}`), false},
		{"trailing value", append(bytes.Clone(indented), "{}"...), false},
		{"not JSON", indented[:len(indented)/2], false},
		{"a key of the body twice", bodyWith(`"schema"`, `"schema":"x","schema"`), false},
		{"a key of the body in capitals", bodyWith(`"schema"`, `"SCHEMA"`), false},
		{"an unknown key in the body", bodyWith(`"schema"`, `"extra":1,"schema"`), false},
		{"an unknown field in a unit", bodyWith(`"serial"`, `"extra":1,"serial"`), false},
		{"empty units", bodyWith(`"units": [`, `"units": [], "u": [`), false},
		{"another key's signature", func() []byte { b, _ := SignBody(m.Body, other); return b }(), false},
		{"another schema", bodyWith(Schema, "v0"), false},
		{"empty", nil, false},
	}
	for _, c := range cases {
		src := memBundle{ManifestFile: c.data}
		want, wantErr := openManifest(c.data, key.Public())
		got, gotErr := readManifest(src, key.Public())
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %+v, %v; want %+v, %v", c.name, got, gotErr, want, wantErr)
		}
		s := streamManifest(src, key.Public())
		if (s != nil) != c.stream {
			t.Errorf("%s: streamed %v, want %v", c.name, s != nil, c.stream)
		}
		// A listed path a unit names shares the unit's string.
		if s != nil && (unsafe.StringData(s.Files[0].Path) != unsafe.StringData(s.Units[0].Traveler) ||
			unsafe.StringData(s.Files[5].Path) != unsafe.StringData(s.Units[2].Certificates[0])) {
			t.Errorf("%s: the listed paths are copies of the units'", c.name)
		}
	}
}

func TestUnitPaths(t *testing.T) {
	units := []Unit{{Traveler: "t1", Certificates: []string{"c1", "c2"}, EKCertificate: "e1"}, {Traveler: "t2"},
		{Traveler: "t3", EKCertificate: "e3"}, {Traveler: "t4", Certificates: []string{"c4"}}}
	var got []string
	next := unitPaths(units)
	for p, ok := next(); ok; p, ok = next() {
		got = append(got, p)
	}
	if want := []string{"t1", "c1", "c2", "e1", "t2", "t3", "e3", "t4", "c4"}; !reflect.DeepEqual(got, want) {
		t.Errorf("%q, want %q", got, want)
	}
}

// swapBundle serves one manifest to the first Open and another to every later read.
type swapBundle struct {
	memBundle
	first  []byte
	opened bool
}

func (s *swapBundle) Open(name string) (io.ReadCloser, error) {
	if !s.opened {
		s.opened = true
		return io.NopCloser(bytes.NewReader(s.first)), nil
	}
	return s.memBundle.Open(name)
}

// TestStreamManifestSameFile: a manifest changed between streamManifest's two passes (a forged
// body decoded, the signed one hashed) is not taken.
func TestStreamManifestSameFile(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	signed, err := signManifest(&Body{Schema: Schema, StationID: "st-1", AuditPublicKey: der}, key)
	if err != nil {
		t.Fatal(err)
	}
	forged := bytes.Replace(signed, []byte(`"st-1"`), []byte(`"st-2"`), 1)
	if bytes.Equal(forged, signed) {
		t.Fatal("nothing forged")
	}
	if b := streamManifest(memBundle{ManifestFile: signed}, key.Public()); b == nil || b.StationID != "st-1" {
		t.Fatalf("the signed manifest: %+v", b)
	}
	if b := streamManifest(&swapBundle{memBundle: memBundle{ManifestFile: signed}, first: forged}, key.Public()); b != nil {
		t.Fatalf("took %+v, decoded from a file that changed", b)
	}
}
