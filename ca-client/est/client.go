// Package est is an EST client (RFC 7030 with the RFC 8951 clarifications)
// used by the station to enroll IDevID and LDevID certificates at a CA.
//
// It sends base64 PKCS#10 requests with Content-Type application/pkcs10 and
// Content-Transfer-Encoding base64, accepts base64 certs-only PKCS#7 answers
// with any line breaks, polls 202 Accepted answers, retries 5xx, 429, 408 and
// transport errors with capped exponential backoff and jitter (honouring
// Retry-After), authenticates by HTTP basic, a header secret and/or a TLS
// client certificate from any crypto.Signer, and verifies every issued
// certificate (key equals the CSR key, not a CA, chains to the configured
// issuer anchors) before returning it. Secrets never appear in errors or logs.
package est

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/devid-station/devid/ca-client/clock"
)

// Log attribute keys.
const (
	logKeyOp       = "op"
	logKeyAttempt  = "attempt"
	logKeyStatus   = "status"
	logKeyDuration = "duration"
	logKeyWait     = "wait"
	logKeyError    = "error"
)

var labelRE = regexp.MustCompile(`^[A-Za-z0-9._~-]+$`)

// Client talks to one EST CA. It is safe for concurrent use; connections are
// kept alive and shared between calls.
type Client struct {
	prefix      string // <BaseURL>/.well-known/est[/<label>]
	transport   *http.Transport
	timeout     time.Duration
	retryMax    int
	waitMin     time.Duration
	waitMax     time.Duration
	pendingMax  time.Duration
	caTTL       time.Duration
	issuerRoots *x509.CertPool
	auth        Auth
	hasCert     bool
	secrets     []string
	obs         Observer
	log         *slog.Logger
	clock       Clock

	mu        sync.Mutex
	caCerts   []*x509.Certificate
	caFetched time.Time
	caFetch   *caFetch
}

// caFetch is one /cacerts request shared by concurrent callers.
type caFetch struct {
	done  chan struct{}
	certs []*x509.Certificate
	err   error
}

// Result is an issued certificate, verified.
type Result struct {
	// Leaf is the issued certificate; its key is the CSR's key.
	Leaf *x509.Certificate
	// Chain holds the intermediates from Leaf up to, not including, the
	// issuer anchor, in order.
	Chain []*x509.Certificate
	// Attempts counts the HTTP attempts made, retries and polls included.
	Attempts int
	// Pending counts the 202 Accepted answers seen.
	Pending int
}

// New validates cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	prefix, err := endpointPrefix(cfg)
	if err != nil {
		return nil, err
	}
	tlsRoots, issuerRoots, err := trustPools(cfg)
	if err != nil {
		return nil, err
	}
	tr, err := newTransport(cfg, tlsRoots)
	if err != nil {
		return nil, err
	}

	c := &Client{
		prefix:      prefix,
		transport:   tr,
		timeout:     orDefault(cfg.Timeout, DefaultTimeout),
		retryMax:    cfg.RetryMax,
		waitMin:     orDefault(cfg.RetryWaitMin, DefaultRetryWaitMin),
		waitMax:     orDefault(cfg.RetryWaitMax, DefaultRetryWaitMax),
		pendingMax:  orDefault(cfg.PendingDeadline, DefaultPendingDeadline),
		caTTL:       orDefault(cfg.CACertsTTL, DefaultCACertsTTL),
		issuerRoots: issuerRoots,
		auth:        cfg.Auth,
		hasCert:     cfg.ClientCert != nil,
		obs:         cfg.Observer,
		log:         cfg.Logger,
		clock:       cfg.Clock,
	}
	switch {
	case c.retryMax == 0:
		c.retryMax = DefaultRetryMax
	case c.retryMax < 0:
		c.retryMax = 0
	}
	if cfg.Timeout < 0 || cfg.RetryWaitMin < 0 || cfg.RetryWaitMax < 0 || cfg.PendingDeadline < 0 {
		return nil, errors.New("est: negative Timeout, RetryWaitMin, RetryWaitMax or PendingDeadline")
	}
	if c.waitMin > c.waitMax {
		return nil, errors.New("est: RetryWaitMin exceeds RetryWaitMax")
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.clock == nil {
		c.clock = clock.System{}
	}
	if c.secrets, err = authSecrets(cfg.Auth); err != nil {
		return nil, err
	}
	return c, nil
}

// endpointPrefix is the URL of the CA's EST endpoints: BaseURL's /.well-known/est[/label].
func endpointPrefix(cfg Config) (string, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil {
		return "", errors.New("est: BaseURL does not parse")
	}
	switch {
	case u.Scheme != "https" || u.Host == "":
		return "", errors.New("est: BaseURL must be an https URL with a host")
	case u.User != nil:
		return "", errors.New("est: BaseURL must not carry credentials; use Config.Auth")
	case u.RawQuery != "" || u.Fragment != "":
		return "", errors.New("est: BaseURL must not have a query or fragment")
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	prefix := u.String() + "/.well-known/est"
	if cfg.Label != "" {
		if !labelRE.MatchString(cfg.Label) {
			return "", fmt.Errorf("est: label %q is not a valid path segment", cfg.Label)
		}
		prefix += "/" + cfg.Label
	}
	return prefix, nil
}

// trustPools returns the roots the TLS server must chain to and those issued certificates
// must chain to.
func trustPools(cfg Config) (tlsRoots, issuerRoots *x509.CertPool, err error) {
	if cfg.UseSystemRoots {
		if tlsRoots, err = x509.SystemCertPool(); err != nil {
			return nil, nil, fmt.Errorf("est: loading system roots: %w", err)
		}
	} else {
		if len(cfg.TrustAnchors) == 0 {
			return nil, nil, errors.New("est: no TLS trust anchors (set TrustAnchors or UseSystemRoots)")
		}
		tlsRoots = x509.NewCertPool()
	}
	for _, c := range cfg.TrustAnchors {
		tlsRoots.AddCert(c)
	}
	issuer := cfg.IssuerAnchors
	if len(issuer) == 0 {
		issuer = cfg.TrustAnchors
	}
	if len(issuer) == 0 {
		return nil, nil, errors.New("est: no issuer trust anchors (set IssuerAnchors or TrustAnchors)")
	}
	issuerRoots = x509.NewCertPool()
	for _, c := range issuer {
		issuerRoots.AddCert(c)
	}
	return tlsRoots, issuerRoots, nil
}

// newTransport returns the HTTP transport: cfg.Transport or the default one, with TLS to
// tlsRoots and the client certificate if any.
func newTransport(cfg Config, tlsRoots *x509.CertPool) (*http.Transport, error) {
	tlsCfg := &tls.Config{RootCAs: tlsRoots, MinVersion: tls.VersionTLS12}
	if cc := cfg.ClientCert; cc != nil {
		tc, err := cc.tlsCertificate()
		if err != nil {
			return nil, err
		}
		tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return tc, nil
		}
	}

	var tr *http.Transport
	if cfg.Transport != nil {
		//lint:ignore SA1019 a deprecated DialTLS would still bypass the trust anchors
		if cfg.Transport.DialTLSContext != nil || cfg.Transport.DialTLS != nil {
			return nil, errors.New("est: Transport.DialTLSContext would bypass the trust anchors; wrap DialContext instead")
		}
		tr = cfg.Transport.Clone()
	} else {
		tr = http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 32
	}
	tr.TLSClientConfig = tlsCfg
	return tr, nil
}

// authSecrets checks auth and returns the strings that must never be logged: the password or
// header value, and the basic header value.
func authSecrets(auth Auth) ([]string, error) {
	switch a := auth.(type) {
	case nil:
		return nil, nil
	case Basic:
		// The encoded header value is as secret as the password.
		pw := a.Password.Reveal()
		return []string{pw, base64.StdEncoding.EncodeToString([]byte(a.User + ":" + pw))}, nil
	case HeaderSecret:
		if !validHeaderName(a.Name) {
			return nil, errors.New("est: HeaderSecret.Name is not a valid header name")
		}
		return []string{a.Value.Reveal()}, nil
	default:
		return nil, errors.New("est: Auth must be a Basic or HeaderSecret value")
	}
}

func (cc *ClientCertificate) tlsCertificate() (*tls.Certificate, error) {
	if len(cc.Chain) == 0 || cc.Key == nil {
		return nil, errors.New("est: ClientCert needs a certificate chain and a key")
	}
	pub, ok := cc.Key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cc.Chain[0].PublicKey) {
		return nil, errors.New("est: ClientCert key does not match its certificate")
	}
	tc := &tls.Certificate{PrivateKey: cc.Key, Leaf: cc.Chain[0]}
	for _, c := range cc.Chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc, nil
}

// CloseIdleConnections closes the Client's idle keep-alive connections, for
// shutdown. The Client stays usable.
func (c *Client) CloseIdleConnections() {
	c.transport.CloseIdleConnections()
}

// CACerts returns the CA certificates from /cacerts, cached for
// Config.CACertsTTL. Concurrent callers share one request.
func (c *Client) CACerts(ctx context.Context) ([]*x509.Certificate, error) {
	for {
		c.mu.Lock()
		if c.caCerts != nil && c.clock.Now().Before(c.caFetched.Add(c.caTTL)) {
			certs := slices.Clone(c.caCerts)
			c.mu.Unlock()
			return certs, nil
		}
		if f := c.caFetch; f != nil {
			c.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, ctxError(OpCACerts, ctx)
			}
			if f.err != nil && isContextError(f.err) && ctx.Err() == nil {
				continue // the leader gave up; try again with our context
			}
			return slices.Clone(f.certs), f.err
		}
		f := &caFetch{done: make(chan struct{})}
		c.caFetch = f
		c.mu.Unlock()

		f.certs, f.err = c.fetchCACerts(ctx)

		c.mu.Lock()
		c.caFetch = nil
		if f.err == nil && c.caTTL > 0 {
			c.caCerts, c.caFetched = f.certs, c.clock.Now()
		}
		c.mu.Unlock()
		close(f.done)
		return slices.Clone(f.certs), f.err
	}
}

// cachedCACerts returns the cached /cacerts answer, even if expired.
func (c *Client) cachedCACerts() []*x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.caCerts
}

func (c *Client) fetchCACerts(ctx context.Context) ([]*x509.Certificate, error) {
	cl := &call{c: c, op: OpCACerts}
	resp, err := c.do(ctx, cl, http.MethodGet, nil)
	if err != nil {
		return nil, err
	}
	if resp.status != http.StatusOK {
		return nil, c.statusError(cl, resp)
	}
	if !mediaTypeIs(resp.header.Get("Content-Type"), "application/pkcs7-mime", "application/x-pkcs7-mime") {
		return nil, fmt.Errorf("est cacerts: unexpected content type: %w", ErrBadResponse)
	}
	der, err := decodeBody(resp.body)
	if err != nil {
		return nil, fmt.Errorf("est cacerts: %w: %w", ErrBadResponse, err)
	}
	certs, err := parseCertsOnly(der)
	if err != nil {
		return nil, fmt.Errorf("est cacerts: %w: %w", ErrBadResponse, err)
	}
	return certs, nil
}

// CSRAttrs returns the DER CSR attributes (RFC 7030 4.5.2, the
// base64-decoded body). A CA without attributes (204 or 404, or an empty
// 200) yields nil, nil.
func (c *Client) CSRAttrs(ctx context.Context) ([]byte, error) {
	cl := &call{c: c, op: OpCSRAttrs}
	resp, err := c.do(ctx, cl, http.MethodGet, nil)
	if err != nil {
		return nil, err
	}
	switch resp.status {
	case http.StatusOK:
	case http.StatusNoContent, http.StatusNotFound:
		return nil, nil
	default:
		return nil, c.statusError(cl, resp)
	}
	if len(bytes.TrimSpace(resp.body)) == 0 {
		return nil, nil
	}
	if !mediaTypeIs(resp.header.Get("Content-Type"), "application/csrattrs") {
		return nil, fmt.Errorf("est csrattrs: unexpected content type: %w", ErrBadResponse)
	}
	der, err := decodeBody(resp.body)
	if err != nil {
		return nil, fmt.Errorf("est csrattrs: %w: %w", ErrBadResponse, err)
	}
	if !isDERSequence(der) {
		return nil, fmt.Errorf("est csrattrs: %w: body is not a DER SEQUENCE", ErrBadResponse)
	}
	return der, nil
}

// Enroll sends the DER PKCS#10 csrDER to /simpleenroll and returns the
// verified certificate. A 202 Accepted is polled until
// Config.PendingDeadline.
func (c *Client) Enroll(ctx context.Context, csrDER []byte) (*Result, error) {
	return c.enroll(ctx, OpSimpleEnroll, csrDER)
}

// Reenroll is Enroll against /simplereenroll; it needs Config.ClientCert
// (the certificate being renewed).
func (c *Client) Reenroll(ctx context.Context, csrDER []byte) (*Result, error) {
	if !c.hasCert {
		return nil, ErrNoClientCert
	}
	return c.enroll(ctx, OpSimpleReenroll, csrDER)
}

func (c *Client) enroll(ctx context.Context, op Op, csrDER []byte) (*Result, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("est %s: %w: %w", op, ErrInvalidCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("est %s: %w: %w", op, ErrInvalidCSR, err)
	}
	body := encodeBase64(csrDER)
	deadline := c.clock.Now().Add(c.pendingMax)
	cl := &call{c: c, ctx: ctx, op: op}
	for {
		resp, err := c.do(ctx, cl, http.MethodPost, body)
		if err != nil {
			return nil, err
		}
		switch resp.status {
		case http.StatusOK:
			res, err := c.verifyIssued(ctx, op, csr.PublicKey, resp)
			if err != nil {
				return nil, err
			}
			res.Attempts, res.Pending = cl.attempts, cl.pending
			return res, nil
		case http.StatusAccepted:
			cl.pending++
			wait, ok := parseRetryAfter(resp.header.Get("Retry-After"), c.clock.Now())
			if !ok {
				wait = defaultPendingWait
			}
			wait = max(wait, c.waitMin)
			if c.clock.Now().Add(wait).After(deadline) {
				return nil, fmt.Errorf("est %s: %d pending answers in %s: %w", op, cl.pending, c.pendingMax, ErrPendingTimeout)
			}
			c.onRetry(op, http.StatusAccepted, wait)
			select {
			case <-c.clock.After(wait):
			case <-ctx.Done():
				return nil, ctxError(op, ctx)
			}
		default:
			return nil, c.statusError(cl, resp)
		}
	}
}

// verifyIssued checks a certs-only answer to an enrollment and returns the
// leaf and its chain.
func (c *Client) verifyIssued(ctx context.Context, op Op, csrKey crypto.PublicKey, resp *response) (*Result, error) {
	var certs []*x509.Certificate
	bad := func(format string, a ...any) error {
		return &BadResponseError{Op: op, Reason: fmt.Sprintf(format, a...), Certificates: certs}
	}
	if !mediaTypeIs(resp.header.Get("Content-Type"), "application/pkcs7-mime", "application/x-pkcs7-mime") {
		return nil, bad("unexpected content type")
	}
	der, err := decodeBody(resp.body)
	if err != nil {
		return nil, bad("%v", err)
	}
	parsed, err := parseCertsOnly(der)
	if err != nil {
		return nil, bad("%v", err)
	}
	certs = parsed
	want, ok := csrKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return nil, fmt.Errorf("est %s: %w: unsupported CSR key type %T", op, ErrInvalidCSR, csrKey)
	}
	var leaf *x509.Certificate
	var others []*x509.Certificate
	for _, cert := range certs {
		if leaf == nil && want.Equal(cert.PublicKey) {
			leaf = cert
			continue
		}
		others = append(others, cert)
	}
	if leaf == nil {
		return nil, bad("issued certificate's key differs from the CSR key")
	}
	if (leaf.BasicConstraintsValid && leaf.IsCA) || leaf.KeyUsage&x509.KeyUsageCertSign != 0 {
		return nil, bad("issued certificate is a CA certificate")
	}
	chains, verr := c.verifyChain(leaf, others, c.cachedCACerts())
	if verr != nil {
		// The intermediates may be only in a fresh /cacerts answer.
		caCerts, err := c.CACerts(ctx)
		if err != nil {
			return nil, fmt.Errorf("est %s: fetching CA certificates to verify the issued certificate: %w", op, err)
		}
		if chains, verr = c.verifyChain(leaf, others, caCerts); verr != nil {
			return nil, bad("issued certificate does not chain to the issuer trust anchors: %v", verr)
		}
	}
	path := chains[0]
	return &Result{Leaf: leaf, Chain: slices.Clone(path[1 : len(path)-1])}, nil
}

func (c *Client) verifyChain(leaf *x509.Certificate, extra ...[]*x509.Certificate) ([][]*x509.Certificate, error) {
	inter := x509.NewCertPool()
	for _, set := range extra {
		for _, cert := range set {
			inter.AddCert(cert)
		}
	}
	return leaf.Verify(x509.VerifyOptions{
		Roots:         c.issuerRoots,
		Intermediates: inter,
		CurrentTime:   c.clock.Now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
}

// statusError maps a final non-success status to ErrUnavailable (retryable
// statuses, after the retries ran out) or a *RejectedError.
func (c *Client) statusError(cl *call, resp *response) error {
	if retryableStatus(resp.status) {
		return fmt.Errorf("est %s: giving up after %d attempts, last HTTP %d: %w", cl.op, cl.attempts, resp.status, ErrUnavailable)
	}
	return fmt.Errorf("est %s: %w", cl.op, &RejectedError{Status: resp.status, Message: sanitizeMessage(resp.body, c.secrets)})
}

func (c *Client) onRetry(op Op, status int, wait time.Duration) {
	if status == http.StatusAccepted {
		c.log.Info("est pending", logKeyOp, string(op), logKeyWait, wait)
	} else {
		c.log.Warn("est retry", logKeyOp, string(op), logKeyStatus, status, logKeyWait, wait)
	}
	if c.obs != nil {
		c.obs.OnRetry(op, status, wait)
	}
}

// response is a CA answer with its body read.
type response struct {
	status int
	header http.Header
	body   []byte
}

// call is the state of one Client operation across attempts and polls. It
// is used by one goroutine at a time.
type call struct {
	c        *Client
	ctx      context.Context // the caller's, for its retry notice
	op       Op
	attempts int
	pending  int
	resp     *response
}

// do performs one logical request with retries and returns the final
// answer. Errors are ErrUnavailable or a context error.
func (c *Client) do(ctx context.Context, cl *call, method string, body []byte) (*response, error) {
	var raw any
	if body != nil {
		raw = body
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, method, c.prefix+"/"+string(cl.op), raw)
	if err != nil {
		return nil, fmt.Errorf("est %s: building request: %w", cl.op, err)
	}
	switch cl.op {
	case OpCSRAttrs:
		req.Header.Set("Accept", "application/csrattrs")
	default:
		req.Header.Set("Accept", "application/pkcs7-mime")
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/pkcs10")
		req.Header.Set("Content-Transfer-Encoding", "base64")
	}
	if c.auth != nil {
		c.auth.apply(req.Header)
	}
	cl.resp = nil
	req.SetResponseHandler(cl.readBody)

	rc := &retryablehttp.Client{
		HTTPClient: &http.Client{
			// observedTransport does not forward CloseIdleConnections, so
			// a failing call cannot flush the connections of the others.
			Transport: &observedTransport{rt: c.transport, cl: cl},
			Timeout:   c.timeout,
			// Never follow redirects: a header secret would follow too.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		Logger:       nil, // we log through slog ourselves
		RetryWaitMin: c.waitMin,
		RetryWaitMax: c.waitMax,
		RetryMax:     c.retryMax,
		CheckRetry:   checkRetry,
		Backoff:      cl.backoff,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
	}
	resp, err := rc.Do(req)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		switch {
		case ctx.Err() != nil:
			return nil, ctxError(cl.op, ctx)
		case errors.Is(err, errBodyTooLarge):
			return nil, fmt.Errorf("est %s: %w: %w", cl.op, ErrBadResponse, errBodyTooLarge)
		}
		c.log.Warn("est request failed", logKeyOp, string(cl.op), logKeyAttempt, cl.attempts, logKeyError, err.Error())
		return nil, fmt.Errorf("est %s: giving up after %d attempts: %w: %w", cl.op, cl.attempts, ErrUnavailable, err)
	}
	if cl.resp == nil {
		// Retries ran out on a retryable status: the handler did not run.
		if cl.readBody(resp) != nil {
			cl.resp = &response{status: resp.StatusCode, header: resp.Header}
		}
	}
	resp.Body.Close()
	return cl.resp, nil
}

// readBody is the retryablehttp response handler: reading the body inside
// the retry loop makes a connection lost mid-body a retryable failure.
func (cl *call) readBody(resp *http.Response) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyLen+1))
	if err != nil {
		return fmt.Errorf("reading response body: %w", err)
	}
	if len(b) > maxBodyLen {
		return errBodyTooLarge
	}
	cl.resp = &response{status: resp.StatusCode, header: resp.Header, body: b}
	return nil
}

// backoff is the retryablehttp Backoff: Retry-After if present (capped by
// max), else exponential from min, capped by max, with equal jitter.
func (cl *call) backoff(minWait, maxWait time.Duration, attemptNum int, resp *http.Response) time.Duration {
	status := 0
	var wait time.Duration
	ra := false
	if resp != nil {
		status = resp.StatusCode
		wait, ra = parseRetryAfter(resp.Header.Get("Retry-After"), cl.c.clock.Now())
	}
	if ra {
		wait = min(wait, maxWait)
	} else {
		wait = jitter(expBackoff(minWait, maxWait, attemptNum))
	}
	cl.c.onRetry(cl.op, status, wait)
	if cl.ctx != nil {
		if fn := retryNotice(cl.ctx); fn != nil {
			fn(cl.op, status)
		}
	}
	return wait
}

// observedTransport counts attempts and reports them to the Observer and
// the log.
type observedTransport struct {
	rt http.RoundTripper
	cl *call
}

func (t *observedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	cl := t.cl
	cl.attempts++
	c := cl.c
	if c.obs != nil {
		c.obs.OnAttempt(cl.op, cl.attempts)
	}
	start := time.Now()
	resp, err := t.rt.RoundTrip(req)
	d := time.Since(start)
	status := 0
	if err == nil {
		status = resp.StatusCode
	}
	if c.obs != nil {
		c.obs.OnResponse(cl.op, status, d)
	}
	if err != nil {
		c.log.Debug("est attempt failed", logKeyOp, string(cl.op), logKeyAttempt, cl.attempts, logKeyDuration, d, logKeyError, err.Error())
	} else {
		c.log.Debug("est attempt", logKeyOp, string(cl.op), logKeyAttempt, cl.attempts, logKeyStatus, status, logKeyDuration, d)
	}
	return resp, err
}

func ctxError(op Op, ctx context.Context) error {
	return fmt.Errorf("est %s: %w: %w", op, ErrUnavailable, context.Cause(ctx))
}

func isContextError(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
