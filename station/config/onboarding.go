package config

import (
	"bytes"
	_ "embed"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"github.com/pelletier/go-toml/v2"

	"github.com/devid-station/devid/station/workflow"
)

// Onboarding is a profile's cloud-onboarding file: a text/template rendered per unit from
// verified data and written to the unit.
type Onboarding struct {
	// Template is "azure-iot-identity" (the embedded Azure IoT Identity Service config.toml
	// for EST bootstrap) or a path to a template file.
	Template string `toml:"template"`
	// Path is the file on the unit.
	Path string `toml:"path"`
	// Mode is its permission bits (default 0600).
	Mode uint32 `toml:"mode"`
	// Format is "aziot" (the rendered file must pass CheckAzureIoTIdentity; the only format of
	// the built-in template, and its default), "toml" (it must parse as TOML; the default of
	// other templates) or "text".
	Format string `toml:"format"`
	// Values are passed to the template as .Values.
	Values map[string]string `toml:"values"`
	// TrustBundle lists station PEM files whose certificates go to the unit at
	// TrustBundlePath (.TrustBundlePath in templates): the roots the unit trusts for its EST
	// server.
	TrustBundle     []string `toml:"trust_bundle"`
	TrustBundlePath string   `toml:"trust_bundle_path"`
	// PINPath is where the unit receives a fresh random PKCS#11 user PIN (mode 0600), which
	// templates see as .PIN (and the path as .PINPath).
	PINPath string `toml:"pin_path"`
}

//go:embed azure-iot-identity.toml.tmpl
var azureTemplate string

// AzureIoTIdentityTemplate is the built-in onboarding template's name.
const AzureIoTIdentityTemplate = "azure-iot-identity"

// azureValues lists the values the Azure template takes, all required: the DPS endpoint and ID
// scope, the EST URL, the tpm2-pkcs11 library, and the token and object labels under which the
// unit's first boot links the LDevID key into a PKCS#11 token.
var azureValues = []string{"global_endpoint", "id_scope", "est_url", "pkcs11_lib_path", "pkcs11_token", "pkcs11_object"}

// labelRE is a PKCS#11 token or object label that needs no escaping in a PKCS#11 URI.
var labelRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,32}$`)

// templateData is what a template sees.
type templateData struct {
	Serial          string
	LDevIDCertPath  string
	LDevIDHandle    string
	TrustBundlePath string
	PINPath         string
	PIN             string
	Values          map[string]string
}

var funcs = template.FuncMap{
	// toml quotes a string as a TOML basic string.
	"toml": TOMLString,
}

// TOMLString quotes s as a TOML basic string (for templates that write TOML).
func TOMLString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func (o *Onboarding) validate(abs func(string) string) (*workflow.Onboarding, error) {
	if !filepath.IsAbs(o.Path) {
		return nil, fmt.Errorf("path %q must be absolute (a path on the unit)", o.Path)
	}
	if o.Template == "" {
		return nil, errors.New("template is required")
	}
	text := azureTemplate
	format := o.Format
	if o.Template != AzureIoTIdentityTemplate {
		b, err := os.ReadFile(abs(o.Template))
		if err != nil {
			return nil, fmt.Errorf("template: %w", err)
		}
		text = string(b)
	} else {
		for _, k := range azureValues {
			if o.Values[k] == "" {
				return nil, fmt.Errorf("values.%s is required by the %s template", k, AzureIoTIdentityTemplate)
			}
		}
		for _, k := range []string{"pkcs11_token", "pkcs11_object"} {
			if !labelRE.MatchString(o.Values[k]) {
				return nil, fmt.Errorf("values.%s %q: want 1-32 characters of [A-Za-z0-9._-] (it goes into a PKCS#11 URI as is)", k, o.Values[k])
			}
		}
		for k := range o.Values {
			if !slices.Contains(azureValues, k) {
				return nil, fmt.Errorf("values.%s is not a value of the %s template (it takes %s)", k, AzureIoTIdentityTemplate, strings.Join(azureValues, ", "))
			}
		}
		if o.TrustBundlePath == "" || len(o.TrustBundle) == 0 || o.PINPath == "" {
			return nil, fmt.Errorf("the %s template needs trust_bundle, trust_bundle_path and pin_path", AzureIoTIdentityTemplate)
		}
		if format != "" && format != "aziot" {
			return nil, fmt.Errorf("format %q: the %s template is checked as aziot", format, AzureIoTIdentityTemplate)
		}
	}
	for _, p := range []string{o.TrustBundlePath, o.PINPath} {
		if p != "" && (!filepath.IsAbs(p) || p == o.Path) {
			return nil, fmt.Errorf("%q must be an absolute path on the unit other than path", p)
		}
	}
	if (o.TrustBundlePath == "") != (len(o.TrustBundle) == 0) {
		return nil, errors.New("trust_bundle and trust_bundle_path go together")
	}
	var bundle []byte
	for _, f := range o.TrustBundle {
		certs, err := loadCerts(abs(f))
		if err != nil {
			return nil, fmt.Errorf("trust_bundle: %w", err)
		}
		for _, c := range certs {
			bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
	}
	tmpl, err := template.New(filepath.Base(o.Path)).Funcs(funcs).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	if format == "" && o.Template == AzureIoTIdentityTemplate {
		format = "aziot"
	} else if format == "" {
		format = "toml"
	}
	if format != "aziot" && format != "toml" && format != "text" {
		return nil, fmt.Errorf("format %q: want aziot, toml or text", o.Format)
	}
	mode := o.Mode
	if mode == 0 {
		mode = 0o600
	}
	if mode > 0o777 {
		return nil, fmt.Errorf("mode %o: want permission bits only", mode)
	}
	if mode&0o022 != 0 {
		return nil, fmt.Errorf("mode %o lets group or others write (the device agent refuses it)", mode)
	}
	values, trustPath, pinPath := o.Values, o.TrustBundlePath, o.PINPath
	render := func(in workflow.OnboardingInput) ([]byte, error) {
		var b bytes.Buffer
		if err := tmpl.Execute(&b, templateData{
			Serial: in.Serial, LDevIDCertPath: in.LDevIDCertPath,
			LDevIDHandle:    fmt.Sprintf("0x%08x", in.LDevIDHandle),
			TrustBundlePath: trustPath, PINPath: pinPath, PIN: in.PIN, Values: values,
		}); err != nil {
			// text/template errors quote no data, so the PIN stays out of them.
			return nil, fmt.Errorf("rendering: %w", err)
		}
		switch format {
		case "toml":
			var v map[string]any
			if err := toml.Unmarshal(b.Bytes(), &v); err != nil {
				return nil, fmt.Errorf("rendered onboarding file is not valid TOML: %w", err)
			}
		case "aziot":
			if problems := CheckAzureIoTIdentity(b.Bytes()); len(problems) > 0 {
				return nil, fmt.Errorf("rendered onboarding file fails the Identity Service schema: %s", strings.Join(problems, "; "))
			}
		}
		return b.Bytes(), nil
	}
	// Render once with a sample so that template mistakes show at start-up, not on the line.
	if _, err := render(workflow.OnboardingInput{Serial: "SAMPLE-0001", LDevIDCertPath: "/etc/devid/ldevid.pem", LDevIDHandle: 0x81020002, PIN: "0123456789abcdef0123456789abcdef"}); err != nil {
		return nil, err
	}
	return &workflow.Onboarding{Path: o.Path, Mode: mode, Render: render,
		TrustBundlePath: o.TrustBundlePath, TrustBundle: bundle, PINPath: o.PINPath}, nil
}
