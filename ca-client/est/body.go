package est

import (
	"bytes"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"mime"
	"strings"
)

// maxBodyLen bounds every response body read from the CA.
const maxBodyLen = 1 << 20

// encodeBase64 returns the base64 encoding of der without line breaks, as
// sent in EST request bodies.
func encodeBase64(der []byte) []byte {
	out := make([]byte, base64.StdEncoding.EncodedLen(len(der)))
	base64.StdEncoding.Encode(out, der)
	return out
}

// decodeBase64Body decodes an EST response body (RFC 8951): base64 whatever
// the Content-Transfer-Encoding header says, with CR, LF, spaces and tabs
// allowed anywhere and padding optional.
func decodeBase64Body(body []byte) ([]byte, error) {
	clean := make([]byte, 0, len(body))
	for _, b := range body {
		switch b {
		case ' ', '\t', '\r', '\n', '\v', '\f':
			continue
		}
		clean = append(clean, b)
	}
	// Padding is optional: drop it and decode the unpadded alphabet.
	clean = bytes.TrimRight(clean, "=")
	if len(clean) == 0 {
		return nil, errors.New("empty body")
	}
	out := make([]byte, base64.RawStdEncoding.DecodedLen(len(clean)))
	n, err := base64.RawStdEncoding.Decode(out, clean)
	if err != nil {
		return nil, fmt.Errorf("decoding base64 body: %w", err)
	}
	return out[:n], nil
}

// decodeBody returns the DER in an EST response body: base64 (RFC 8951), or
// raw DER from a server that ignores RFC 8951, recognised by a leading
// SEQUENCE tag and bytes outside the base64 alphabet.
func decodeBody(body []byte) ([]byte, error) {
	der, err := decodeBase64Body(body)
	if err == nil {
		return der, nil
	}
	if len(body) > 1 && body[0] == 0x30 && body[1] >= 0x80 {
		var raw asn1.RawValue
		if rest, aerr := asn1.Unmarshal(body, &raw); aerr == nil && len(rest) == 0 {
			return body, nil
		}
	}
	return nil, err
}

// mediaTypeIs reports whether the Content-Type header value names one of the
// wanted media types (parameters ignored). An empty header is accepted, as
// some servers omit it.
func mediaTypeIs(header string, want ...string) bool {
	if strings.TrimSpace(header) == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(header)
	if err != nil {
		return false
	}
	for _, w := range want {
		if strings.EqualFold(mt, w) {
			return true
		}
	}
	return false
}

// sanitizeMessage reduces a CA's error body to one line of printable ASCII,
// removes the given secrets and truncates it to maxMessageLen bytes. A
// secret that the redaction marker itself completes (a secret "]abc" after
// "[redacted]" in "]abc]abc") leaves nothing of the body: the message is the
// marker alone.
func sanitizeMessage(body []byte, secrets []string) string {
	var b strings.Builder
	for _, c := range []byte(redact(string(body), secrets)) {
		switch {
		case c >= 0x20 && c < 0x7f:
			b.WriteByte(c)
		case c == '\r' || c == '\n' || c == '\t':
			b.WriteByte(' ')
		}
	}
	s := redact(strings.Join(strings.Fields(redact(b.String(), secrets)), " "), secrets)
	if len(s) > maxMessageLen {
		s = s[:maxMessageLen]
	}
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			return redactedMarker
		}
	}
	return s
}

// redactedMarker stands where a secret was.
const redactedMarker = "[redacted]"

// redact replaces every occurrence of the non-empty secrets in s.
func redact(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, redactedMarker)
		}
	}
	return s
}
