package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/devid-station/devid/station/workflow"
)

// writeCert writes a self-signed certificate (and its key) as PEM files.
func writeCert(t *testing.T, certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: filepath.Base(certPath)},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	write(t, certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	if keyPath != "" {
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		write(t, keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	}
}

func write(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

// exampleDir copies deploy/station.example.toml into a folder with every file it names.
func exampleDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	example, err := os.ReadFile("../../deploy/station.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "station.toml"), example, 0o644)
	for _, name := range []string{"agents", "api"} {
		writeCert(t, filepath.Join(dir, "tls", name+".pem"), filepath.Join(dir, "tls", name+".key"))
	}
	for _, name := range []string{"tls/api-clients-ca.pem", "pki/tpm-vendor-bundle.pem", "pki/ek-intermediates.pem", "pki/maker-root-ca.pem", "pki/customer-root-ca.pem"} {
		writeCert(t, filepath.Join(dir, name), "")
	}
	write(t, filepath.Join(dir, "secrets/maker-ca.secret"), []byte("s3cret-maker\n"), 0o600)
	write(t, filepath.Join(dir, "secrets/customer-ca.secret"), []byte("s3cret-customer\n"), 0o600)
	return dir
}

func TestExampleLoads(t *testing.T) {
	dir := exampleDir(t)
	rt, err := Load(filepath.Join(dir, "station.toml"))
	if err != nil {
		t.Fatal(err)
	}
	p := rt.Profiles["default"]
	if p == nil || p.IDevID.Handle != 0x81020000 || p.IDevIDNV.Index != 0x01C90000 || p.LDevIDAuth != workflow.AuthIDevIDMTLS {
		t.Fatalf("default profile = %+v", p)
	}
	if rt.CAs[0].HeaderSecret != "s3cret-maker" || rt.CAs[0].HeaderName != "Secret-Value" {
		t.Errorf("CA auth not loaded: header %q", rt.CAs[0].HeaderName)
	}
	if rt.MetricsListen != "127.0.0.1:9464" || rt.ConsoleListen != "127.0.0.1:7445" {
		t.Errorf("metrics listen %q, console listen %q", rt.MetricsListen, rt.ConsoleListen)
	}
	if rt.Roles["mes-1"] != "mes" || rt.StepTimeouts["idevid_key"] != 10*time.Minute {
		t.Errorf("roles %v, timeouts %v", rt.Roles, rt.StepTimeouts)
	}
	out, err := p.Onboarding.Render(workflow.OnboardingInput{Serial: "SN-0001", LDevIDCertPath: "/etc/devid/ldevid.pem", LDevIDHandle: 0x81000002})
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Hostname     string `toml:"hostname"`
		Provisioning struct {
			Source      string `toml:"source"`
			Attestation struct {
				RegistrationID string `toml:"registration_id"`
			} `toml:"attestation"`
		} `toml:"provisioning"`
		CertIssuance struct {
			EST struct {
				Auth struct {
					BootstrapIdentityCert string `toml:"bootstrap_identity_cert"`
				} `toml:"auth"`
				IdentityAutoRenew struct {
					RotateKey bool `toml:"rotate_key"`
				} `toml:"identity_auto_renew"`
			} `toml:"est"`
		} `toml:"cert_issuance"`
	}
	if err := toml.Unmarshal(out, &doc); err != nil {
		t.Fatalf("rendered config does not parse: %v\n%s", err, out)
	}
	if doc.Hostname != "SN-0001" || doc.Provisioning.Source != "dps" || doc.Provisioning.Attestation.RegistrationID != "SN-0001" ||
		doc.CertIssuance.EST.Auth.BootstrapIdentityCert != "file:///etc/devid/ldevid.pem" || !doc.CertIssuance.EST.IdentityAutoRenew.RotateKey {
		t.Errorf("rendered config = %+v", doc)
	}
}

func TestInvalid(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(s string) string
		secrets os.FileMode
		want    string
	}{
		{"unknown key", func(s string) string { return strings.Replace(s, "store_path", "stor_path", 1) }, 0o600, "stor_path"},
		{"unknown nested key", func(s string) string { return strings.Replace(s, "lock = true", "lock = true\nlocked = true", 1) }, 0o600, "locked"},
		{"bad algorithm", func(s string) string {
			return strings.Replace(s, `algorithm = "ecc-p256"`, `algorithm = "ecc-p384"`, 1)
		}, 0o600, "ecc-p384"},
		{"ldevid handle outside storage", func(s string) string { return strings.Replace(s, "handle = 0x81000002", "handle = 0x81010005", 1) }, 0o600, "storage-hierarchy"},
		{"unknown CA", func(s string) string { return strings.Replace(s, `ca = "customer-ldevid"`, `ca = "nope"`, 1) }, 0o600, `"nope"`},
		{"unknown role", func(s string) string { return strings.Replace(s, `role = "qa"`, `role = "boss"`, 1) }, 0o600, "boss"},
		{"plain http CA", func(s string) string {
			return strings.Replace(s, "https://ca.maker.example", "http://ca.maker.example", 1)
		}, 0o600, "https"},
		{"unknown step timeout", func(s string) string { return strings.Replace(s, `ldevid_key = "10m"`, `ldevid_keys = "10m"`, 1) }, 0o600, "ldevid_keys"},
		{"bad nv auth", func(s string) string { return strings.Replace(s, `auth = "platform"`, `auth = "endorsement"`, 1) }, 0o600, "endorsement"},
		{"relative unit path", func(s string) string {
			return strings.Replace(s, `ldevid_cert_path = "/etc/devid/ldevid.pem"`, `ldevid_cert_path = "etc/ldevid.pem"`, 1)
		}, 0o600, "absolute"},
		{"onboarding value missing", func(s string) string { return strings.Replace(s, `id_scope = "0ne00000000"`, ``, 1) }, 0o600, "id_scope"},
		{"secret readable by others", func(s string) string { return s }, 0o644, "chmod 600"},
		{"bad metrics address", func(s string) string {
			return strings.Replace(s, `listen = "127.0.0.1:9464"`, `listen = "9464"`, 1)
		}, 0o600, "metrics.listen"},
		{"bad console address", func(s string) string {
			return strings.Replace(s, `listen = "127.0.0.1:7445"`, `listen = "localhost"`, 1)
		}, 0o600, "console.listen"},
		{"bad wall display prefix", func(s string) string {
			return strings.Replace(s, `wall_display = []`, `wall_display = ["10.1.2.300/24"]`, 1)
		}, 0o600, "console.wall_display"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := exampleDir(t)
			path := filepath.Join(dir, "station.toml")
			data, _ := os.ReadFile(path)
			write(t, path, []byte(tc.edit(string(data))), 0o644)
			if err := os.Chmod(filepath.Join(dir, "secrets/maker-ca.secret"), tc.secrets); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: %v, want an error mentioning %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error leaks a secret: %v", err)
			}
		})
	}
}

func TestTOMLStringEscapes(t *testing.T) {
	for _, s := range []string{`plain`, `quote " inside`, `back\slash`, "new\nline", "tab\t", "ctl\x01"} {
		var v struct{ K string }
		if err := toml.Unmarshal([]byte("K = "+TOMLString(s)), &v); err != nil || v.K != s {
			t.Errorf("TOMLString(%q) = %s: decoded %q, %v", s, TOMLString(s), v.K, err)
		}
	}
}
