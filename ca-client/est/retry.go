package est

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxRetryAfter bounds a parsed Retry-After so arithmetic cannot overflow.
const maxRetryAfter = 24 * time.Hour

// checkRetry is the retryablehttp CheckRetry: retry transport errors and
// retryable statuses, never after the context ended, a TLS trust failure or
// an oversized body.
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		if errors.Is(err, errBodyTooLarge) || permanentTLSError(err) {
			return false, nil
		}
		return true, nil
	}
	return retryableStatus(resp.StatusCode), nil
}

// retryableStatus reports whether an HTTP status is worth retrying: 408,
// 429 and 5xx except 501 Not Implemented.
func retryableStatus(status int) bool {
	switch {
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests:
		return true
	case status == http.StatusNotImplemented:
		return false
	default:
		return status >= 500 && status <= 599
	}
}

// permanentTLSError reports whether err is a TLS failure that a retry
// cannot fix: a server certificate that does not verify against the trust
// anchors. (Alerts sent by the server, such as a refused client
// certificate, are not distinguishable from transient failures and are
// retried.)
func permanentTLSError(err error) bool {
	var (
		verr  *tls.CertificateVerificationError
		uaerr x509.UnknownAuthorityError
		herr  x509.HostnameError
		cierr x509.CertificateInvalidError
	)
	return errors.As(err, &verr) || errors.As(err, &uaerr) || errors.As(err, &herr) || errors.As(err, &cierr)
}

// parseRetryAfter parses a Retry-After value, delay-seconds or HTTP-date
// (relative to now), into a non-negative duration.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseUint(v, 10, 64); err == nil {
		if n > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), maxRetryAfter), true
}

// expBackoff returns minWait*2^attempt capped by maxWait.
func expBackoff(minWait, maxWait time.Duration, attempt int) time.Duration {
	d := minWait
	for range attempt {
		if d >= maxWait/2 {
			return maxWait
		}
		d *= 2
	}
	return min(d, maxWait)
}

// jitter returns a random duration in [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// isDERSequence reports whether der is exactly one DER SEQUENCE.
func isDERSequence(der []byte) bool {
	var raw asn1.RawValue
	rest, err := asn1.Unmarshal(der, &raw)
	return err == nil && len(rest) == 0 && raw.Class == asn1.ClassUniversal && raw.Tag == asn1.TagSequence
}

// validHeaderName reports whether name is a non-empty RFC 9110 token.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}
