// Command estclient runs one EST (RFC 7030) operation with the independent
// github.com/globalsign/est client library. It exists only so that the
// interop test in ca-client/interop can check the project's dev EST CA
// (fixture/estca) against an EST client that the project did not write; it
// lives in the estserver module for the same reason as the server (see
// ../main.go).
//
// Operations (-op):
//   - cacerts: GET /cacerts; writes the certificates as PEM to -out.
//   - enroll: generates an ECDSA P-256 key, writes it (PKCS#8 PEM, 0600) to
//     -key-out, sends a CSR for -cn to /simpleenroll and writes the issued
//     certificate as PEM to -out.
//   - reenroll: loads the certificate -cert and its key -key, presents them as
//     TLS client certificate and sends a CSR for the same subject and key to
//     /simplereenroll; writes the issued certificate as PEM to -out.
//
// The server is -host (host:port) with the CA label -label; its TLS
// certificate must chain to the PEM certificates of -anchor. With -user,
// requests carry HTTP basic authentication, the password taken from the
// environment variable ESTCLIENT_PASSWORD (never printed). A failure prints
// the error and exits 1.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/globalsign/est"
)

func main() {
	if err := run(); err != nil {
		// The library's errors carry the server's HTTP status.
		var se interface{ StatusCode() int }
		if errors.As(err, &se) {
			err = fmt.Errorf("%w (HTTP status %d)", err, se.StatusCode())
		}
		fmt.Fprintln(os.Stderr, "estclient:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		op      = flag.String("op", "", "cacerts, enroll or reenroll")
		host    = flag.String("host", "", "EST server host:port")
		label   = flag.String("label", "", "CA label (additional path segment)")
		anchor  = flag.String("anchor", "", "PEM file: trust anchors for the server's TLS certificate")
		user    = flag.String("user", "", "HTTP basic user (password from ESTCLIENT_PASSWORD)")
		cn      = flag.String("cn", "", "common name of the enrollment CSR")
		certIn  = flag.String("cert", "", "PEM file: client certificate for reenroll")
		keyIn   = flag.String("key", "", "PEM file: key of -cert")
		keyOut  = flag.String("key-out", "", "where enroll writes the generated key")
		out     = flag.String("out", "", "where the certificates go (PEM)")
		timeout = flag.Duration("timeout", 30*time.Second, "deadline of the operation")
	)
	flag.Parse()
	if *host == "" || *anchor == "" || *out == "" {
		return errors.New("-host, -anchor and -out are required")
	}
	anchors, err := readCerts(*anchor)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	for _, c := range anchors {
		pool.AddCert(c)
	}
	client := &est.Client{Host: *host, AdditionalPathSegment: *label, ExplicitAnchor: pool, DisableKeepAlives: true}
	if *user != "" {
		client.Username, client.Password = *user, os.Getenv("ESTCLIENT_PASSWORD")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var certs []*x509.Certificate
	switch *op {
	case "cacerts":
		if certs, err = client.CACerts(ctx); err != nil {
			return fmt.Errorf("cacerts: %w", err)
		}
	case "enroll":
		if *keyOut == "" || *cn == "" {
			return errors.New("enroll needs -key-out and -cn")
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		if err := os.WriteFile(*keyOut, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return err
		}
		csr, err := newCSR(key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: *cn}})
		if err != nil {
			return err
		}
		cert, err := client.Enroll(ctx, csr)
		if err != nil {
			return fmt.Errorf("enroll: %w", err)
		}
		certs = []*x509.Certificate{cert}
	case "reenroll":
		pair, err := tls.LoadX509KeyPair(*certIn, *keyIn)
		if err != nil {
			return fmt.Errorf("reenroll credentials: %w", err)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return err
		}
		client.Certificates, client.PrivateKey = []*x509.Certificate{leaf}, pair.PrivateKey
		key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
		if !ok {
			return errors.New("reenroll: the key is not ECDSA")
		}
		csr, err := newCSR(key, &x509.CertificateRequest{RawSubject: leaf.RawSubject})
		if err != nil {
			return err
		}
		cert, err := client.Reenroll(ctx, csr)
		if err != nil {
			return fmt.Errorf("reenroll: %w", err)
		}
		certs = []*x509.Certificate{cert}
	default:
		return fmt.Errorf("-op %q: want cacerts, enroll or reenroll", *op)
	}
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return os.WriteFile(*out, b, 0o644)
}

// newCSR returns the CSR of tmpl signed by key, parsed.
func newCSR(key *ecdsa.PrivateKey, tmpl *x509.CertificateRequest) (*x509.CertificateRequest, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("creating CSR: %w", err)
	}
	return x509.ParseCertificateRequest(der)
}

func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		if block, b = pem.Decode(b); block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s holds no certificate", path)
	}
	return certs, nil
}
