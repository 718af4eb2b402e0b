package server

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/devid-station/devid/device-agent/agent"
	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/fixture/devpki"
	"github.com/devid-station/devid/fixture/estca"
	"github.com/devid-station/devid/fixture/tpmvendor"
	"github.com/devid-station/devid/station/config"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// testLine is a station with its dev EST CAs and PKI, all real, on loopback.
type testLine struct {
	t         testing.TB
	dir       string
	pki       *devpki.PKI
	ca        *estca.Server
	file      *config.File
	srv       *Server
	stationCA *x509.CertPool
	unitRoot  string
}

type lineOptions struct {
	ldevidAuth string
	knobs      estca.Knobs // for the IDevID CA
	wrap       func(workflow.Journal) workflow.Journal
	configure  func(*config.File) // adjusts the station's configuration before it starts
	caClock    estca.Clock        // the dev CAs' clock; nil: the system clock
	noPolicies bool               // the IDevID CA drops the requested certificate policies
	// idempotentCSR makes the dev CAs answer a CSR they saw before with the same certificate;
	// off, as with most production CAs, they issue a new certificate for every request.
	idempotentCSR bool
}

const headerSecret = "line-test-secret"

func writePEM(t testing.TB, path, typ string, der []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		t.Fatal(err)
	}
}

func writeKey(t testing.TB, path string, key crypto.Signer) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, "PRIVATE KEY", der, 0o600)
}

// tlsPair issues a server or client certificate from ca and writes it.
func tlsPair(t testing.TB, ca *devpki.CA, dir, name, cn string, server bool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, KeyUsage: x509.KeyUsageDigitalSignature}
	if server {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	cert, err := ca.Issue(tmpl, &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, name+".pem"), "CERTIFICATE", cert.Raw, 0o644)
	writeKey(t, filepath.Join(dir, name+".key"), key)
}

func newTestLine(t testing.TB, opts lineOptions) *testLine {
	t.Helper()
	dir := t.TempDir()
	pki, err := devpki.New(devpki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WritePEM(filepath.Join(dir, "pki")); err != nil {
		t.Fatal(err)
	}
	// The station's own TLS: a dev CA for its listeners and API clients.
	stationCA := pki.MakerRoot
	tlsDir := filepath.Join(dir, "tls")
	tlsPair(t, stationCA, tlsDir, "agents", "station", true)
	tlsPair(t, stationCA, tlsDir, "api", "station", true)
	writePEM(t, filepath.Join(tlsDir, "clients-ca.pem"), "CERTIFICATE", stationCA.Cert.Raw, 0o644)
	if err := os.WriteFile(filepath.Join(dir, "ca.secret"), []byte(headerSecret), 0o600); err != nil {
		t.Fatal(err)
	}

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTLS, err := estca.NewTLSCertificate(pki.MakerRoot.Cert, pki.MakerRoot.Signer, nil, caKey, []string{"127.0.0.1"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	secret := &estca.HeaderSecret{Name: "Secret-Value", Value: headerSecret}
	ldevidAuth := estca.Auth{HeaderSecret: secret}
	if opts.ldevidAuth == "" {
		opts.ldevidAuth = workflow.AuthIDevIDMTLS
	}
	if opts.ldevidAuth == workflow.AuthIDevIDMTLS {
		ldevidAuth.ClientCertRoots = []*x509.Certificate{pki.MakerRoot.Cert}
	}
	ca, err := estca.New(estca.Config{TLSCert: caTLS, CAs: []estca.CAConfig{
		{Label: "idevid", Issuer: pki.IDevIDIssuing.Cert, Signer: pki.IDevIDIssuing.Signer, Chain: pki.IDevIDIssuing.Chain()[1:], Root: pki.MakerRoot.Cert,
			ChainInEnroll: true, IdempotentCSR: opts.idempotentCSR, Profile: estca.Profile{NotAfter: estca.NoExpiry, KeyUsage: x509.KeyUsageDigitalSignature, CopySAN: true, CopyPolicies: !opts.noPolicies},
			Auth: estca.Auth{HeaderSecret: secret}, Knobs: opts.knobs},
		// The maker's IAK profile (iak_test.go): IAK certificates with tcg-kp-AIKCertificate.
		{Label: "iak", Issuer: pki.IDevIDIssuing.Cert, Signer: pki.IDevIDIssuing.Signer, Chain: pki.IDevIDIssuing.Chain()[1:], Root: pki.MakerRoot.Cert,
			ChainInEnroll: true, Profile: estca.Profile{NotAfter: estca.NoExpiry, KeyUsage: x509.KeyUsageDigitalSignature,
				UnknownExtKeyUsage: []asn1.ObjectIdentifier{workflow.OIDAIKCertificate}, CopySAN: true, CopyPolicies: true},
			Auth: estca.Auth{HeaderSecret: secret}},
		{Label: "ldevid", Issuer: pki.LDevIDIssuing.Cert, Signer: pki.LDevIDIssuing.Signer, Chain: pki.LDevIDIssuing.Chain()[1:], Root: pki.CustomerRoot.Cert,
			ChainInEnroll: true, IdempotentCSR: opts.idempotentCSR, Profile: estca.Profile{Validity: 365 * 24 * time.Hour, KeyUsage: x509.KeyUsageDigitalSignature, CopySAN: true, CopyPolicies: true},
			Auth: ldevidAuth},
	}, Clock: opts.caClock})
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ca.Close() })

	unitRoot := filepath.Join(dir, "unit")
	if err := os.MkdirAll(unitRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	subject := config.Subject{Organization: []string{"Test Maker"}, CommonName: "{serial}"}
	f := &config.File{
		StationID: "test-station", StorePath: filepath.Join(dir, "station.db"),
		Agents:    config.Agents{Listen: "127.0.0.1:0", CertFile: "tls/agents.pem", KeyFile: "tls/agents.key", HelloTimeout: config.Duration(time.Minute)},
		API:       config.API{Listen: "127.0.0.1:0", CertFile: "tls/api.pem", KeyFile: "tls/api.key", ClientCAFile: "tls/clients-ca.pem"},
		Metrics:   config.Metrics{Listen: "127.0.0.1:0"},
		TPMVendor: config.TPMVendor{Roots: []string{"pki/" + devpki.FileTPMVendorBundle}, Intermediates: []string{"pki/" + devpki.FileEKIntermediates}},
		Workflow:  config.Workflow{StepTimeout: config.Duration(2 * time.Minute)},
		CAs: []config.CA{
			{Name: "maker", URL: ca.URL(), Label: "idevid", TrustAnchors: []string{"pki/maker-root-ca.pem"},
				Auth:  config.CAAuth{HeaderName: "Secret-Value", HeaderSecretFile: "ca.secret"},
				Batch: config.Batch{MaxBatch: 4, MaxWait: config.Duration(5 * time.Millisecond), MaxInFlight: 4},
				Retry: config.Retry{Max: 2, WaitMin: config.Duration(10 * time.Millisecond), WaitMax: config.Duration(100 * time.Millisecond)}},
			{Name: "customer", URL: ca.URL(), Label: "ldevid", TrustAnchors: []string{"pki/maker-root-ca.pem"}, IssuerAnchors: []string{"pki/customer-root-ca.pem"},
				Auth:  config.CAAuth{HeaderName: "Secret-Value", HeaderSecretFile: "ca.secret"},
				Batch: config.Batch{MaxBatch: 4, MaxWait: config.Duration(5 * time.Millisecond), MaxInFlight: 4},
				Retry: config.Retry{Max: 2, WaitMin: config.Duration(10 * time.Millisecond), WaitMax: config.Duration(100 * time.Millisecond)}},
		},
		Profiles: []config.Profile{{
			Name:     "default",
			IDevID:   config.Key{Algorithm: "ecc-p256", Handle: 0x81020000, CA: "maker", Subject: subject},
			IDevIDNV: config.NV{Index: 0x01C90000, Auth: "platform", Lock: true},
			LDevID: config.Key{Algorithm: "ecc-p256", Handle: 0x81020002, CA: "customer", Subject: subject,
				HardwareModuleType: "1.3.6.1.4.1.99999.1.1", HardwareModuleName: "serial"},
			LDevIDCertPath: filepath.Join(unitRoot, "etc/devid/ldevid.pem"),
			LDevIDAuth:     opts.ldevidAuth,
			Onboarding: &config.Onboarding{Template: config.AzureIoTIdentityTemplate, Path: filepath.Join(unitRoot, "etc/aziot/config.toml"),
				Values: map[string]string{"global_endpoint": "https://dps.example", "id_scope": "0ne0001", "est_url": "https://est.example/.well-known/est",
					"pkcs11_lib_path": "/usr/lib/x86_64-linux-gnu/libtpm2_pkcs11.so.1", "pkcs11_token": "devid", "pkcs11_object": "ldevid"},
				TrustBundle: []string{"pki/maker-root-ca.pem"}, TrustBundlePath: filepath.Join(unitRoot, "etc/aziot/est-ca.pem"),
				PINPath: filepath.Join(unitRoot, "etc/devid/pkcs11-pin")},
		}},
	}
	pool := x509.NewCertPool()
	pool.AddCert(stationCA.Cert)
	if opts.configure != nil {
		opts.configure(f)
	}
	l := &testLine{t: t, dir: dir, pki: pki, ca: ca, file: f, stationCA: pool, unitRoot: unitRoot}
	l.start(opts.wrap)
	return l
}

// start runs a station on the line's store; the agent listener keeps its port across restarts.
func (l *testLine) start(wrap func(workflow.Journal) workflow.Journal) {
	l.t.Helper()
	rt, err := l.file.Validate(l.dir)
	if err != nil {
		l.t.Fatal(err)
	}
	srv, err := New(rt, Options{Version: "test", WrapJournal: wrap})
	if err != nil {
		l.t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.file.Agents.Listen = srv.AgentAddr()
	l.srv = srv
	l.t.Cleanup(func() { l.stop(true) })
}

// stop closes the station; hard skips the graceful drain.
func (l *testLine) stop(hard bool) {
	if l.srv == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	if hard {
		cancel()
	} else {
		defer cancel()
	}
	_ = l.srv.Close(ctx)
	l.srv = nil
}

func (l *testLine) workOrder(id string, serials ...string) {
	l.t.Helper()
	if _, err := l.srv.Store().CreateWorkOrder(context.Background(), store.WorkOrder{ID: id, Profile: "default", Serials: serials, CreatedBy: "test"}); err != nil {
		l.t.Fatal(err)
	}
}

// manufacture opens a fresh simulator TPM with EKs of algs certified by ekCA (the line's TPM
// vendor when nil). Only one simulator exists per process: close it before the next.
func (l *testLine) manufacture(ekCA *devpki.CA, algs ...tpm.Algorithm) *tpm.TPM {
	l.t.Helper()
	sim, err := tpm.Open("simulator")
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { sim.Close() })
	if ekCA == nil {
		ekCA = l.pki.EKIssuing
	}
	if _, err := tpmvendor.Manufacture(sim, ekCA, tpmvendor.Options{Algorithms: algs}); err != nil {
		l.t.Fatal(err)
	}
	return sim
}

// runUnit runs a real agent for serial on t until the station's verdict.
func (l *testLine) runUnit(ctx context.Context, serial string, t agent.TPM) agent.Verdict {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	v, err := agent.Run(ctx, l.agentConfig(serial), t)
	if err != nil {
		l.t.Fatalf("agent %s: %v", serial, err)
	}
	return v
}

func (l *testLine) agentConfig(serial string) agent.Config {
	return agent.Config{
		StationAddr: l.file.Agents.Listen, StationCA: l.stationCA, ServerName: "127.0.0.1",
		Serial: agent.SerialSource{Value: serial}, FileRoots: []string{l.unitRoot},
		Backoff: agent.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	}
}

// issuedAllKnown checks the store knows every certificate the dev CAs issued.
func (l *testLine) issuedAllKnown(st *store.Store) {
	l.t.Helper()
	for _, e := range l.ca.Ledger() {
		if _, err := st.CertificateBySHA256(context.Background(), e.SHA256); err != nil {
			l.t.Errorf("certificate %s (%s, serial %x) issued by the CA is unknown to the store: %v", e.SHA256[:16], e.Label, e.Serial, err)
		}
	}
}

func (l *testLine) unit(serial string) store.UnitState {
	l.t.Helper()
	u, err := l.srv.Store().Unit(context.Background(), serial)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		l.t.Fatal(err)
	}
	return u
}
