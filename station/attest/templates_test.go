package attest

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm/tcgek"
	"github.com/google/go-tpm/tpm2"
)

// parseFull is parseAny without the template memo: go-tpm decodes raw in full, and its
// encoding must be raw again.
func parseFull(raw []byte) (*Key, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](raw)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(tpm2.Marshal(pub), raw) {
		return nil, errors.New("not canonical")
	}
	h, err := pub.NameAlg.Hash()
	if err != nil || !h.Available() {
		return nil, errors.New("name algorithm")
	}
	pk, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, err
	}
	hash := h.New()
	hash.Write(raw)
	return &Key{Public: *pub, Raw: raw, PublicKey: pk, Name: hash.Sum([]byte{byte(pub.NameAlg >> 8), byte(pub.NameAlg)})}, nil
}

// TestTemplateMemoMatchesFullParse checks that, with the templates of an ECC EK, an RSA EK
// and a DevID key remembered, parseAny accepts exactly the public areas that decoding in full
// accepts, with the same key, Name and EK type: the seeds, and mutations of them that cut,
// extend or change bytes (mostly in the unique field and its size fields, where the memo
// decodes by itself).
func TestTemplateMemoMatchesFullParse(t *testing.T) {
	seeds := [][]byte{
		eccPublic(t, tpm2.ECCEKTemplate, &newKey(t).PublicKey),
		rsaEKPublic(rsaPublic(t)),
		eccPublic(t, devIDTemplate(), &newKey(t).PublicKey),
	}
	for _, s := range seeds {
		if _, tmpl, err := parseAny(s); err != nil || tmpl == nil {
			t.Fatalf("seed: template %v, %v", tmpl, err)
		}
		if _, _, ok := parseMemo(s); !ok {
			t.Fatal("a seed is not parsed through its remembered template")
		}
	}
	inputs := [][]byte{}
	for _, s := range seeds {
		for n := 0; n <= len(s)+3; n++ {
			inputs = append(inputs, append(bytes.Clone(s[:min(n, len(s))]), make([]byte, max(0, n-len(s)))...))
		}
		for i := range s {
			for _, d := range []byte{1, 0x80, 0xff} {
				b := bytes.Clone(s)
				b[i] += d
				inputs = append(inputs, b)
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		s := seeds[rng.IntN(len(seeds))]
		b := bytes.Clone(s)
		for range 1 + rng.IntN(3) {
			i := len(b) - 1 - rng.IntN(min(len(b), 140))
			b[i] = byte(rng.IntN(256))
		}
		if rng.IntN(4) == 0 {
			b = b[:len(b)-rng.IntN(8)]
		}
		inputs = append(inputs, b)
	}
	hits := 0
	for _, raw := range inputs {
		if _, _, ok := parseMemo(raw); ok {
			hits++
		}
		want, wantErr := parseFull(raw)
		got, tmpl, err := parseAny(raw)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("%x: parseAny error %v, full decoding %v", raw, err, wantErr)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("%x: error does not wrap ErrMalformed: %v", raw, err)
			}
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%x: parseAny %+v, full decoding %+v", raw, got, want)
		}
		if tmpl != nil {
			typ, ok := tcgek.Match(want.Public)
			if ok != tmpl.ekOK || typ.Name != tmpl.ekType.Name {
				t.Fatalf("%x: template's EK type %v %v, tcgek.Match %v %v", raw, tmpl.ekType.Name, tmpl.ekOK, typ.Name, ok)
			}
		}
	}
	if hits < len(inputs)/4 {
		t.Fatalf("only %d of %d inputs went through a remembered template", hits, len(inputs))
	}
}

// TestTemplateMemoStillChecks checks the key checks on public areas parsed through a
// remembered template: a trailing byte, a unique field whose size says more or less than there
// is, another key's point for the EK, and a DevID template with decrypt set are refused.
func TestTemplateMemoStillChecks(t *testing.T) {
	eccKey, ca := newKey(t), newKey(t)
	cert := selfSigned(t, &eccKey.PublicKey, ca)
	ek := eccPublic(t, tpm2.ECCEKTemplate, &eccKey.PublicKey)
	dev := eccPublic(t, devIDTemplate(), &newKey(t).PublicKey)
	if _, _, err := CheckEK(ek, cert); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckDevID(dev); err != nil {
		t.Fatal(err)
	}
	longY := bytes.Clone(ek)
	longY[len(longY)-34]++ // Y's size: one more byte than there is
	shortY := bytes.Clone(ek)
	shortY[len(shortY)-33]-- // Y's size: one less, leaving a trailing byte
	decrypt := devIDTemplate()
	decrypt.ObjectAttributes.Decrypt = true
	for name, c := range map[string]struct {
		err  error
		call func() error
	}{
		"EK with a trailing byte":      {ErrMalformed, func() error { _, _, err := CheckEK(append(bytes.Clone(ek), 0), cert); return err }},
		"EK whose Y size is too long":  {ErrMalformed, func() error { _, _, err := CheckEK(longY, cert); return err }},
		"EK whose Y size is too short": {ErrMalformed, func() error { _, _, err := CheckEK(shortY, cert); return err }},
		"another key's point as the EK": {ErrEKMismatch, func() error {
			_, _, err := CheckEK(eccPublic(t, tpm2.ECCEKTemplate, &newKey(t).PublicKey), cert)
			return err
		}},
		"DevID key template as the EK": {ErrEKTemplate, func() error {
			_, _, err := CheckEK(eccPublic(t, devIDTemplate(), &eccKey.PublicKey), cert)
			return err
		}},
		"DevID key with a trailing byte": {ErrMalformed, func() error { _, err := CheckDevID(append(bytes.Clone(dev), 0)); return err }},
		"DevID key with decrypt set": {ErrKeyAttributes, func() error {
			_, err := CheckDevID(eccPublic(t, decrypt, &newKey(t).PublicKey))
			return err
		}},
	} {
		if err := c.call(); !errors.Is(err, c.err) {
			t.Errorf("%s: %v, want %v", name, err, c.err)
		}
	}
}
