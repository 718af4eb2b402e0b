package workflow

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"fmt"
	"log/slog"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
)

// LDevID enrollment authentication modes.
const (
	// AuthStationRA: the station authenticates to the customer CA with its own credentials,
	// as a registration authority.
	AuthStationRA = "station-ra"
	// AuthIDevIDMTLS: the unit authenticates with its IDevID certificate over mTLS; the TLS
	// signature is made by the unit's TPM through the agent session.
	AuthIDevIDMTLS = "idevid-mtls"
)

// Profile says how units of one kind are provisioned. It is built from validated config.
type Profile struct {
	// Name identifies the profile in work orders.
	Name string
	// IDevID describes the IDevID key and certificate.
	IDevID KeyProfile
	// IDevIDNV is where the IDevID certificate is installed in TPM NV.
	IDevIDNV NVProfile
	// LDevID describes the LDevID key and certificate.
	LDevID KeyProfile
	// IAK, when set, describes the Initial Attestation Key and its certificate: the TPM creates
	// it, proves it beside the EK, certifies the IDevID key with it (TPM2_Certify) and the CA
	// certifies it (steps iak_*). Nil skips those steps.
	IAK *KeyProfile
	// SRKHandle is the LDevID key's parent.
	SRKHandle uint32
	// LDevIDCertPath is where the LDevID certificate and chain (PEM) go on the unit.
	LDevIDCertPath string
	// LDevIDAuth is AuthStationRA or AuthIDevIDMTLS.
	LDevIDAuth string
	// Onboarding renders the unit's cloud-onboarding configuration; nil writes none.
	Onboarding *Onboarding
	// FieldCheck is the field_check step's check (zero: off).
	FieldCheck FieldCheck
}

// KeyProfile describes one DevID key and its certificate.
type KeyProfile struct {
	// Algorithm is the key type.
	Algorithm agentv1.KeyAlgorithm
	// Handle is the persistent handle.
	Handle uint32
	// Issuer names the CA (a key of Runner.Issuers).
	Issuer string
	// Subject is the certificate subject.
	Subject Subject
	// HardwareModuleType is the hwType of the hardwareModuleName SAN with HWModuleSerial.
	HardwareModuleType asn1.ObjectIdentifier
	// HardwareModuleName is what the hardwareModuleName SAN names: HWModuleTPM,
	// HWModuleSerial or HWModuleNone (no SAN).
	HardwareModuleName string
	// CertificatePolicies asks for the TCG DevID certificate policies verifiedTPMResidency and
	// verifiedTPMFixed, and checks them in the issued certificate.
	CertificatePolicies bool
}

// NVProfile is an NV index for a certificate.
type NVProfile struct {
	// Index is the NV index handle.
	Index uint32
	// Auth is the hierarchy that defines and writes it.
	Auth agentv1.Hierarchy
	// Lock write-locks it after the read-back.
	Lock bool
}

// Onboarding writes a cloud-onboarding configuration to the unit.
type Onboarding struct {
	// Path is the file on the unit.
	Path string
	// Mode is its permission bits.
	Mode uint32
	// Render produces the file's content for a provisioned unit.
	Render func(OnboardingInput) ([]byte, error)
	// TrustBundlePath, when set, receives TrustBundle (PEM, mode 0644) before the
	// configuration, which names it.
	TrustBundlePath string
	TrustBundle     []byte
	// PINPath, when set, receives a fresh random PKCS#11 user PIN for the unit (mode 0600),
	// which the configuration carries too (OnboardingInput.PIN).
	PINPath string
}

// OnboardingInput is what an onboarding template may use: verified data only.
type OnboardingInput struct {
	Serial         string
	LDevIDCertPath string
	LDevIDHandle   uint32
	LDevIDCert     *x509.Certificate
	// PIN is the unit's PKCS#11 user PIN (Onboarding.PINPath); a secret: never log it.
	PIN string
}

// EnrollRequest is one certificate request to a CA.
type EnrollRequest struct {
	// Serial is the unit's serial, for logs and metrics.
	Serial string
	// CSR is the DER PKCS#10 request.
	CSR []byte
	// ClientCert, when set, authenticates the enrollment as the unit (its IDevID, with a key
	// that signs through the agent session).
	ClientCert *ClientCert
	// OnRetry, when set, is told each time the request is sent again after a failed attempt:
	// that attempt may have been issued and its answer lost.
	OnRetry func()
	// Reenroll asks for a re-enrollment (EST /simplereenroll) of ClientCert, which is then
	// required.
	Reenroll bool
}

// ClientCert is a TLS client certificate whose key may live anywhere (a unit's TPM).
type ClientCert struct {
	// Chain is the leaf, then its intermediates.
	Chain []*x509.Certificate
	// Key signs the TLS handshake.
	Key crypto.Signer
}

// String describes the certificate by its leaf subject, never the key.
func (c *ClientCert) String() string {
	if c == nil || len(c.Chain) == 0 {
		return "ClientCert{}"
	}
	return "ClientCert{Subject:" + c.Chain[0].Subject.String() + " Key:[redacted]}"
}

// Format implements fmt.Formatter: every verb prints String, so no verb reaches the key.
func (c *ClientCert) Format(f fmt.State, _ rune) { fmt.Fprint(f, c.String()) }

// LogValue implements slog.LogValuer without the key.
func (c *ClientCert) LogValue() slog.Value { return slog.StringValue(c.String()) }

// MarshalJSON implements json.Marshaler without the key.
func (c *ClientCert) MarshalJSON() ([]byte, error) { return json.Marshal(c.String()) }

// Issued is a CA's answer.
type Issued struct {
	// Leaf is the issued certificate.
	Leaf *x509.Certificate
	// Chain holds the intermediates, leaf excluded.
	Chain []*x509.Certificate
}

// UnusableAnswer is implemented by Issuer errors for a CA answer whose certificates must not be
// used (another key, no chain): the CA issued them all the same, so the store records them.
type UnusableAnswer interface {
	error
	IssuedCertificates() []*x509.Certificate
}

// Issuer enrolls CSRs at one CA. Implementations are safe for concurrent use.
type Issuer interface {
	// Enroll submits req and returns the verified answer.
	Enroll(ctx context.Context, req EnrollRequest) (*Issued, error)
	// Roots returns the trust anchors issued certificates must chain to.
	Roots() *x509.CertPool
}

// Files returns every path on the unit the profile writes: the LDevID certificate file and
// the onboarding configuration with its trust bundle and PIN file, if any.
func (p *Profile) Files() []string {
	files := []string{p.LDevIDCertPath}
	if o := p.Onboarding; o != nil {
		files = append(files, o.Path)
		for _, f := range []string{o.TrustBundlePath, o.PINPath} {
			if f != "" {
				files = append(files, f)
			}
		}
	}
	return files
}

func (p *Profile) validate(issuers map[string]Issuer) error {
	keys := []KeyProfile{p.IDevID, p.LDevID}
	if p.IAK != nil {
		keys = append(keys, *p.IAK)
	}
	for _, k := range keys {
		if _, ok := issuers[k.Issuer]; !ok {
			return fmt.Errorf("profile %s: unknown CA %q", p.Name, k.Issuer)
		}
	}
	return nil
}
