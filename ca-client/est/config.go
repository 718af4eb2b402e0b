package est

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/devid-station/devid/ca-client/clock"
	"github.com/devid-station/devid/ca-client/secret"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultCACertsTTL      = time.Hour
	DefaultRetryMax        = 4
	DefaultRetryWaitMin    = 200 * time.Millisecond
	DefaultRetryWaitMax    = 10 * time.Second
	DefaultPendingDeadline = 5 * time.Minute
	DefaultTimeout         = 30 * time.Second
	// defaultPendingWait is the poll interval after a 202 without a usable
	// Retry-After header.
	defaultPendingWait = 5 * time.Second
)

// Config configures a Client. The zero values of the optional fields select
// the defaults above.
type Config struct {
	// BaseURL is the CA's https URL ("https://host:port", optionally with a
	// path prefix). Operations go to <BaseURL>/.well-known/est[/<Label>]/<op>.
	BaseURL string
	// Label is the optional CA label path segment (RFC 7030 3.2.2).
	Label string
	// TrustAnchors are the roots used to authenticate the CA's TLS server
	// certificate. The system roots are added only if UseSystemRoots is set.
	TrustAnchors []*x509.Certificate
	// UseSystemRoots adds the system roots to TrustAnchors for TLS only.
	UseSystemRoots bool
	// IssuerAnchors are the roots every issued certificate must chain to.
	// Empty means TrustAnchors. System roots are never used for this.
	IssuerAnchors []*x509.Certificate
	// Auth is the HTTP authentication sent with every request: Basic,
	// HeaderSecret or nil for none. It may be combined with ClientCert.
	Auth Auth
	// ClientCert, if set, is presented for TLS client authentication. It is
	// required by Reenroll.
	ClientCert *ClientCertificate
	// CACertsTTL is how long a /cacerts answer is reused. Zero means
	// DefaultCACertsTTL; a negative value disables the cache.
	CACertsTTL time.Duration
	// RetryMax is the number of retries after the first attempt for 5xx,
	// 429, 408 and transport errors. Zero means DefaultRetryMax; a negative
	// value disables retries.
	RetryMax int
	// RetryWaitMin and RetryWaitMax bound the exponential backoff between
	// retries (with jitter). A Retry-After header is honoured but capped by
	// RetryWaitMax.
	RetryWaitMin, RetryWaitMax time.Duration
	// PendingDeadline bounds how long Enroll and Reenroll keep polling a CA
	// that answers 202 Accepted (each poll re-POSTs the same CSR after the
	// Retry-After delay, at least RetryWaitMin). If the next poll would fall
	// after the deadline, ErrPendingTimeout is returned at once.
	PendingDeadline time.Duration
	// Timeout bounds each HTTP attempt, reading the body included.
	Timeout time.Duration
	// Transport, if set, is cloned and used for all connections of this
	// Client (so a caller can tune pooling and wrap DialContext to count
	// connections). Its TLSClientConfig is replaced by one built from this
	// Config. DialTLSContext must be nil: it would bypass TrustAnchors.
	// The default is a clone of http.DefaultTransport (proxy from the
	// environment, HTTP/2 when the CA offers it) keeping up to 32 idle
	// connections to the CA. Redirects are never followed.
	Transport *http.Transport
	// Observer, if set, receives per-attempt events for metrics.
	Observer Observer
	// Logger receives debug and warning records. Nil means silence.
	Logger *slog.Logger
	// Clock, if set, replaces the system clock for the /cacerts cache,
	// Retry-After dates, 202 polling and certificate validity checks.
	Clock Clock
}

// LogValue implements slog.LogValuer: the endpoint and settings, never a
// secret.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("base_url", c.BaseURL),
		slog.String("label", c.Label),
		slog.Int("trust_anchors", len(c.TrustAnchors)),
		slog.Int("issuer_anchors", len(c.IssuerAnchors)),
		slog.Bool("system_roots", c.UseSystemRoots),
		slog.Any("auth", c.Auth),
		slog.Any("client_cert", c.ClientCert),
		slog.Int("retry_max", c.RetryMax),
		slog.Duration("timeout", c.Timeout),
	)
}

// Auth is HTTP authentication for EST requests: Basic or HeaderSecret.
type Auth interface {
	apply(h http.Header)
	secret() string
}

// Basic is HTTP basic authentication. No print path shows the password.
type Basic struct {
	User     string
	Password secret.Secret
}

func (b Basic) apply(h http.Header) {
	r := http.Request{Header: h}
	r.SetBasicAuth(b.User, b.Password.Reveal())
}

func (b Basic) secret() string { return b.Password.Reveal() }

// String implements fmt.Stringer without the password.
func (b Basic) String() string { return "Basic{User:" + b.User + " Password:[redacted]}" }

// GoString implements fmt.GoStringer without the password.
func (b Basic) GoString() string { return "est." + b.String() }

// LogValue implements slog.LogValuer without the password.
func (b Basic) LogValue() slog.Value { return slog.StringValue(b.String()) }

// MarshalJSON implements json.Marshaler without the password.
func (b Basic) MarshalJSON() ([]byte, error) { return json.Marshal(b.String()) }

// HeaderSecret sends a shared secret in a request header (for example an
// API key header in front of the CA). No print path shows the value.
type HeaderSecret struct {
	Name  string
	Value secret.Secret
}

func (s HeaderSecret) apply(h http.Header) { h.Set(s.Name, s.Value.Reveal()) }

func (s HeaderSecret) secret() string { return s.Value.Reveal() }

// String implements fmt.Stringer without the value.
func (s HeaderSecret) String() string { return "HeaderSecret{Name:" + s.Name + " Value:[redacted]}" }

// GoString implements fmt.GoStringer without the value.
func (s HeaderSecret) GoString() string { return "est." + s.String() }

// LogValue implements slog.LogValuer without the value.
func (s HeaderSecret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON implements json.Marshaler without the value.
func (s HeaderSecret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// ClientCertificate is a TLS client credential. Key may be any
// crypto.Signer, a TPM-backed one included; it must be safe for concurrent
// use if the Client is used concurrently.
type ClientCertificate struct {
	// Chain is the leaf certificate followed by any intermediates.
	Chain []*x509.Certificate
	// Key signs the TLS handshake; its public key must match Chain[0].
	Key crypto.Signer
}

// String implements fmt.Stringer; it shows the leaf subject, never the key.
func (c *ClientCertificate) String() string {
	if c == nil {
		return "<nil>"
	}
	if len(c.Chain) == 0 {
		return "ClientCertificate{}"
	}
	return "ClientCertificate{Subject:" + c.Chain[0].Subject.String() + " Key:[redacted]}"
}

// GoString implements fmt.GoStringer; it never shows the key.
func (c *ClientCertificate) GoString() string { return "&est." + c.String() }

// LogValue implements slog.LogValuer; it never shows the key.
func (c *ClientCertificate) LogValue() slog.Value { return slog.StringValue(c.String()) }

// MarshalJSON implements json.Marshaler; it never shows the key.
func (c *ClientCertificate) MarshalJSON() ([]byte, error) { return json.Marshal(c.String()) }

// Op names an EST operation; it is the last path segment of the request.
type Op string

// EST operations.
const (
	OpCACerts        Op = "cacerts"
	OpCSRAttrs       Op = "csrattrs"
	OpSimpleEnroll   Op = "simpleenroll"
	OpSimpleReenroll Op = "simplereenroll"
)

// Observer receives per-attempt events, for metrics. Methods are called from
// the goroutine running the request and must be safe for concurrent use and
// fast.
type Observer interface {
	// OnAttempt is called before each HTTP attempt (1-based).
	OnAttempt(op Op, attempt int)
	// OnResponse is called after each attempt with its HTTP status (0 for a
	// transport error) and duration.
	OnResponse(op Op, status int, d time.Duration)
	// OnRetry is called before waiting wait for the next attempt: after a
	// retryable failure (status 0 for a transport error) or a 202 Accepted.
	OnRetry(op Op, status int, wait time.Duration)
}

// Clock is the time source. Implementations must be safe for concurrent use.
type Clock interface {
	clock.Clock
	// After behaves like time.After.
	After(d time.Duration) <-chan time.Time
}
