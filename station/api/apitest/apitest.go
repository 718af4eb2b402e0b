// Package apitest starts the station API for tests: a real store in t.TempDir, a throwaway
// PKI (a client CA with one certificate per role, and another CA the station does not
// trust), and the gRPC server with real mTLS on 127.0.0.1. It is for tests only.
package apitest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/api"
	"github.com/devid-station/devid/station/store"
)

// ServerName is the name in the station's test certificate (it also carries 127.0.0.1).
const ServerName = "station.test"

// Client common names and their roles; NoRole has a certificate from the trusted CA and no
// role.
const (
	Operator = "operator-1"
	MES      = "mes-1"
	QA       = "qa-1"
	Admin    = "admin-1"
	NoRole   = "visitor-1"
)

// Roles is the role table of the test station.
var Roles = api.RoleTable{CommonNames: map[string]api.Role{
	Operator: api.RoleOperator, MES: api.RoleMES, QA: api.RoleQA, Admin: api.RoleAdmin,
}}

// PKI is the test PKI.
type PKI struct {
	// CA issues the station's and the clients' certificates; Other is a CA the station does
	// not trust.
	CA, Other *travelertest.CA
	// Server is the station's TLS certificate.
	Server tls.Certificate
	dir    string
}

// NewPKI creates the CAs and the station's certificate.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	p := &PKI{CA: travelertest.NewCA(t, "Test Station API CA"), Other: travelertest.NewCA(t, "Untrusted CA"), dir: t.TempDir()}
	p.Server = issue(t, p.CA, &x509.Certificate{Subject: pkix.Name{CommonName: ServerName}, DNSNames: []string{ServerName},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return p
}

func issue(t testing.TB, ca *travelertest.CA, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der := ca.Issue(t, tmpl, key.Public())
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// Client returns a client certificate for cn from the trusted CA.
func (p *PKI) Client(t testing.TB, cn string) tls.Certificate {
	t.Helper()
	return issue(t, p.CA, &x509.Certificate{Subject: pkix.Name{CommonName: cn}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
}

// ClientFrom returns a client certificate from the trusted CA made from tmpl (a subject, SAN
// URIs, ...); the serial number, validity and client-auth usage are filled in.
func (p *PKI) ClientFrom(t testing.TB, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	return issue(t, p.CA, tmpl)
}

// Untrusted returns a client certificate for cn from the CA the station does not trust.
func (p *PKI) Untrusted(t testing.TB, cn string) tls.Certificate {
	t.Helper()
	return issue(t, p.Other, &x509.Certificate{Subject: pkix.Name{CommonName: cn}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
}

// Files writes cert's certificate and key as PEM files and returns their paths.
func (p *PKI) Files(t testing.TB, name string, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+".key")
	write(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}))
	write(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	return certFile, keyFile
}

// CAFile writes the trusted CA certificate as PEM and returns its path.
func (p *PKI) CAFile(t testing.TB) string {
	t.Helper()
	f := filepath.Join(p.dir, "ca.pem")
	write(t, f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.CA.Cert.Raw}))
	return f
}

func write(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Env is a running test station API.
type Env struct {
	Store *store.Store
	API   *api.Server
	PKI   *PKI
	// Addr is the listener's address (127.0.0.1:port).
	Addr string
}

// Start opens a store and serves the API with cfg; Store and Roles are filled in when unset
// (Roles: the Roles table). Everything stops at the end of the test.
func Start(t testing.TB, cfg api.Config) *Env {
	t.Helper()
	e := &Env{PKI: NewPKI(t), Store: cfg.Store}
	if e.Store == nil {
		st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "st-test"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		e.Store, cfg.Store = st, st
	}
	if cfg.Roles == nil {
		cfg.Roles = Roles.Lookup
	}
	srv, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.API = srv
	pool := x509.NewCertPool()
	pool.AddCert(e.PKI.CA.Cert)
	opts := append(srv.ServerOptions(), grpc.Creds(credentials.NewTLS(api.ServerTLSConfig(e.PKI.Server, pool))))
	gs := grpc.NewServer(opts...)
	srv.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.Addr = lis.Addr().String()
	go gs.Serve(lis)
	t.Cleanup(func() {
		srv.Shutdown()
		gs.Stop()
	})
	return e
}

// Conn dials the API presenting cert (nil: no client certificate). The certificate is sent
// whatever CAs the station names as acceptable, as a foreign client would.
func (e *Env) Conn(t testing.TB, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(e.PKI.CA.Cert)
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: ServerName}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	cc, err := grpc.NewClient(e.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// Client returns a Station client presenting a certificate of the trusted CA for cn.
func (e *Env) Client(t testing.TB, cn string) stationv1.StationClient {
	t.Helper()
	c := e.PKI.Client(t, cn)
	return stationv1.NewStationClient(e.Conn(t, &c))
}
