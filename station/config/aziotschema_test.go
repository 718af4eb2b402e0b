package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAzureIoTIdentityFixtures: configurations in the shapes of the Identity Service's own
// test fixtures (ours, in testdata/aziot) pass the schema check.
func TestAzureIoTIdentityFixtures(t *testing.T) {
	paths, err := filepath.Glob("testdata/aziot/*.toml")
	if err != nil || len(paths) < 6 {
		t.Fatalf("fixtures: %v %v", paths, err)
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if problems := CheckAzureIoTIdentity(data); len(problems) != 0 {
				t.Errorf("problems:\n%s", strings.Join(problems, "\n"))
			}
		})
	}
}

// TestAzureIoTIdentityRefusals: each broken variant of the EST-over-PKCS#11 fixture fails with
// a problem naming the key.
func TestAzureIoTIdentityRefusals(t *testing.T) {
	good, err := os.ReadFile("testdata/aziot/dps-x509-est-pkcs11-bootstrap.toml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, from, to, want string }{
		{"unknown top-level key", `hostname = "unit-0001"`, `hostname = "unit-0001"` + "\nhost_name = \"x\"", "host_name: unknown key"},
		{"unknown nested key", `id_scope = "0ne00AAAA11"`, `id_scope = "0ne00AAAA11"` + "\nidscope = \"x\"", "provisioning.idscope: unknown key"},
		{"missing id_scope", `id_scope = "0ne00AAAA11"`, ``, "provisioning.id_scope: missing"},
		{"missing source", `[provisioning]` + "\nsource = \"dps\"", `[provisioning]`, "provisioning.source: missing; want one of"},
		{"pin-source", `object=ldevid?pin-value=0123abcd`, `object=ldevid?pin-source=file:/etc/pin`, "ignores pin-source"},
		{"no pkcs11 library", `pkcs11_lib_path = "/usr/lib/x86_64-linux-gnu/libtpm2_pkcs11.so.1"` + "\n" + `pkcs11_base_slot = "pkcs11:token=devid?pin-value=0123abcd"`, ``, "aziot_keys.pkcs11_lib_path: missing"},
		{"bootstrap cert without key", `bootstrap_identity_pk = "pkcs11:token=devid;object=ldevid?pin-value=0123abcd"`, ``, "bootstrap_identity_cert, bootstrap_identity_pk go together"},
		{"unknown attestation method", `method = "x509"`, `method = "x.509"`, "provisioning.attestation.method"},
		{"auto renew incomplete", `threshold = "60%"`, ``, "cert_issuance.est.identity_auto_renew.threshold: missing"},
		{"trusted certs not a list", `trusted_certs = ["file:///etc/aziot/est-ca.pem"]`, `trusted_certs = "file:///etc/aziot/est-ca.pem"`, "cert_issuance.est.trusted_certs: want an array"},
		{"relative trusted cert", `trusted_certs = ["file:///etc/aziot/est-ca.pem"]`, `trusted_certs = ["/etc/aziot/est-ca.pem"]`, "trusted_certs[0]"},
		{"plain http EST", `default = "https://est.example.net/.well-known/est"`, `default = "http://est.example.net/.well-known/est"`, "cert_issuance.est.urls.default: \"http://est.example.net/.well-known/est\" is not an https URL"},
		{"not TOML", `[aziot_keys]`, `[aziot_keys`, "not TOML"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(string(good), tc.from) {
				t.Fatalf("fixture has no %q", tc.from)
			}
			problems := CheckAzureIoTIdentity([]byte(strings.Replace(string(good), tc.from, tc.to, 1)))
			if !strings.Contains(strings.Join(problems, "\n"), tc.want) {
				t.Errorf("problems %q, want one containing %q", problems, tc.want)
			}
		})
	}
	if problems := CheckAzureIoTIdentity([]byte(`hostname = "x"`)); strings.Join(problems, "\n") != "provisioning: missing" {
		t.Errorf("no provisioning: %q", problems)
	}
}
