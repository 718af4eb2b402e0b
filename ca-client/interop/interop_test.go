package interop

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"github.com/devid-station/devid/ca-client/secret"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devid-station/devid/ca-client/est"
)

// serverModuleDir is the nested Go module holding the EST server command,
// relative to this package's folder (the working directory of its tests).
const serverModuleDir = "estserver"

// Environment variables through which the server takes its basic
// authentication credentials (see estserver/main.go).
const (
	envServerUser     = "ESTSERVER_USER"
	envServerPassword = "ESTSERVER_PASSWORD"
)

// networkFailureMarkers are fragments of go command output that mean a
// module could not be fetched because the proxy could not be reached.
var networkFailureMarkers = []string{
	"dial tcp",
	"no such host",
	"connection refused",
	"connection reset",
	"network is unreachable",
	"i/o timeout",
	"TLS handshake timeout",
	"proxyconnect",
	"Temporary failure in name resolution",
	"module lookup disabled by GOPROXY=off",
}

// estServer is a running github.com/globalsign/est server process.
type estServer struct {
	url      string
	root     *x509.Certificate // trust anchor for TLS and issued certificates
	issuer   *x509.Certificate // issuing CA under root
	user     string
	password string
}

// serverInfo mirrors the JSON file written by the server once it listens.
type serverInfo struct {
	URL       string `json:"url"`
	RootPEM   string `json:"root_pem"`
	IssuerPEM string `json:"issuer_pem"`
}

// TestGlobalSignESTServer runs the station's EST client against the
// independent github.com/globalsign/est server: /cacerts, /simpleenroll
// with basic authentication (with and without a CA label), refused
// credentials, and /simplereenroll authenticated by the enrolled
// certificate as TLS client certificate through an opaque crypto.Signer.
func TestGlobalSignESTServer(t *testing.T) {
	srv := startESTServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	t.Run("cacerts", func(t *testing.T) {
		c := newClient(t, srv, est.Config{})
		certs, err := c.CACerts(ctx)
		if err != nil {
			t.Fatalf("CACerts: %v", err)
		}
		want := []*x509.Certificate{srv.root, srv.issuer}
		if !sameCertSet(certs, want) {
			t.Fatalf("CACerts returned %s, want %s", subjects(certs), subjects(want))
		}
	})

	// The unit identity used for enrollment and then re-enrollment.
	subject := pkix.Name{CommonName: "interop-unit-0001", Organization: []string{"DevID Station"}}
	dnsNames := []string{"unit-0001.devid.test"}
	enrolledKey := newKey(t)
	var enrolled *est.Result

	ok := t.Run("simpleenroll", func(t *testing.T) {
		tests := []struct {
			name  string
			label string
		}{
			{name: "no label", label: ""},
			{name: "with label", label: "idevid"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := newClient(t, srv, est.Config{
					Label: tt.label,
					Auth:  est.Basic{User: srv.user, Password: secret.New(srv.password)},
				})
				key := newKey(t)
				if tt.label == "" {
					key = enrolledKey
				}
				csr := newCSR(t, key, subject, dnsNames)
				res, err := c.Enroll(ctx, csr.Raw)
				if err != nil {
					t.Fatalf("Enroll: %v", err)
				}
				checkIssued(t, srv, res, csr)
				if tt.label == "" {
					enrolled = res
				}
			})
		}
	})
	if !ok || enrolled == nil {
		t.Fatal("simpleenroll failed; skipping the tests that need an enrolled certificate")
	}

	t.Run("simpleenroll refused credentials", func(t *testing.T) {
		wrongPassword := "not-" + srv.password
		tests := []struct {
			name string
			auth est.Auth
		}{
			{name: "wrong password", auth: est.Basic{User: srv.user, Password: secret.New(wrongPassword)}},
			{name: "unknown user", auth: est.Basic{User: "intruder", Password: secret.New(srv.password)}},
			{name: "no credentials", auth: nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := newClient(t, srv, est.Config{Auth: tt.auth})
				_, err := c.Enroll(ctx, newCSR(t, newKey(t), subject, dnsNames).Raw)
				checkRejected(t, err, 401)
				for _, secret := range []string{srv.password, wrongPassword} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("error %q contains a password", err)
					}
				}
			})
		}
	})

	t.Run("simplereenroll", func(t *testing.T) {
		signer := &countingSigner{s: enrolledKey}
		c := newClient(t, srv, est.Config{
			ClientCert: &est.ClientCertificate{
				Chain: append([]*x509.Certificate{enrolled.Leaf}, enrolled.Chain...),
				Key:   signer,
			},
		})
		// Rekey: a new key with the same subject and subjectAltName, as the
		// server requires (RFC 7030 4.2.2).
		csr := newCSR(t, newKey(t), subject, dnsNames)
		res, err := c.Reenroll(ctx, csr.Raw)
		if err != nil {
			t.Fatalf("Reenroll: %v", err)
		}
		checkIssued(t, srv, res, csr)
		if res.Leaf.SerialNumber.Cmp(enrolled.Leaf.SerialNumber) == 0 {
			t.Errorf("re-enrolled certificate has the serial number %x of the renewed one", res.Leaf.SerialNumber)
		}
		if signer.calls.Load() == 0 {
			t.Error("the client certificate's signer was never used: no TLS client authentication happened")
		}
	})

	t.Run("simplereenroll untrusted client certificate", func(t *testing.T) {
		// Same subject, but self-signed: the server must refuse it, which
		// shows that the successful re-enrollment above depended on the
		// certificate issued by the server's CA.
		key := newKey(t)
		c := newClient(t, srv, est.Config{
			Auth: est.Basic{User: srv.user, Password: secret.New(srv.password)},
			ClientCert: &est.ClientCertificate{
				Chain: []*x509.Certificate{selfSigned(t, key, subject, dnsNames)},
				Key:   &countingSigner{s: key},
			},
		})
		_, err := c.Reenroll(ctx, newCSR(t, key, subject, dnsNames).Raw)
		checkRejected(t, err, 401)
	})
}

// startESTServer builds the server command, starts it with random
// credentials and returns once it has written its info file. The process is
// stopped (standard input closed) at cleanup.
func startESTServer(t *testing.T) *estServer {
	t.Helper()
	tmp := t.TempDir()
	bin := buildNested(t, tmp, ".", "estserver")

	srv := &estServer{user: "station", password: randomHex(t, 16)}
	infoPath := filepath.Join(tmp, "info.json")
	logs := &syncBuffer{}
	cmd := exec.Command(bin, "-info", infoPath)
	cmd.Env = append(os.Environ(), envServerUser+"="+srv.user, envServerPassword+"="+srv.password)
	cmd.Stdout, cmd.Stderr = logs, logs
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting EST server: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		stdin.Close() // the server stops at end of standard input
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Error("EST server did not stop within 10s of closing its standard input; killing it")
			_ = cmd.Process.Kill()
			<-exited
		}
		out := logs.String()
		if strings.Contains(out, srv.password) {
			t.Error("EST server output contains the password")
		}
		if t.Failed() {
			t.Logf("EST server output:\n%s", out)
		}
	})

	info := waitForInfo(t, infoPath, exited, logs)
	srv.url = info.URL
	srv.root = parsePEMCert(t, "root_pem", info.RootPEM)
	srv.issuer = parsePEMCert(t, "issuer_pem", info.IssuerPEM)
	return srv
}

// buildNested builds the command pkg (".", the server, or "./estclient")
// of the nested module into dir/name and returns the binary's path. It skips
// the test only when the module's dependencies cannot be downloaded.
func buildNested(t *testing.T, dir, pkg, name string) string {
	t.Helper()
	// go test puts its own GOROOT/bin first in PATH, so this is the
	// toolchain running the test.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("finding the go command: %v", err)
	}
	modDir, err := filepath.Abs(serverModuleDir)
	if err != nil {
		t.Fatal(err)
	}
	// go test caches results keyed by the files a test opens; reading the
	// server's sources makes an edit to them re-run this test.
	for _, d := range []string{modDir, filepath.Join(modDir, pkg)} {
		entries, err := os.ReadDir(d)
		if err != nil {
			t.Fatalf("reading EST interop module: %v", err)
		}
		for _, e := range entries {
			if e.Type().IsRegular() {
				if _, err := os.ReadFile(filepath.Join(d, e.Name())); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// GOWORK=off: the nested module must resolve on its own, never through
	// a workspace that could pull in this module's go-tpm.
	env := append(os.Environ(), "GOWORK=off")

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	dl := exec.CommandContext(ctx, goBin, "mod", "download")
	dl.Dir, dl.Env = modDir, env
	if out, err := dl.CombinedOutput(); err != nil {
		if ctx.Err() != nil || isNetworkFailure(string(out)) {
			if os.Getenv("CI") != "" {
				t.Fatalf("CI must reach the module proxy to run the interop test: %v\n%s", err, out)
			}
			t.Skipf("cannot download the EST server's modules (module proxy unreachable); "+
				"this test needs the Go module proxy or a filled module cache: %v\n%s", err, out)
		}
		t.Fatalf("go mod download in %s: %v\n%s", modDir, err, out)
	}
	bin := filepath.Join(dir, name)
	build := exec.CommandContext(ctx, goBin, "build", "-buildvcs=false", "-o", bin, pkg)
	build.Dir, build.Env = modDir, env
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build in %s: %v\n%s", modDir, err, out)
	}
	return bin
}

// waitForInfo polls for the server's info file, failing if the server exits
// first or takes longer than 30 seconds.
func waitForInfo(t *testing.T, path string, exited <-chan error, logs *syncBuffer) serverInfo {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			var info serverInfo
			if err := json.Unmarshal(b, &info); err != nil {
				t.Fatalf("decoding %s: %v", path, err)
			}
			return info
		}
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("reading server info: %v", err)
		}
		select {
		case err := <-exited:
			t.Fatalf("EST server exited before listening: %v\n%s", err, logs.String())
		case <-deadline:
			t.Fatalf("EST server wrote no info file within 30s\n%s", logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// isNetworkFailure reports whether go command output shows a module fetch
// that failed because the network or proxy could not be reached.
func isNetworkFailure(out string) bool {
	return slices.ContainsFunc(networkFailureMarkers, func(m string) bool {
		return strings.Contains(out, m)
	})
}

// newClient returns an EST client for srv trusting its root, with the
// BaseURL and TrustAnchors of cfg filled in.
func newClient(t *testing.T, srv *estServer, cfg est.Config) *est.Client {
	t.Helper()
	cfg.BaseURL = srv.url
	cfg.TrustAnchors = []*x509.Certificate{srv.root}
	c, err := est.New(cfg)
	if err != nil {
		t.Fatalf("est.New: %v", err)
	}
	return c
}

// checkIssued checks an enrollment result independently of the client's
// own verification: the leaf holds the CSR's key, subject and DNS names,
// is not a CA, and chains through the server's issuing CA to its root for
// client authentication.
func checkIssued(t *testing.T, srv *estServer, res *est.Result, csr *x509.CertificateRequest) {
	t.Helper()
	leaf := res.Leaf
	if pub, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(leaf.PublicKey) {
		t.Errorf("issued certificate key differs from the CSR key")
	}
	if !bytes.Equal(leaf.RawSubject, csr.RawSubject) {
		t.Errorf("issued subject %q, want %q", leaf.Subject, csr.Subject)
	}
	if !slices.Equal(leaf.DNSNames, csr.DNSNames) {
		t.Errorf("issued DNS names %q, want %q", leaf.DNSNames, csr.DNSNames)
	}
	if leaf.IsCA {
		t.Error("issued certificate is a CA")
	}
	if len(res.Chain) != 1 || !res.Chain[0].Equal(srv.issuer) {
		t.Errorf("result chain %s, want the issuing CA only", subjects(res.Chain))
	}
	roots := x509.NewCertPool()
	roots.AddCert(srv.root)
	inters := x509.NewCertPool()
	inters.AddCert(srv.issuer)
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inters,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		t.Errorf("issued certificate does not chain to the server's root: %v", err)
	}
	if res.Pending != 0 {
		t.Errorf("Pending = %d, want 0 (the server never answers 202)", res.Pending)
	}
}

// checkRejected checks that err is an est.ErrRejected with the HTTP status.
func checkRejected(t *testing.T, err error, status int) {
	t.Helper()
	if !errors.Is(err, est.ErrRejected) {
		t.Fatalf("error = %v, want est.ErrRejected", err)
	}
	var rej *est.RejectedError
	if !errors.As(err, &rej) {
		t.Fatalf("error %v is not an *est.RejectedError", err)
	}
	if rej.Status != status {
		t.Errorf("rejected with HTTP %d, want %d", rej.Status, status)
	}
}

// newKey returns a fresh ECDSA P-256 key.
func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// newCSR returns a parsed PKCS#10 request signed by key.
func newCSR(t *testing.T, key crypto.Signer, subject pkix.Name, dnsNames []string) *x509.CertificateRequest {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  subject,
		DNSNames: dnsNames,
	}, key)
	if err != nil {
		t.Fatalf("creating CSR: %v", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatalf("parsing CSR: %v", err)
	}
	return csr
}

// selfSigned returns a self-signed client-authentication certificate.
func selfSigned(t *testing.T, key *ecdsa.PrivateKey, subject pkix.Name, dnsNames []string) *x509.Certificate {
	t.Helper()
	now := time.Now()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      subject,
		DNSNames:     dnsNames,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, &x509.Certificate{Subject: subject}, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// parsePEMCert parses the single certificate in the PEM text of field.
func parsePEMCert(t *testing.T, field, text string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(text))
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("server info %s holds no PEM certificate", field)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("server info %s: %v", field, err)
	}
	return cert
}

// randomHex returns n random bytes, hex-encoded.
func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// sameCertSet reports whether a and b hold the same certificates, in any
// order.
func sameCertSet(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for _, c := range b {
		if !slices.ContainsFunc(a, c.Equal) {
			return false
		}
	}
	return true
}

// subjects lists the subjects of certs, for messages.
func subjects(certs []*x509.Certificate) []string {
	s := make([]string, len(certs))
	for i, c := range certs {
		s[i] = c.Subject.String()
	}
	return s
}

// countingSigner is an opaque crypto.Signer (the TLS stack cannot see the
// concrete key type, as with a TPM key) that counts its signatures. It is
// safe for concurrent use if s is.
type countingSigner struct {
	s     crypto.Signer
	calls atomic.Int64
}

// Public returns the public key.
func (c *countingSigner) Public() crypto.PublicKey { return c.s.Public() }

// Sign signs digest with the wrapped signer.
func (c *countingSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	c.calls.Add(1)
	return c.s.Sign(r, digest, opts)
}

// syncBuffer is a bytes.Buffer safe for concurrent use, collecting the
// server's output.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns the collected output.
func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
