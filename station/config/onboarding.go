package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	// Format is "toml" (the rendered file must parse as TOML) or "text".
	Format string `toml:"format"`
	// Values are passed to the template as .Values.
	Values map[string]string `toml:"values"`
}

//go:embed azure-iot-identity.toml.tmpl
var azureTemplate string

// AzureIoTIdentityTemplate is the built-in onboarding template's name.
const AzureIoTIdentityTemplate = "azure-iot-identity"

// azureRequired lists the values the Azure template needs.
var azureRequired = []string{"global_endpoint", "id_scope", "est_url", "est_trusted_certs", "bootstrap_identity_pk"}

// templateData is what a template sees.
type templateData struct {
	Serial         string
	LDevIDCertPath string
	LDevIDHandle   string
	Values         map[string]string
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
	if o.Template != AzureIoTIdentityTemplate {
		b, err := os.ReadFile(abs(o.Template))
		if err != nil {
			return nil, fmt.Errorf("template: %w", err)
		}
		text = string(b)
	} else {
		for _, k := range azureRequired {
			if o.Values[k] == "" {
				return nil, fmt.Errorf("values.%s is required by the %s template", k, AzureIoTIdentityTemplate)
			}
		}
	}
	tmpl, err := template.New(filepath.Base(o.Path)).Funcs(funcs).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	format := o.Format
	if format == "" {
		format = "toml"
	}
	if format != "toml" && format != "text" {
		return nil, fmt.Errorf("format %q: want toml or text", o.Format)
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
	values := o.Values
	render := func(in workflow.OnboardingInput) ([]byte, error) {
		var b bytes.Buffer
		if err := tmpl.Execute(&b, templateData{
			Serial: in.Serial, LDevIDCertPath: in.LDevIDCertPath,
			LDevIDHandle: fmt.Sprintf("0x%08x", in.LDevIDHandle), Values: values,
		}); err != nil {
			return nil, fmt.Errorf("rendering: %w", err)
		}
		if format == "toml" {
			var v map[string]any
			if err := toml.Unmarshal(b.Bytes(), &v); err != nil {
				return nil, fmt.Errorf("rendered onboarding file is not valid TOML: %w", err)
			}
		}
		return b.Bytes(), nil
	}
	// Render once with a sample so that template mistakes show at start-up, not on the line.
	if _, err := render(workflow.OnboardingInput{Serial: "SAMPLE-0001", LDevIDCertPath: "/etc/devid/ldevid.pem", LDevIDHandle: 0x81020002}); err != nil {
		return nil, err
	}
	return &workflow.Onboarding{Path: o.Path, Mode: mode, Render: render}, nil
}
