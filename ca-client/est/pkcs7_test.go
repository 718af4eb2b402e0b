package est

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"testing"
)

// toIndefinite re-encodes the outer SEQUENCE of der with an indefinite
// length, as BER-emitting CMS libraries do.
func toIndefinite(t testing.TB, der []byte) []byte {
	t.Helper()
	if der[0] != 0x30 || der[1] < 0x80 {
		t.Fatal("expected a SEQUENCE with a long-form length")
	}
	hdr := 2 + int(der[1]&0x7f)
	out := append([]byte{0x30, 0x80}, der[hdr:]...)
	return append(out, 0, 0)
}

func TestParseCertsOnly(t *testing.T) {
	pki := newTestPKI(t)
	leaf := pki.issuing.leaf(t, "u", newECKey(t).Public())
	good := certsOnly(t, leaf, pki.issuing.cert)
	tests := []struct {
		name    string
		in      []byte
		want    []*x509.Certificate
		wantErr bool
	}{
		{name: "DER", in: good, want: []*x509.Certificate{leaf, pki.issuing.cert}},
		{name: "BER indefinite length", in: toIndefinite(t, good), want: []*x509.Certificate{leaf, pki.issuing.cert}},
		{name: "empty", in: nil, wantErr: true},
		{name: "trailing data", in: append(append([]byte(nil), good...), 0), wantErr: true},
		{name: "truncated", in: good[:len(good)/2], wantErr: true},
		{name: "a certificate, not PKCS#7", in: leaf.Raw, wantErr: true},
		{name: "no certificates", in: certsOnlyRaw(t, nil), wantErr: true},
		{name: "corrupt certificate", in: certsOnlyRaw(t, []byte{0x30, 0x03, 0x02, 0x01, 0x01}), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCertsOnly(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d certificates, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if !got[i].Equal(tc.want[i]) {
					t.Errorf("certificate %d differs", i)
				}
			}
		})
	}
}

// certsOnlyRaw builds a certs-only SignedData whose certificate set holds
// the given raw bytes.
func certsOnlyRaw(t testing.TB, set []byte) []byte {
	t.Helper()
	tlv := func(tag byte, content ...[]byte) []byte {
		body := bytes.Join(content, nil)
		if len(body) > 0xffff {
			t.Fatal("too long")
		}
		return append([]byte{tag, 0x82, byte(len(body) >> 8), byte(len(body))}, body...)
	}
	oidData := []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01}
	oidSigned := []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02}
	sd := tlv(0x30,
		[]byte{0x02, 0x01, 0x01}, // version
		tlv(0x31),                // digestAlgorithms
		tlv(0x30, oidData),       // encapContentInfo
		tlv(0xa0, set),           // certificates
		tlv(0x31),                // signerInfos
	)
	return tlv(0x30, oidSigned, tlv(0xa0, sd))
}

func TestDecodeBase64Body(t *testing.T) {
	der := bytes.Repeat([]byte{0x30, 0x82, 0xff, 0x00, 0x7f}, 40)
	std := base64.StdEncoding.EncodeToString(der[:len(der)-1]) // ends with padding
	tests := []struct {
		name    string
		in      string
		want    []byte
		wantErr bool
	}{
		{name: "plain", in: base64.StdEncoding.EncodeToString(der), want: der},
		{name: "CRLF lines", in: string(base64Lines(der, "\r\n")), want: der},
		{name: "LF lines", in: string(base64Lines(der, "\n")), want: der},
		{name: "padding", in: std, want: der[:len(der)-1]},
		{name: "padding dropped", in: std[:len(std)-1], want: der[:len(der)-1]},
		{name: "spaces and tabs", in: " \t" + std[:10] + " \r\n\t" + std[10:] + "\n", want: der[:len(der)-1]},
		{name: "empty", in: "\r\n", wantErr: true},
		{name: "bad character", in: "QUFB*QUFB", wantErr: true},
		{name: "URL alphabet", in: "-_-_", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeBase64Body([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("got %x, want %x", got, tc.want)
			}
		})
	}
}

func TestSanitizeMessage(t *testing.T) {
	got := sanitizeMessage([]byte("  bad\r\nrequest\x00\x1b[31m token=abc123 \xff"+string(bytes.Repeat([]byte("x"), 400))), []string{"abc123"})
	if len(got) != maxMessageLen {
		t.Errorf("len = %d, want %d", len(got), maxMessageLen)
	}
	want := "bad request[31m token=[redacted] x"
	if got[:len(want)] != want {
		t.Errorf("got %q, want prefix %q", got, want)
	}
}
