package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
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
func writeCert(t testing.TB, certPath, keyPath string) {
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

func write(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

// exampleDir copies deploy/station.example.toml into a folder with a stand-in for every file
// it names. (fixture/line checks the example against the real dev material.)
func exampleDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	example, err := os.ReadFile("../../deploy/station.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "station.toml"), example, 0o644)
	for _, name := range []string{"agent", "api"} {
		writeCert(t, filepath.Join(dir, "dev/tls", name+".pem"), filepath.Join(dir, "dev/tls/keys", name+".key"))
	}
	for _, name := range []string{"tls/station-ca.pem", "pki/tpm-vendor-bundle.pem", "pki/ek-intermediates.pem", "pki/maker-root-ca.pem", "pki/customer-root-ca.pem"} {
		writeCert(t, filepath.Join(dir, "dev", name), "")
	}
	write(t, filepath.Join(dir, "dev/secrets/maker-ca.secret"), []byte("s3cret-maker\n"), 0o600)
	write(t, filepath.Join(dir, "dev/secrets/customer-ca.secret"), []byte("s3cret-customer\n"), 0o600)
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
	if p.IDevID.HardwareModuleName != workflow.HWModuleTPM || p.LDevID.HardwareModuleName != workflow.HWModuleTPM {
		t.Errorf("hardware module names %q, %q; want tpm", p.IDevID.HardwareModuleName, p.LDevID.HardwareModuleName)
	}
	if !p.IDevID.CertificatePolicies || !p.LDevID.CertificatePolicies {
		t.Error("certificate policies not asked for")
	}
	if rt.CAs[0].HeaderSecret.Reveal() != "s3cret-maker" || rt.CAs[0].HeaderName != "Secret-Value" {
		t.Errorf("CA auth not loaded: header %q", rt.CAs[0].HeaderName)
	}
	if rt.ReportsDir != "/var/lib/devid/reports" {
		t.Errorf("reports_dir = %q", rt.ReportsDir)
	}
	if rt.MetricsListen != "127.0.0.1:9464" || rt.ConsoleListen != "127.0.0.1:7445" {
		t.Errorf("metrics listen %q, console listen %q", rt.MetricsListen, rt.ConsoleListen)
	}
	if rt.Roles["mes-1"] != "mes" || rt.StepTimeouts["idevid_key"] != 10*time.Minute {
		t.Errorf("roles %v, timeouts %v", rt.Roles, rt.StepTimeouts)
	}
	pin := "00112233445566778899aabbccddeeff"
	out, err := p.Onboarding.Render(workflow.OnboardingInput{Serial: "SN-0001", LDevIDCertPath: "/etc/devid/ldevid.pem", LDevIDHandle: 0x81020002, PIN: pin})
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
	if problems := CheckAzureIoTIdentity(out); len(problems) != 0 {
		t.Errorf("rendered config fails the schema: %q", problems)
	}
	for _, want := range []string{
		`pkcs11_lib_path = "/usr/lib/x86_64-linux-gnu/libtpm2_pkcs11.so.1"`,
		`pkcs11_base_slot = "pkcs11:token=devid?pin-value=` + pin + `"`,
		`bootstrap_identity_pk = "pkcs11:token=devid;object=ldevid?pin-value=` + pin + `"`,
		`trusted_certs = ["file:///etc/aziot/est-root-ca.pem"]`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("rendered config lacks %s", want)
		}
	}
	if o := p.Onboarding; o.PINPath != "/etc/devid/pkcs11-pin" || o.TrustBundlePath != "/etc/aziot/est-root-ca.pem" || !strings.HasPrefix(string(o.TrustBundle), "-----BEGIN CERTIFICATE-----") {
		t.Errorf("onboarding files: pin %q, bundle %q (%d bytes)", o.PINPath, o.TrustBundlePath, len(o.TrustBundle))
	}
	if got := p.Files(); len(got) != 4 {
		t.Errorf("profile files %q, want the LDevID, the config, the trust bundle and the PIN file", got)
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
		{"ldevid handle in the SRK range", func(s string) string { return strings.Replace(s, "handle = 0x81020002", "handle = 0x81000005", 1) }, 0o600, "keeps for SRKs"},
		{"unknown hardware_module_name", func(s string) string {
			return strings.Replace(s, `hardware_module_name = "tpm"`, `hardware_module_name = "chip"`, 1)
		}, 0o600, "want tpm, serial or none"},
		{"serial hardware_module_name without type", func(s string) string {
			return strings.Replace(s, `hardware_module_name = "tpm"`, `hardware_module_name = "serial"`, 1)
		}, 0o600, "needs a hardware_module_type"},
		{"hardware_module_type with the TPM's name", func(s string) string {
			return strings.Replace(s, `hardware_module_name = "tpm"`, `hardware_module_name = "tpm"`+"\n"+`hardware_module_type = "1.2.3"`, 1)
		}, 0o600, "hardware_module_type is the hwType"},
		{"unknown CA", func(s string) string { return strings.Replace(s, `ca = "customer-ldevid"`, `ca = "nope"`, 1) }, 0o600, `"nope"`},
		{"old onboarding value", func(s string) string {
			return strings.Replace(s, `pkcs11_object = "ldevid"`, `pkcs11_object = "ldevid"`+"\n"+`bootstrap_identity_pk = "pkcs11:token=devid;object=ldevid?pin-source=file:/etc/aziot/pin"`, 1)
		}, 0o600, "values.bootstrap_identity_pk is not a value"},
		{"no PIN file", func(s string) string { return strings.Replace(s, `pin_path = "/etc/devid/pkcs11-pin"`, ``, 1) }, 0o600, "needs trust_bundle, trust_bundle_path and pin_path"},
		{"token label needing escapes", func(s string) string {
			return strings.Replace(s, `pkcs11_token = "devid"`, `pkcs11_token = "dev id;x"`, 1)
		}, 0o600, "values.pkcs11_token"},
		{"onboarding as plain toml", func(s string) string { return strings.Replace(s, `format = "aziot"`, `format = "toml"`, 1) }, 0o600, "checked as aziot"},
		{"unknown role", func(s string) string { return strings.Replace(s, `role = "qa"`, `role = "boss"`, 1) }, 0o600, "boss"},
		{"plain http CA", func(s string) string {
			return strings.Replace(s, "https://ca.maker.example", "http://ca.maker.example", 1)
		}, 0o600, "https"},
		{"plain http CA search", func(s string) string {
			return strings.Replace(s, `search_url = ""`, `search_url = "http://ca.maker.example/search"`, 1)
		}, 0o600, "search_url"},
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
			if err := os.Chmod(filepath.Join(dir, "dev/secrets/maker-ca.secret"), tc.secrets); err != nil {
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

// TestOneErrorPerFault checks that every fault is reported once, and only faults: an error
// that follows from another one (a profile naming a [[ca]] that failed to load, a handle
// checked again across the profile) is not reported as a fault of its own.
func TestOneErrorPerFault(t *testing.T) {
	tests := []struct {
		name string
		edit func(t *testing.T, dir, s string) string
		want []string // one entry per reported problem, a part of its text
	}{
		{"CA file missing", func(t *testing.T, dir, s string) string {
			if err := os.Remove(filepath.Join(dir, "dev/pki/maker-root-ca.pem")); err != nil {
				t.Fatal(err)
			}
			return s
		}, []string{`ca[0] "maker-idevid": issuer_anchors: open`}},
		{"CA over plain http", func(t *testing.T, dir, s string) string {
			return strings.Replace(s, `url = "https://ca.maker.example:8443"`, `url = "http://ca.maker.example:8443"`, 1)
		}, []string{`ca[0] "maker-idevid": url`}},
		{"CA with a bad name", func(t *testing.T, dir, s string) string {
			s = strings.Replace(s, `name = "maker-idevid"`, `name = "Maker IDevID"`, 1)
			return strings.Replace(s, `ca = "maker-idevid"`, `ca = "Maker IDevID"`, 1)
		}, []string{`ca[0] "Maker IDevID": name`}},
		{"every fault of a CA", func(t *testing.T, dir, s string) string {
			if err := os.Remove(filepath.Join(dir, "dev/secrets/customer-ca.secret")); err != nil {
				t.Fatal(err)
			}
			return strings.Replace(s, `url = "https://ca.customer.example:8443"`, `url = "ftp://ca.customer.example"`, 1)
		}, []string{`ca[1] "customer-ldevid": url`, `ca[1] "customer-ldevid": auth.header_secret_file`}},
		{"ldevid handle not persistent", func(t *testing.T, dir, s string) string {
			return strings.Replace(s, "handle = 0x81020002", "handle = 0x01000002", 1)
		}, []string{`profile[0] "default": ldevid: handle 0x1000002 is not`}},
		{"every fault of a key", func(t *testing.T, dir, s string) string {
			s = strings.Replace(s, `algorithm = "ecc-p256"`, `algorithm = "ecc-p384"`, 1)
			return strings.Replace(s, "handle = 0x81020000", "handle = 0x40000001", 1)
		}, []string{`idevid: algorithm "ecc-p384"`, `idevid: handle 0x40000001 is not`}},
		{"CA name unknown", func(t *testing.T, dir, s string) string {
			return strings.Replace(s, `ca = "customer-ldevid"`, `ca = "nope"`, 1)
		}, []string{`ldevid: ca "nope" is not a configured [[ca]]`}},
		{"CA name twice, the second CA broken", func(t *testing.T, dir, s string) string {
			s = strings.Replace(s, `name = "customer-ldevid"`, `name = "maker-idevid"`, 1)
			return strings.Replace(s, `url = "https://ca.customer.example:8443"`, `url = "http://ca.customer.example:8443"`, 1)
		}, []string{`ca[1]: name "maker-idevid" used twice`, `ca[1] "maker-idevid": url`, `ldevid: ca "customer-ldevid" is not a configured [[ca]]`}},
		{"API certificate and client CA both missing", func(t *testing.T, dir, s string) string {
			for _, f := range []string{"dev/tls/api.pem", "dev/tls/station-ca.pem"} {
				if err := os.Remove(filepath.Join(dir, f)); err != nil {
					t.Fatal(err)
				}
			}
			s = strings.Replace(s, `trust_bundle = ["dev/tls/station-ca.pem"]`, `trust_bundle = ["dev/pki/maker-root-ca.pem"]`, 1)
			return strings.Replace(s, `trust_anchors = ["dev/tls/station-ca.pem"]`, `trust_anchors = ["dev/pki/maker-root-ca.pem"]`, 2)
		}, []string{"api: loading", "api.client_ca_file: open"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := exampleDir(t)
			path := filepath.Join(dir, "station.toml")
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			write(t, path, []byte(tc.edit(t, dir, string(data))), 0o644)
			_, err = Load(path)
			if err == nil {
				t.Fatalf("Load succeeded, want %d problems", len(tc.want))
			}
			_, list, _ := strings.Cut(err.Error(), "invalid configuration:\n")
			got := strings.Split(list, "\n")
			if len(got) != len(tc.want) {
				t.Fatalf("Load reported %d problems, want %d (%q):\n%v", len(got), len(tc.want), tc.want, err)
			}
			for _, w := range tc.want {
				found := false
				for _, g := range got {
					found = found || strings.Contains(g, w)
				}
				if !found {
					t.Errorf("no problem mentions %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestDefaultHandles: the example's handles are the TCG registry's and DevID handles, and an
// omitted srk_handle is the registry's SRK for the LDevID's algorithm.
func TestDefaultHandles(t *testing.T) {
	for _, tc := range []struct {
		name, from, to string
		srk            uint32
	}{
		{"example", "", "", 0x81000002},
		{"ecc default", "srk_handle = 0x81000002\n", "", 0x81000002},
		{"rsa default", "srk_handle = 0x81000002\n", "", 0x81000001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := exampleDir(t)
			path := filepath.Join(dir, "station.toml")
			data, _ := os.ReadFile(path)
			s := string(data)
			if tc.from != "" {
				if !strings.Contains(s, tc.from) {
					t.Fatalf("example has no %q", tc.from)
				}
				s = strings.Replace(s, tc.from, tc.to, 1)
			}
			if tc.name == "rsa default" {
				i := strings.Index(s, "[profile.ldevid]")
				s = s[:i] + strings.Replace(s[i:], `algorithm = "ecc-p256"`, `algorithm = "rsa-2048"`, 1)
			}
			write(t, path, []byte(s), 0o644)
			rt, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			p := rt.Profiles["default"]
			if p.SRKHandle != tc.srk || p.IDevID.Handle != 0x81020000 || p.LDevID.Handle != 0x81020002 {
				t.Errorf("srk %#x, idevid %#x, ldevid %#x; want srk %#x, idevid 0x81020000, ldevid 0x81020002",
					p.SRKHandle, p.IDevID.Handle, p.LDevID.Handle, tc.srk)
			}
		})
	}
}

// TestIAKProfile: [profile.iak] turns the IAK on with the layout's handle by default; a handle
// of another key is refused; without it the profile has no IAK.
func TestIAKProfile(t *testing.T) {
	const iak = "[profile.iak]\nalgorithm = \"ecc-p256\"\nca = \"maker-idevid\"\n%s[profile.iak.subject]\ncommon_name = \"{serial}\"\n\n"
	for _, tc := range []struct {
		name, table string
		handle      uint32 // 0: no IAK
		problem     string
	}{
		{"absent", "", 0, ""},
		{"default handle", fmt.Sprintf(iak, ""), 0x81020001, ""},
		{"handle of the IDevID", fmt.Sprintf(iak, "handle = 0x81020000\n"), 0, "iak.handle 0x81020000 is the handle of another key"},
		{"unknown CA", strings.Replace(fmt.Sprintf(iak, ""), "maker-idevid", "nowhere", 1), 0, "iak: ca \"nowhere\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := exampleDir(t)
			path := filepath.Join(dir, "station.toml")
			data, _ := os.ReadFile(path)
			s := strings.Replace(string(data), "[profile.onboarding]", tc.table+"[profile.onboarding]", 1)
			write(t, path, []byte(s), 0o644)
			rt, err := Load(path)
			if tc.problem != "" {
				if err == nil || !strings.Contains(err.Error(), tc.problem) {
					t.Fatalf("Load: %v, want %q", err, tc.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p := rt.Profiles["default"]
			switch {
			case tc.handle == 0 && p.IAK != nil:
				t.Errorf("IAK %+v, want none", p.IAK)
			case tc.handle != 0 && (p.IAK == nil || p.IAK.Handle != tc.handle || p.IAK.Issuer != "maker-idevid" || !p.IAK.CertificatePolicies):
				t.Errorf("IAK %+v, want handle %#x at maker-idevid with policies", p.IAK, tc.handle)
			}
		})
	}
}

// TestCertificatePolicies: certificate_policies defaults to true and can be turned off per key.
func TestCertificatePolicies(t *testing.T) {
	for _, tc := range []struct {
		name, to       string
		idevid, ldevid bool
	}{
		{"omitted", "", true, true},
		{"off for the IDevID", "certificate_policies = false\n", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := exampleDir(t)
			path := filepath.Join(dir, "station.toml")
			data, _ := os.ReadFile(path)
			s := strings.Replace(string(data), "certificate_policies = true\n", tc.to, 1)
			if tc.to == "" {
				s = strings.ReplaceAll(s, "certificate_policies = true\n", "")
			}
			write(t, path, []byte(s), 0o644)
			rt, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			p := rt.Profiles["default"]
			if p.IDevID.CertificatePolicies != tc.idevid || p.LDevID.CertificatePolicies != tc.ldevid {
				t.Errorf("policies %v, %v; want %v, %v", p.IDevID.CertificatePolicies, p.LDevID.CertificatePolicies, tc.idevid, tc.ldevid)
			}
		})
	}
}

// TestProfileRefusesWhatTheAgentRefuses: a profile that places a DevID key or the IDevID
// certificate in a TCG-reserved endorsement location is refused, so that no rework can ever
// undefine an EK certificate index or evict an EK; so is an onboarding file mode that group or
// others could write.
func TestProfileRefusesWhatTheAgentRefuses(t *testing.T) {
	for _, tc := range []struct{ name, from, to, want string }{
		{"idevid handle on the RSA EK", "handle = 0x81020000", "handle = 0x81010001", "idevid: handle 0x81010001 is in the TCG-reserved EK handle range"},
		{"idevid handle at the range end", "handle = 0x81020000", "handle = 0x810100ff", "idevid: handle 0x810100ff is in the TCG-reserved EK handle range"},
		{"idevid nv on the RSA EK certificate", "index = 0x01C90000", "index = 0x01C00002", "idevid_nv.index 0x1c00002 is in the TCG-reserved EK certificate range"},
		{"idevid nv on the ECC EK certificate", "index = 0x01C90000", "index = 0x01C0000A", "idevid_nv.index 0x1c0000a is in the TCG-reserved EK certificate range"},
		{"idevid nv on the EK chain", "index = 0x01C90000", "index = 0x01C00100", "idevid_nv.index 0x1c00100 is in the TCG-reserved EK certificate range"},
		{"ldevid on an EK handle", "handle = 0x81020002", "handle = 0x81010002", "ldevid: handle 0x81010002 is in the TCG-reserved EK handle range"},
		{"onboarding file writable by others", "mode = 0o600", "mode = 0o666", "mode 666 lets group or others write"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := exampleDir(t)
			path := filepath.Join(dir, "station.toml")
			data, _ := os.ReadFile(path)
			if !strings.Contains(string(data), tc.from) {
				t.Fatalf("example has no %q", tc.from)
			}
			write(t, path, []byte(strings.Replace(string(data), tc.from, tc.to, 1)), 0o644)
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// TestRuntimeNeverPrintsSecrets: the validated configuration holds the CA secrets, yet no
// fmt verb, JSON or slog rendering of it shows them.
func TestRuntimeNeverPrintsSecrets(t *testing.T) {
	dir := exampleDir(t)
	rt, err := Load(filepath.Join(dir, "station.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if rt.CAs[0].HeaderSecret.Reveal() != "s3cret-maker" || rt.CAs[1].HeaderSecret.Reveal() != "s3cret-customer" {
		t.Fatal("the secrets were not loaded")
	}
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%d", "%x", "%q"} {
		for _, v := range []any{rt, *rt, rt.CAs, rt.CAs[0], rt.CAs[0].HeaderSecret} {
			outs = append(outs, fmt.Sprintf(verb, v))
		}
	}
	j, err := json.Marshal(rt.CAs)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "cas", rt.CAs, "ca", rt.CAs[0])
	slog.New(slog.NewTextHandler(&logs, nil)).Info("config", "cas", rt.CAs, "ca", rt.CAs[0])
	outs = append(outs, string(j), logs.String())
	for _, out := range outs {
		if strings.Contains(out, "s3cret") || strings.Contains(out, fmt.Sprintf("%x", "s3cret")) {
			t.Fatalf("a secret is printed: %.300s", out)
		}
	}
}

// TestKeyFilesMustBePrivate: a TLS private key file open to group or others is refused like a
// CA secret file.
func TestKeyFilesMustBePrivate(t *testing.T) {
	for _, key := range []string{"dev/tls/keys/agent.key", "dev/tls/keys/api.key"} {
		for _, mode := range []os.FileMode{0o640, 0o604, 0o660} {
			t.Run(fmt.Sprintf("%s %o", key, mode), func(t *testing.T) {
				dir := exampleDir(t)
				if err := os.Chmod(filepath.Join(dir, key), mode); err != nil {
					t.Fatal(err)
				}
				_, err := Load(filepath.Join(dir, "station.toml"))
				if err == nil || !strings.Contains(err.Error(), "chmod 600") || !strings.Contains(err.Error(), key) {
					t.Fatalf("Load: %v, want a chmod 600 error naming %s", err, key)
				}
			})
		}
	}
}

// TestRoleBindings: [[api.role]] names a certificate by common_name, fingerprint or uri, one of
// them exactly; fingerprints are normalized to lowercase hex without colons.
func TestRoleBindings(t *testing.T) {
	dir := exampleDir(t)
	rt, err := Load(filepath.Join(dir, "station.toml"))
	if err != nil {
		t.Fatal(err)
	}
	const fp = "5f3a9c0e7d21b468aa19c24e8b70d136ee029f5bc8417a630db92e84f157c608"
	if rt.RoleFingerprints[fp] != "qa" || rt.RoleURIs["spiffe://factory.example/mes/line-2"] != "mes" || rt.Roles["qa-1"] != "qa" {
		t.Fatalf("roles %v, fingerprints %v, URIs %v", rt.Roles, rt.RoleFingerprints, rt.RoleURIs)
	}
	for _, tc := range []struct{ name, role, want string }{
		{"two names", "common_name = \"x\"\nuri = \"spiffe://a/b\"\nrole = \"qa\"", "exactly one of common_name, fingerprint and uri"},
		{"no name", "role = \"qa\"", "exactly one of common_name, fingerprint and uri"},
		{"short fingerprint", "fingerprint = \"5f3a9c\"\nrole = \"qa\"", "64 hex digits"},
		{"relative uri", "uri = \"mes/line-2\"\nrole = \"qa\"", "not an absolute URI"},
		{"fingerprint bound twice", "fingerprint = \"" + strings.ToUpper(fp) + "\"\nrole = \"qa\"", "bound twice"},
		{"uri with an unknown role", "uri = \"spiffe://a/b\"\nrole = \"boss\"", "boss"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := exampleDir(t)
			path := filepath.Join(dir, "station.toml")
			data, _ := os.ReadFile(path)
			edited := strings.Replace(string(data), "[tpm_vendor]", "[[api.role]]\n"+tc.role+"\n\n[tpm_vendor]", 1)
			write(t, path, []byte(edited), 0o644)
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// TestStepTimeoutKeys: [workflow.step_timeouts] takes a step name or a timeout class; anything
// else is an error.
func TestStepTimeoutKeys(t *testing.T) {
	for key, ok := range map[string]bool{"idevid_enroll": true, "ca": true, "tpm": true, "bogus": false} {
		dir := exampleDir(t)
		path := filepath.Join(dir, "station.toml")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		edited := strings.Replace(string(data), "[workflow.step_timeouts]\n", "[workflow.step_timeouts]\n"+key+"_x = \"1m\"\n", 1)
		edited = strings.Replace(edited, key+"_x", key, 1)
		if strings.Count(edited, "\n"+key+" = ") > 1 {
			continue // the example sets it already
		}
		write(t, path, []byte(edited), 0o644)
		_, err = Load(path)
		if ok && err != nil {
			t.Errorf("%s: %v", key, err)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), "unknown step")) {
			t.Errorf("%s: %v, want an unknown step error", key, err)
		}
	}
}
