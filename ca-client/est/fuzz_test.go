package est

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// FuzzParseCertsOnly checks that no input makes the PKCS#7 parser panic and
// that success always yields certificates.
func FuzzParseCertsOnly(f *testing.F) {
	pki := newTestPKI(f)
	leaf := pki.issuing.leaf(f, "u", newECKey(f).Public())
	good := certsOnly(f, leaf, pki.issuing.cert, pki.root.cert)
	for _, seed := range [][]byte{
		good,
		toIndefinite(f, good),
		good[:len(good)-7],
		toIndefinite(f, good)[:len(good)/2],
		leaf.Raw,
		certsOnlyRaw(f, nil),
		certsOnlyRaw(f, []byte{0x30, 0x00}),
		certsOnlyRaw(f, []byte{0xa1, 0x00, 0x30, 0x80, 0x00, 0x00}),
		{0x30, 0x80},
		{0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02, 0xa0, 0x80, 0x30, 0x80},
		{},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := parseCertsOnly(data)
		if err != nil {
			return
		}
		if len(certs) == 0 || len(certs) > maxCerts {
			t.Fatalf("success with %d certificates", len(certs))
		}
		for i, c := range certs {
			if c == nil || len(c.Raw) == 0 {
				t.Fatalf("certificate %d is empty", i)
			}
		}
	})
}

// FuzzDecodeBase64Body checks that no body makes the decoder panic, and that
// any data survives base64 with CRLF or LF line breaks.
func FuzzDecodeBase64Body(f *testing.F) {
	for _, seed := range []string{
		"MIIB", "MIIB\r\nMIIB\r\n", "QUFBQQ==", "QUFBQQ", "QUFBQQ=", "QQ==\r\n", " \t\r\n", "",
		"QUF*QQ", "=QUFB", "QU\x00FB", "\xff\xfe", "MA==MA==",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if out, err := decodeBase64Body(data); err == nil && (len(out) == 0 || len(out) > len(data)) {
			t.Fatalf("decoded %d bytes from %d", len(out), len(data))
		}
		if out, err := decodeBody(data); err == nil && len(out) == 0 {
			t.Fatal("decodeBody succeeded with no data")
		}
		if len(data) == 0 {
			return
		}
		for _, eol := range []string{"\r\n", "\n"} {
			got, err := decodeBase64Body(base64Lines(data, eol))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("round trip with %q: got %x, %v; want %x", eol, got, err, data)
			}
		}
	})
}

// FuzzSanitizeMessage checks what the client keeps of a CA's error body: one line of
// printable ASCII within maxMessageLen bytes that never holds the request's secret.
func FuzzSanitizeMessage(f *testing.F) {
	f.Add([]byte("bad request: password s3cret-pw refused\r\n"), "s3cret-pw")
	f.Add([]byte("s3cret\x00-pw s3cr\ret-pw"), "s3cret-pw")
	f.Add([]byte(strings.Repeat("x", 300)+"token"), "token")
	f.Fuzz(func(t *testing.T, body []byte, secret string) {
		got := sanitizeMessage(body, []string{secret})
		if len(got) > maxMessageLen {
			t.Fatalf("%d bytes kept", len(got))
		}
		for i := 0; i < len(got); i++ {
			if got[i] < 0x20 || got[i] >= 0x7f {
				t.Fatalf("byte %#x kept at %d", got[i], i)
			}
		}
		// A secret found in the replacement itself, or shorter than a word, proves nothing.
		if len(secret) >= 4 && !strings.Contains("[redacted]", secret) && strings.Contains(got, secret) {
			t.Fatalf("message %q holds the secret", got)
		}
	})
}

// FuzzParseRetryAfter reads arbitrary Retry-After values from a CA: a wait it honours lies
// between zero and maxRetryAfter.
func FuzzParseRetryAfter(f *testing.F) {
	for _, v := range []string{"120", " 5 ", "Wed, 21 Oct 2015 07:28:00 GMT", "99999999999999999999", "-1", ""} {
		f.Add(v)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		if wait, ok := parseRetryAfter(v, now); ok && (wait < 0 || wait > maxRetryAfter) {
			t.Fatalf("Retry-After %q: wait %s", v, wait)
		} else if !ok && wait != 0 {
			t.Fatalf("Retry-After %q refused with a wait of %s", v, wait)
		}
	})
}
