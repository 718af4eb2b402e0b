// Command estserver runs an EST (RFC 7030) server built on the independent
// github.com/globalsign/est library, backed by a throwaway two-tier ECDSA
// P-256 CA generated at start. It exists only so that the interop test in
// the parent package can check the station's EST client against an EST
// implementation that the project did not write.
//
// It lives in its own Go module on purpose: github.com/globalsign/est needs
// go-tpm v0.3, which does not build beside the go-tpm v0.9 that the station
// module requires, so this module must never import the station module and
// the station module must never import it.
//
// The server listens with TLS on -addr (127.0.0.1:0 by default) using a
// certificate for 127.0.0.1 and localhost issued by the throwaway CA. Once
// it accepts connections it writes a JSON file (-info) holding the listen
// URL and the PEM of the CA root, which is the trust anchor both for the TLS
// server certificate and for every certificate the server issues.
//
// Authentication:
//   - /cacerts and /csrattrs are open.
//   - /simpleenroll (and the other enrollment endpoints) require HTTP basic
//     authentication with the user name and password taken from the
//     environment variables ESTSERVER_USER and ESTSERVER_PASSWORD. The
//     password is never printed.
//   - /simplereenroll requires a TLS client certificate that chains to the
//     throwaway CA; basic authentication is not accepted there.
//
// The server runs until SIGINT or SIGTERM, or, with -watch-stdin (the
// default), until its standard input reaches end of file, so a parent that
// dies cannot leave it behind.
//
// Usage:
//
//	ESTSERVER_USER=u ESTSERVER_PASSWORD=p estserver -info /tmp/est.json
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/globalsign/est"
)

// Environment variables holding the basic authentication credentials.
const (
	envUser     = "ESTSERVER_USER"
	envPassword = "ESTSERVER_PASSWORD"
)

// issuedValidity is the validity period of certificates issued for CSRs.
const issuedValidity = 24 * time.Hour

// oidSubjectAltName identifies the subjectAltName extension.
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// Info is the content of the JSON file written once the server listens.
type Info struct {
	// URL is the base URL of the server, e.g. https://127.0.0.1:41234.
	URL string `json:"url"`
	// RootPEM is the PEM-encoded self-signed root of the throwaway CA.
	RootPEM string `json:"root_pem"`
	// IssuerPEM is the PEM-encoded issuing CA certificate (signed by the
	// root) that signs the server certificate and all issued certificates.
	IssuerPEM string `json:"issuer_pem"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "estserver:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:0", "TCP address to listen on")
	infoPath := flag.String("info", "", "path of the JSON file to write once listening (required)")
	watchStdin := flag.Bool("watch-stdin", true, "stop when standard input reaches end of file")
	flag.Parse()
	if *infoPath == "" {
		return errors.New("-info is required")
	}
	user, password := os.Getenv(envUser), os.Getenv(envPassword)
	if user == "" || password == "" {
		return fmt.Errorf("%s and %s must be set", envUser, envPassword)
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	ca, err := newThrowawayCA()
	if err != nil {
		return fmt.Errorf("creating CA: %w", err)
	}
	serverCert, err := ca.serverCertificate([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback})
	if err != nil {
		return fmt.Errorf("creating server certificate: %w", err)
	}

	router, err := est.NewRouter(&est.ServerConfig{
		CA:             ca,
		Logger:         slogAdapter{l: logger},
		Timeout:        30 * time.Second,
		CheckBasicAuth: ca.authenticator(user, password),
	})
	if err != nil {
		return fmt.Errorf("creating EST router: %w", err)
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	srv := &http.Server{
		Handler: router,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{serverCert},
			// Client certificates are requested but verified per request in
			// the authenticator, against the root with the issuing CA as
			// intermediate, so a client that sends only its leaf works.
			ClientAuth: tls.RequestClientCert,
			MinVersion: tls.VersionTLS12,
		},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.ServeTLS(ln, "", "") }()

	info := Info{
		URL:       "https://" + ln.Addr().String(),
		RootPEM:   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.root.Raw})),
		IssuerPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.issuer.Raw})),
	}
	if err := writeInfo(*infoPath, info); err != nil {
		_ = srv.Close()
		return err
	}
	logger.Info("serving", "url", info.URL)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop()
		}()
	}

	select {
	case err := <-serveErr:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// writeInfo writes info as JSON to path atomically (temporary file, then
// rename), so a reader polling for the file never sees it half written.
func writeInfo(path string, info Info) error {
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding info: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".estserver-info-*")
	if err != nil {
		return fmt.Errorf("writing info: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("writing info: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing info: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing info: %w", err)
	}
	return nil
}

// throwawayCA is a two-tier in-memory CA implementing est.CA. It is safe for
// concurrent use: all fields are set once at creation and only read after.
type throwawayCA struct {
	root      *x509.Certificate
	issuer    *x509.Certificate
	issuerKey crypto.Signer
	// verify holds the root as trust anchor and the issuing CA as
	// intermediate, for checking client certificates.
	verify x509.VerifyOptions
}

// newThrowawayCA generates an ECDSA P-256 root and an issuing CA under it.
func newThrowawayCA() (*throwawayCA, error) {
	now := time.Now()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating root key: %w", err)
	}
	rootTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "estserver throwaway root CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	root, err := createCertificate(rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("creating root certificate: %w", err)
	}

	issuerKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating issuing CA key: %w", err)
	}
	issuerTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "estserver throwaway issuing CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	issuer, err := createCertificate(issuerTmpl, root, &issuerKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("creating issuing CA certificate: %w", err)
	}

	roots := x509.NewCertPool()
	roots.AddCert(root)
	inters := x509.NewCertPool()
	inters.AddCert(issuer)
	return &throwawayCA{
		root:      root,
		issuer:    issuer,
		issuerKey: issuerKey,
		verify: x509.VerifyOptions{
			Roots:         roots,
			Intermediates: inters,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		},
	}, nil
}

// createCertificate signs tmpl with a fresh random serial number and parses
// the result.
func createCertificate(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// serverCertificate issues a TLS server certificate for the given names and
// returns it with the issuing CA as chain.
func (ca *throwawayCA) serverCertificate(dnsNames []string, ips []net.IP) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generating server key: %w", err)
	}
	now := time.Now()
	cert, err := createCertificate(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "estserver"},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(7 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca.issuer, &key.PublicKey, ca.issuerKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{
		Certificate: [][]byte{cert.Raw, ca.issuer.Raw},
		PrivateKey:  key,
		Leaf:        cert,
	}, nil
}

// authenticator returns the est.ServerConfig.CheckBasicAuth callback. The
// library calls it for every enrollment endpoint, /simplereenroll included,
// so it also enforces the client-certificate rule for re-enrollment.
func (ca *throwawayCA) authenticator(user, password string) func(context.Context, *http.Request, string, string, string) error {
	wantUser, wantPassword := []byte(user), []byte(password)
	return func(_ context.Context, r *http.Request, _ string, gotUser, gotPassword string) error {
		if strings.HasSuffix(r.URL.Path, "/simplereenroll") {
			return ca.verifyClient(r)
		}
		userOK := subtle.ConstantTimeCompare([]byte(gotUser), wantUser)
		passwordOK := subtle.ConstantTimeCompare([]byte(gotPassword), wantPassword)
		if userOK&passwordOK != 1 {
			return errors.New("bad credentials")
		}
		return nil
	}
}

// verifyClient checks that the request came with a TLS client certificate
// issued by the CA for client authentication.
func (ca *throwawayCA) verifyClient(r *http.Request) error {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return errors.New("no client certificate")
	}
	opts := ca.verify
	opts.CurrentTime = time.Now()
	if chain := r.TLS.PeerCertificates[1:]; len(chain) > 0 {
		opts.Intermediates = opts.Intermediates.Clone()
		for _, c := range chain {
			opts.Intermediates.AddCert(c)
		}
	}
	if _, err := r.TLS.PeerCertificates[0].Verify(opts); err != nil {
		return fmt.Errorf("verifying client certificate: %w", err)
	}
	return nil
}

// CACerts returns the issuing CA and the root. See est.CA.
func (ca *throwawayCA) CACerts(context.Context, string, *http.Request) ([]*x509.Certificate, error) {
	return []*x509.Certificate{ca.issuer, ca.root}, nil
}

// CSRAttrs returns an empty attribute list. See est.CA.
func (ca *throwawayCA) CSRAttrs(context.Context, string, *http.Request) (est.CSRAttrs, error) {
	return est.CSRAttrs{}, nil
}

// Enroll issues a certificate for csr. See est.CA.
func (ca *throwawayCA) Enroll(_ context.Context, csr *x509.CertificateRequest, _ string, _ *http.Request) (*x509.Certificate, error) {
	return ca.issue(csr)
}

// Reenroll issues a certificate for csr after checking that the certificate
// being renewed was issued by this CA (the library has already checked that
// the CSR subject and subjectAltName equal those of cert). See est.CA.
func (ca *throwawayCA) Reenroll(_ context.Context, cert *x509.Certificate, csr *x509.CertificateRequest, _ string, _ *http.Request) (*x509.Certificate, error) {
	if err := cert.CheckSignatureFrom(ca.issuer); err != nil {
		return nil, statusError{status: http.StatusForbidden, desc: "certificate not issued by this CA"}
	}
	return ca.issue(csr)
}

// ServerKeyGen is not supported. See est.CA.
func (ca *throwawayCA) ServerKeyGen(context.Context, *x509.CertificateRequest, string, *http.Request) (*x509.Certificate, []byte, error) {
	return nil, nil, statusError{status: http.StatusNotImplemented}
}

// TPMEnroll is not supported. See est.CA.
func (ca *throwawayCA) TPMEnroll(context.Context, *x509.CertificateRequest, []*x509.Certificate, []byte, []byte, string, *http.Request) ([]byte, []byte, []byte, error) {
	return nil, nil, nil, statusError{status: http.StatusNotImplemented}
}

// issue signs a client-authentication certificate for the CSR's key with
// the CSR's subject and subjectAltName copied byte for byte.
func (ca *throwawayCA) issue(csr *x509.CertificateRequest) (*x509.Certificate, error) {
	now := time.Now()
	tmpl := &x509.Certificate{
		RawSubject:  csr.RawSubject,
		NotBefore:   now.Add(-time.Minute),
		NotAfter:    now.Add(issuedValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, ext := range csr.Extensions {
		if ext.Id.Equal(oidSubjectAltName) {
			tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, ext)
		}
	}
	cert, err := createCertificate(tmpl, ca.issuer, csr.PublicKey, ca.issuerKey)
	if err != nil {
		return nil, fmt.Errorf("issuing certificate: %w", err)
	}
	return cert, nil
}

// statusError is an est.Error with a fixed HTTP status.
type statusError struct {
	status int
	desc   string
}

// StatusCode returns the HTTP status code.
func (e statusError) StatusCode() int { return e.status }

// RetryAfter returns 0: no Retry-After header.
func (e statusError) RetryAfter() int { return 0 }

// Error returns the description, or the status text when there is none.
func (e statusError) Error() string {
	if e.desc == "" {
		return http.StatusText(e.status)
	}
	return e.desc
}

// slogAdapter implements est.Logger on a *slog.Logger.
type slogAdapter struct{ l *slog.Logger }

// Errorf logs a formatted message at error level.
func (a slogAdapter) Errorf(format string, args ...any) { a.l.Error(fmt.Sprintf(format, args...)) }

// Errorw logs a message with key-value pairs at error level.
func (a slogAdapter) Errorw(msg string, kv ...any) { a.l.Error(msg, kv...) }

// Infof logs a formatted message at info level.
func (a slogAdapter) Infof(format string, args ...any) { a.l.Info(fmt.Sprintf(format, args...)) }

// Infow logs a message with key-value pairs at info level.
func (a slogAdapter) Infow(msg string, kv ...any) { a.l.Info(msg, kv...) }

// With returns a logger with the key-value pairs added.
func (a slogAdapter) With(kv ...any) est.Logger { return slogAdapter{l: a.l.With(kv...)} }
