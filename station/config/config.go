// Package config reads the station's TOML configuration strictly (an unknown key is an error),
// validates every value and turns it into the typed runtime configuration stationd runs with:
// TLS material loaded and checked, trust bundles parsed, secrets read from their files, profiles
// built for the workflow. deploy/station.example.toml documents every key.
package config

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/devid-station/devid/ca-client/secret"
	"github.com/devid-station/devid/device-agent/tpm/reserved"
	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/workflow"
)

// Duration is a time.Duration written as a Go duration string ("90s", "5m").
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("negative duration %s", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler: a File written back reads the same.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// File is the configuration file as written.
type File struct {
	StationID string    `toml:"station_id"`
	StorePath string    `toml:"store_path"`
	Agents    Agents    `toml:"agents"`
	API       API       `toml:"api"`
	TPMVendor TPMVendor `toml:"tpm_vendor"`
	Workflow  Workflow  `toml:"workflow"`
	CAs       []CA      `toml:"ca"`
	Profiles  []Profile `toml:"profile"`

	// ReportsDir is where printable reports are written (empty: none).
	ReportsDir string  `toml:"reports_dir"`
	Metrics    Metrics `toml:"metrics"`
	Console    Console `toml:"console"`
	Audit      Audit   `toml:"audit"`
}

// Audit is the signing of the audit chain.
type Audit struct {
	// KeyPath is the audit key (PEM ECDSA P-256, mode 0600), created when
	// absent; empty means audit-key.pem beside the store.
	KeyPath string `toml:"key_path"`
	// CheckpointEvery is how many audit records may follow a signed
	// checkpoint before the next (0: 1000).
	CheckpointEvery int `toml:"checkpoint_every"`
	// CheckpointInterval is the longest time between checkpoints (0: 5m).
	CheckpointInterval Duration `toml:"checkpoint_interval"`
}

// Metrics is the Prometheus listener.
type Metrics struct {
	Listen string `toml:"listen"`
}

// Console is the operator console's HTTPS listener (the API's certificate and client CAs).
type Console struct {
	Listen string `toml:"listen"`
	// WallDisplay lists the addresses (CIDR prefixes) that may view the console read-only
	// without a client certificate.
	WallDisplay []string `toml:"wall_display"`
}

// Agents is the agent gateway listener.
type Agents struct {
	Listen           string   `toml:"listen"`
	CertFile         string   `toml:"cert_file"`
	KeyFile          string   `toml:"key_file"`
	MaxUnitsInFlight int      `toml:"max_units_in_flight"`
	HelloTimeout     Duration `toml:"hello_timeout"`
	// SlotWait bounds the wait of a session that passed its first checks for a free slot.
	SlotWait Duration `toml:"slot_wait"`
	// MaxSessionsPerPeer bounds the open sessions of one peer address.
	MaxSessionsPerPeer int `toml:"max_sessions_per_peer"`
	// MaxRefusalsPerPeer refused sessions of one peer address within RefusalWindow block its
	// new sessions until the window ends.
	MaxRefusalsPerPeer int      `toml:"max_refusals_per_peer"`
	RefusalWindow      Duration `toml:"refusal_window"`
}

// API is the MES/operator API listener.
type API struct {
	Listen       string        `toml:"listen"`
	CertFile     string        `toml:"cert_file"`
	KeyFile      string        `toml:"key_file"`
	ClientCAFile string        `toml:"client_ca_file"`
	Roles        []RoleBinding `toml:"role"`
}

// RoleBinding gives the holder of a client certificate a role. Exactly one of CommonName,
// Fingerprint and URI names the certificate.
type RoleBinding struct {
	CommonName  string `toml:"common_name"`
	Fingerprint string `toml:"fingerprint"`
	URI         string `toml:"uri"`
	Role        string `toml:"role"`
}

// TPMVendor is the pinned trust for EK certificates.
type TPMVendor struct {
	Roots         []string `toml:"roots"`
	Intermediates []string `toml:"intermediates"`
	EKAlgorithms  []string `toml:"ek_algorithms"`
}

// Workflow holds per-step timeouts.
type Workflow struct {
	StepTimeout  Duration            `toml:"step_timeout"`
	StepTimeouts map[string]Duration `toml:"step_timeouts"`
	HandoverWait Duration            `toml:"handover_wait"`
}

// CA is one EST certificate authority.
type CA struct {
	Name          string   `toml:"name"`
	URL           string   `toml:"url"`
	Label         string   `toml:"label"`
	TrustAnchors  []string `toml:"trust_anchors"`
	IssuerAnchors []string `toml:"issuer_anchors"`
	Auth          CAAuth   `toml:"auth"`
	Batch         Batch    `toml:"batch"`
	Retry         Retry    `toml:"retry"`
	// SearchURL, when set, is the CA's issuance search (https): the station asks it which
	// certificates the CA issued for the key of an enrollment whose answer was lost, with the
	// same credentials (header secret or basic) as for enrollment.
	SearchURL string `toml:"search_url"`
}

// CAAuth is how the station authenticates to a CA. Secrets live in files, never here.
type CAAuth struct {
	BasicUser         string `toml:"basic_user"`
	BasicPasswordFile string `toml:"basic_password_file"`
	HeaderName        string `toml:"header_name"`
	HeaderSecretFile  string `toml:"header_secret_file"`
	ClientCertFile    string `toml:"client_cert_file"`
	ClientKeyFile     string `toml:"client_key_file"`
}

// Batch tunes the batcher in front of a CA.
type Batch struct {
	MaxBatch    int      `toml:"max_batch"`
	MaxWait     Duration `toml:"max_wait"`
	MaxInFlight int      `toml:"max_in_flight"`
	RateLimit   float64  `toml:"rate_limit"`
	Burst       int      `toml:"burst"`
}

// Retry tunes the EST client's retries.
type Retry struct {
	Max             int      `toml:"max"`
	WaitMin         Duration `toml:"wait_min"`
	WaitMax         Duration `toml:"wait_max"`
	PendingDeadline Duration `toml:"pending_deadline"`
	Timeout         Duration `toml:"timeout"`
}

// Profile is how one kind of unit is provisioned.
type Profile struct {
	Name           string      `toml:"name"`
	IDevID         Key         `toml:"idevid"`
	IDevIDNV       NV          `toml:"idevid_nv"`
	LDevID         Key         `toml:"ldevid"`
	SRKHandle      uint32      `toml:"srk_handle"`
	LDevIDCertPath string      `toml:"ldevid_cert_path"`
	LDevIDAuth     string      `toml:"ldevid_auth"`
	Onboarding     *Onboarding `toml:"onboarding"`
	// IAK, when present, has the TPM make an Initial Attestation Key that certifies the IDevID
	// key (TPM2_Certify) and gets its own certificate; handle defaults to 0x81020001.
	IAK        *Key        `toml:"iak"`
	FieldCheck *FieldCheck `toml:"field_check"`
}

// Key is one DevID key and its certificate request.
type Key struct {
	Algorithm          string  `toml:"algorithm"`
	Handle             uint32  `toml:"handle"`
	CA                 string  `toml:"ca"`
	Subject            Subject `toml:"subject"`
	HardwareModuleType string  `toml:"hardware_module_type"`
	HardwareModuleName string  `toml:"hardware_module_name"`
	// CertificatePolicies defaults to true.
	CertificatePolicies *bool `toml:"certificate_policies"`
}

// Subject is a certificate subject; common_name may hold "{serial}".
type Subject struct {
	Country            []string `toml:"country"`
	Organization       []string `toml:"organization"`
	OrganizationalUnit []string `toml:"organizational_unit"`
	CommonName         string   `toml:"common_name"`
}

// NV is the IDevID certificate's NV index.
type NV struct {
	Index uint32 `toml:"index"`
	Auth  string `toml:"auth"`
	Lock  bool   `toml:"lock"`
}

// Decode parses a configuration strictly.
func Decode(data []byte) (*File, error) {
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			return nil, fmt.Errorf("unknown configuration keys:\n%s", strict.String())
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("line %d column %d: %s", row, col, de.Error())
		}
		return nil, err
	}
	return &f, nil
}

// Load reads, decodes and validates the file at path; relative paths inside it are relative
// to its folder.
func Load(path string) (*Runtime, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	f, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	rt, err := f.Validate(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return rt, nil
}

// Runtime is the validated configuration.
type Runtime struct {
	StationID        string
	StorePath        string
	AgentListen      string
	AgentTLS         *tls.Config
	MaxUnitsInFlight int
	HelloTimeout     time.Duration
	// SlotWait, MaxSessionsPerPeer, MaxRefusalsPerPeer and RefusalWindow bound agent sessions
	// (gateway.Config; 0 = its default).
	SlotWait           time.Duration
	MaxSessionsPerPeer int
	MaxRefusalsPerPeer int
	RefusalWindow      time.Duration
	APIListen          string
	APITLS             *tls.Config
	// Roles maps a client certificate CommonName to its role, RoleFingerprints the lowercase
	// hex SHA-256 of a certificate's DER, RoleURIs a subjectAltName URI. The API looks a
	// certificate up by fingerprint, then URI, then CommonName.
	Roles            map[string]string
	RoleFingerprints map[string]string
	RoleURIs         map[string]string
	EKRoots          []*x509.Certificate
	EKIntermediates  []*x509.Certificate
	EKAlgorithms     []agentv1.KeyAlgorithm
	StepTimeout      time.Duration
	StepTimeouts     map[string]time.Duration
	HandoverWait     time.Duration
	CAs              []CARuntime
	Profiles         map[string]*workflow.Profile

	// ReportsDir is the absolute reports folder; empty: the station writes no report files.
	ReportsDir string
	// MetricsListen is the Prometheus /metrics listener's address; empty: none.
	MetricsListen string
	// ConsoleListen is the operator console's HTTPS listener address; empty: none.
	ConsoleListen string
	// ConsoleWallDisplay are the addresses that may view the console without a certificate.
	ConsoleWallDisplay []netip.Prefix
	// AuditKeyPath is the audit key file; CheckpointEvery and
	// CheckpointInterval how often its checkpoints are signed (0: the store's defaults).
	AuditKeyPath       string
	CheckpointEvery    int
	CheckpointInterval time.Duration
}

// CARuntime is one validated CA.
type CARuntime struct {
	Name          string
	URL, Label    string
	TrustAnchors  []*x509.Certificate
	IssuerAnchors []*x509.Certificate
	BasicUser     string
	BasicPassword secret.Secret
	HeaderName    string
	HeaderSecret  secret.Secret
	ClientCert    *workflow.ClientCert
	Batch         Batch
	Retry         Retry
	SearchURL     string
}

// Roles a client certificate may have.
var roles = []string{"operator", "mes", "qa", "admin"}

var (
	nameRE        = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	fingerprintRE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	headerRE      = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
)

type problems []string

func (p *problems) addf(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// Validate checks every value and loads the files the configuration names (relative to dir).
// It reports all problems at once.
func (f *File) Validate(dir string) (*Runtime, error) {
	var p problems
	abs := func(path string) string {
		if path == "" || filepath.IsAbs(path) {
			return path
		}
		return filepath.Join(dir, path)
	}
	rt := &Runtime{
		StationID: f.StationID, StorePath: abs(f.StorePath),
		AgentListen: f.Agents.Listen, MaxUnitsInFlight: f.Agents.MaxUnitsInFlight, HelloTimeout: time.Duration(f.Agents.HelloTimeout),
		SlotWait: time.Duration(f.Agents.SlotWait), MaxSessionsPerPeer: f.Agents.MaxSessionsPerPeer,
		MaxRefusalsPerPeer: f.Agents.MaxRefusalsPerPeer, RefusalWindow: time.Duration(f.Agents.RefusalWindow),
		HandoverWait: time.Duration(f.Workflow.HandoverWait),
		APIListen:    f.API.Listen, Roles: map[string]string{}, RoleFingerprints: map[string]string{}, RoleURIs: map[string]string{},
		StepTimeout: time.Duration(f.Workflow.StepTimeout), StepTimeouts: map[string]time.Duration{},
		Profiles:      map[string]*workflow.Profile{},
		MetricsListen: f.Metrics.Listen, ConsoleListen: f.Console.Listen,
	}
	f.validateStation(rt, &p, abs)
	f.validateAgents(rt, &p)
	f.validateListeners(rt, &p)
	f.loadTLS(rt, &p, abs)
	f.loadVendorTrust(rt, &p, abs)
	f.validateStepTimeouts(rt, &p)
	caNames := f.loadCAs(rt, &p, abs)
	f.validateProfiles(rt, &p, caNames, abs)
	if len(p) > 0 {
		sort.Strings(p)
		return nil, fmt.Errorf("invalid configuration:\n  %s", strings.Join(p, "\n  "))
	}
	return rt, nil
}

// validateStation checks the station's identity, its store, its reports folder and its audit
// key and checkpoints.
func (f *File) validateStation(rt *Runtime, p *problems, abs func(string) string) {
	if !nameRE.MatchString(f.StationID) {
		p.addf("station_id %q: want 1-64 characters of [a-z0-9._-]", f.StationID)
	}
	if f.StorePath == "" {
		p.addf("store_path is required")
	}
	rt.ReportsDir = abs(f.ReportsDir)
	rt.AuditKeyPath = abs(f.Audit.KeyPath)
	if rt.AuditKeyPath == "" && rt.StorePath != "" {
		rt.AuditKeyPath = filepath.Join(filepath.Dir(rt.StorePath), "audit-key.pem")
	}
	rt.CheckpointEvery, rt.CheckpointInterval = f.Audit.CheckpointEvery, time.Duration(f.Audit.CheckpointInterval)
	if rt.CheckpointEvery < 0 {
		p.addf("audit.checkpoint_every %d: want 0 or more", rt.CheckpointEvery)
	}
}

// validateAgents checks the [agents] limits and the waits.
func (f *File) validateAgents(rt *Runtime, p *problems) {
	if rt.MaxUnitsInFlight == 0 {
		rt.MaxUnitsInFlight = 256
	}
	if rt.MaxUnitsInFlight < 0 || rt.MaxUnitsInFlight > 10000 {
		p.addf("agents.max_units_in_flight %d: want 1-10000", rt.MaxUnitsInFlight)
	}
	for name, n := range map[string]int{"max_sessions_per_peer": rt.MaxSessionsPerPeer, "max_refusals_per_peer": rt.MaxRefusalsPerPeer} {
		if n < 0 || n > 10000 {
			p.addf("agents.%s %d: want 1-10000 (0 for the default)", name, n)
		}
	}
	for name, d := range map[string]time.Duration{"agents.hello_timeout": rt.HelloTimeout, "agents.slot_wait": rt.SlotWait,
		"agents.refusal_window": rt.RefusalWindow, "workflow.handover_wait": rt.HandoverWait} {
		if d < 0 {
			p.addf("%s %s: want a positive duration (0 for the default)", name, d)
		}
	}
}

// validateListeners checks the listen addresses and the console's wall displays.
func (f *File) validateListeners(rt *Runtime, p *problems) {
	if f.Agents.Listen == "" || f.API.Listen == "" {
		p.addf("agents.listen and api.listen are required")
	}
	for _, l := range []struct{ key, addr string }{{"metrics.listen", f.Metrics.Listen}, {"console.listen", f.Console.Listen}} {
		if l.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(l.addr); err != nil {
			p.addf("%s %q: want host:port (or empty for none): %v", l.key, l.addr, err)
		}
	}
	for _, w := range f.Console.WallDisplay {
		pfx, err := netip.ParsePrefix(w)
		if err != nil {
			p.addf("console.wall_display %q: want an address prefix such as 10.1.2.0/24 or 10.1.2.3/32: %v", w, err)
			continue
		}
		rt.ConsoleWallDisplay = append(rt.ConsoleWallDisplay, pfx.Masked())
	}
}

// loadTLS loads the agent and API listeners' certificates, the API's client CAs and its
// roles.
func (f *File) loadTLS(rt *Runtime, p *problems, abs func(string) string) {
	if cert, err := loadKeyPair(abs(f.Agents.CertFile), abs(f.Agents.KeyFile)); err != nil {
		p.addf("agents: %v", err)
	} else {
		rt.AgentTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	cert, certErr := loadKeyPair(abs(f.API.CertFile), abs(f.API.KeyFile))
	if certErr != nil {
		p.addf("api: %v", certErr)
	}
	cas, casErr := loadCerts(abs(f.API.ClientCAFile))
	if casErr != nil {
		p.addf("api.client_ca_file: %v", casErr)
	}
	if certErr == nil && casErr == nil {
		pool := x509.NewCertPool()
		for _, c := range cas {
			pool.AddCert(c)
		}
		// A caller without a certificate gets through the handshake only to be refused with a
		// clear Unauthenticated by the API; a certificate from another CA fails the handshake.
		rt.APITLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool,
			ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS13}
	}
	for i, r := range f.API.Roles {
		if err := rt.bindRole(r); err != nil {
			p.addf("api.role[%d]: %v", i, err)
		}
	}
}

// loadVendorTrust loads the TPM vendors' roots and intermediates and the EK algorithms.
func (f *File) loadVendorTrust(rt *Runtime, p *problems, abs func(string) string) {
	for _, path := range f.TPMVendor.Roots {
		certs, err := loadCerts(abs(path))
		if err != nil {
			p.addf("tpm_vendor.roots: %v", err)
		}
		rt.EKRoots = append(rt.EKRoots, certs...)
	}
	if len(f.TPMVendor.Roots) == 0 {
		p.addf("tpm_vendor.roots: at least one TPM vendor root is required")
	}
	for _, path := range f.TPMVendor.Intermediates {
		certs, err := loadCerts(abs(path))
		if err != nil {
			p.addf("tpm_vendor.intermediates: %v", err)
		}
		rt.EKIntermediates = append(rt.EKIntermediates, certs...)
	}
	for _, a := range f.TPMVendor.EKAlgorithms {
		alg, err := ekAlgorithm(a)
		if err != nil {
			p.addf("tpm_vendor.ek_algorithms: %v", err)
		}
		rt.EKAlgorithms = append(rt.EKAlgorithms, alg)
	}
}

// validateStepTimeouts checks that every step timeout names a workflow step.
func (f *File) validateStepTimeouts(rt *Runtime, p *problems) {
	for step, d := range f.Workflow.StepTimeouts {
		if !contains(workflow.Steps, step) && !slices.Contains(workflow.Waits, workflow.Wait(step)) {
			p.addf("workflow.step_timeouts: unknown step %q (steps: %s; or a class: %v)", step, strings.Join(workflow.Steps, ", "), workflow.Waits)
		}
		rt.StepTimeouts[step] = time.Duration(d)
	}
}

// loadCAs loads the [[ca]] tables; it returns the names configured.
func (f *File) loadCAs(rt *Runtime, p *problems, abs func(string) string) map[string]bool {
	// A [[ca]] that fails to load is still configured: its own errors say what is wrong, and a
	// profile naming it is not reported as well.
	caNames := map[string]bool{}
	for i, ca := range f.CAs {
		if caNames[ca.Name] {
			p.addf("ca[%d]: name %q used twice", i, ca.Name)
		}
		caNames[ca.Name] = true
		c, errs := ca.validate(abs)
		for _, e := range errs {
			p.addf("ca[%d] %q: %s", i, ca.Name, e)
		}
		if len(errs) == 0 {
			rt.CAs = append(rt.CAs, *c)
		}
	}
	return caNames
}

// validateProfiles checks the [[profile]] tables against the CAs configured.
func (f *File) validateProfiles(rt *Runtime, p *problems, caNames map[string]bool, abs func(string) string) {
	if len(f.Profiles) == 0 {
		p.addf("at least one [[profile]] is required")
	}
	for i, prof := range f.Profiles {
		wp, errs := prof.validate(caNames, abs)
		for _, e := range errs {
			p.addf("profile[%d] %q: %s", i, prof.Name, e)
		}
		if rt.Profiles[prof.Name] != nil {
			p.addf("profile[%d]: name %q used twice", i, prof.Name)
		}
		rt.Profiles[prof.Name] = wp
	}
}

// bindRole adds one [[api.role]] to rt.
func (rt *Runtime) bindRole(r RoleBinding) error {
	named := 0
	for _, v := range []string{r.CommonName, r.Fingerprint, r.URI} {
		if v != "" {
			named++
		}
	}
	var table map[string]string
	var key string
	switch {
	case named != 1:
		return errors.New("exactly one of common_name, fingerprint and uri is required")
	case r.CommonName != "":
		table, key = rt.Roles, r.CommonName
	case r.Fingerprint != "":
		key = strings.ToLower(strings.ReplaceAll(r.Fingerprint, ":", ""))
		if !fingerprintRE.MatchString(key) {
			return fmt.Errorf("fingerprint %q: want the SHA-256 of the certificate's DER, 64 hex digits (colons allowed)", r.Fingerprint)
		}
		table = rt.RoleFingerprints
	default:
		if u, err := url.Parse(r.URI); err != nil || !u.IsAbs() {
			return fmt.Errorf("uri %q is not an absolute URI", r.URI)
		}
		table, key = rt.RoleURIs, r.URI
	}
	if !contains(roles, r.Role) {
		return fmt.Errorf("%q: role %q is not one of %v", key, r.Role, roles)
	}
	if table[key] != "" {
		return fmt.Errorf("%q bound twice", key)
	}
	table[key] = r.Role
	return nil
}

// validate checks the CA and loads its files. It returns every problem; the runtime CA is
// only complete when there are none.
func (ca CA) validate(abs func(string) string) (*CARuntime, []string) {
	var p problems
	if !nameRE.MatchString(ca.Name) {
		p.addf("name: want 1-64 characters of [a-z0-9._-]")
	}
	if !strings.HasPrefix(ca.URL, "https://") {
		p.addf("url %q: EST needs https", ca.URL)
	}
	c := &CARuntime{Name: ca.Name, URL: ca.URL, Label: ca.Label, BasicUser: ca.Auth.BasicUser,
		HeaderName: ca.Auth.HeaderName, Batch: ca.Batch, Retry: ca.Retry, SearchURL: ca.SearchURL}
	if ca.SearchURL != "" && !strings.HasPrefix(ca.SearchURL, "https://") {
		p.addf("search_url %q: want https", ca.SearchURL)
	}
	for _, path := range ca.TrustAnchors {
		certs, err := loadCerts(abs(path))
		if err != nil {
			p.addf("trust_anchors: %v", err)
		}
		c.TrustAnchors = append(c.TrustAnchors, certs...)
	}
	if len(ca.TrustAnchors) == 0 {
		p.addf("trust_anchors: at least one is required (system roots are never used)")
	}
	for _, path := range ca.IssuerAnchors {
		certs, err := loadCerts(abs(path))
		if err != nil {
			p.addf("issuer_anchors: %v", err)
		}
		c.IssuerAnchors = append(c.IssuerAnchors, certs...)
	}
	if (ca.Auth.BasicUser == "") != (ca.Auth.BasicPasswordFile == "") {
		p.addf("auth: basic_user and basic_password_file go together")
	} else if ca.Auth.BasicPasswordFile != "" {
		s, err := secret.ReadFile(abs(ca.Auth.BasicPasswordFile))
		if err != nil {
			p.addf("auth.basic_password_file: %v", err)
		}
		c.BasicPassword = s
	}
	if (ca.Auth.HeaderName == "") != (ca.Auth.HeaderSecretFile == "") {
		p.addf("auth: header_name and header_secret_file go together")
	} else if ca.Auth.HeaderName != "" {
		if !headerRE.MatchString(ca.Auth.HeaderName) {
			p.addf("auth.header_name %q is not a valid header name", ca.Auth.HeaderName)
		}
		s, err := secret.ReadFile(abs(ca.Auth.HeaderSecretFile))
		if err != nil {
			p.addf("auth.header_secret_file: %v", err)
		}
		c.HeaderSecret = s
	}
	if ca.Auth.ClientCertFile != "" || ca.Auth.ClientKeyFile != "" {
		cc, err := loadClientCert(abs(ca.Auth.ClientCertFile), abs(ca.Auth.ClientKeyFile))
		if err != nil {
			p.addf("auth client certificate: %v", err)
		}
		c.ClientCert = cc
	}
	if b := ca.Batch; b.MaxBatch < 0 || b.MaxInFlight < 0 || b.RateLimit < 0 || b.Burst < 0 {
		p.addf("batch: values must not be negative")
	}
	return c, p
}

// loadClientCert loads the station's TLS client certificate for a CA.
func loadClientCert(certFile, keyFile string) (*workflow.ClientCert, error) {
	cert, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	key, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("the key cannot sign")
	}
	cc := &workflow.ClientCert{Key: key}
	for _, der := range cert.Certificate {
		x, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		cc.Chain = append(cc.Chain, x)
	}
	return cc, nil
}

func (pr Profile) validate(caNames map[string]bool, abs func(string) string) (*workflow.Profile, []string) {
	var p problems
	if !nameRE.MatchString(pr.Name) {
		p.addf("name: want 1-64 characters of [a-z0-9._-]")
	}
	wp := &workflow.Profile{Name: pr.Name, SRKHandle: pr.SRKHandle, LDevIDCertPath: pr.LDevIDCertPath, LDevIDAuth: pr.LDevIDAuth}
	var errs []string
	wp.IDevID, errs = pr.IDevID.validate(caNames)
	for _, e := range errs {
		p.addf("idevid: %s", e)
	}
	wp.LDevID, errs = pr.LDevID.validate(caNames)
	for _, e := range errs {
		p.addf("ldevid: %s", e)
	}
	if wp.SRKHandle == 0 {
		wp.SRKHandle = defaultSRKHandle(wp.LDevID.Algorithm)
	}
	if pr.IAK != nil {
		k := *pr.IAK
		if k.Handle == 0 {
			k.Handle = defaultIAKHandle
		}
		iak, errs := k.validate(caNames)
		for _, e := range errs {
			p.addf("iak: %s", e)
		}
		if storageHandle(iak.Handle) {
			p.addf("iak.handle %#x is in the range the TCG handle registry keeps for SRKs (0x81000000-0x8100FFFF)", iak.Handle)
		}
		if slices.Contains([]uint32{wp.IDevID.Handle, wp.LDevID.Handle, wp.SRKHandle}, iak.Handle) {
			p.addf("iak.handle %#x is the handle of another key", iak.Handle)
		}
		wp.IAK = &iak
	}
	// The checks across handles look only at handles that are valid on their own: a handle
	// already reported is not reported again.
	srkOK, idOK, ldOK := storageHandle(wp.SRKHandle), persistentHandle(wp.IDevID.Handle), persistentHandle(wp.LDevID.Handle)
	if !srkOK {
		p.addf("srk_handle %#x must be a storage-hierarchy handle (0x81000000-0x8100FFFF)", wp.SRKHandle)
	}
	if ldOK && storageHandle(wp.LDevID.Handle) {
		p.addf("ldevid.handle %#x is in the range the TCG handle registry keeps for SRKs (0x81000000-0x8100FFFF)", wp.LDevID.Handle)
	}
	if idOK && storageHandle(wp.IDevID.Handle) {
		p.addf("idevid.handle %#x is in the range the TCG handle registry keeps for SRKs (0x81000000-0x8100FFFF)", wp.IDevID.Handle)
	}
	if (srkOK && ldOK && wp.SRKHandle == wp.LDevID.Handle) || (idOK && ldOK && wp.IDevID.Handle == wp.LDevID.Handle) ||
		(idOK && srkOK && wp.IDevID.Handle == wp.SRKHandle) {
		p.addf("idevid.handle, ldevid.handle and srk_handle must differ")
	}
	wp.IDevIDNV = workflow.NVProfile{Index: pr.IDevIDNV.Index, Lock: pr.IDevIDNV.Lock}
	switch pr.IDevIDNV.Auth {
	case "platform":
		wp.IDevIDNV.Auth = agentv1.Hierarchy_HIERARCHY_PLATFORM
	case "owner":
		wp.IDevIDNV.Auth = agentv1.Hierarchy_HIERARCHY_OWNER
	default:
		p.addf("idevid_nv.auth %q: want platform or owner", pr.IDevIDNV.Auth)
	}
	if i := pr.IDevIDNV.Index; i < 0x01000000 || i > 0x01FFFFFF {
		p.addf("idevid_nv.index %#x is not an NV index", i)
	} else if reserved.Endorsement(i) {
		p.addf("idevid_nv.index %#x is in the TCG-reserved EK certificate range (%#x-%#x)", i, reserved.EKNVIndexFirst, reserved.EKNVIndexLast)
	}
	if !filepath.IsAbs(pr.LDevIDCertPath) {
		p.addf("ldevid_cert_path %q must be absolute (a path on the unit)", pr.LDevIDCertPath)
	}
	switch pr.LDevIDAuth {
	case workflow.AuthStationRA, workflow.AuthIDevIDMTLS:
	default:
		p.addf("ldevid_auth %q: want %s or %s", pr.LDevIDAuth, workflow.AuthStationRA, workflow.AuthIDevIDMTLS)
	}
	if pr.Onboarding != nil {
		o, err := pr.Onboarding.validate(abs)
		if err != nil {
			p.addf("onboarding: %v", err)
		}
		wp.Onboarding = o
	}
	wp.FieldCheck.Mode = workflow.FieldCheckOff
	if pr.FieldCheck != nil {
		fc, err := pr.FieldCheck.validate(abs)
		if err != nil {
			p.addf("field_check: %v", err)
		}
		wp.FieldCheck = fc
	}
	return wp, p
}

// validate checks the key and returns every problem.
func (k Key) validate(caNames map[string]bool) (workflow.KeyProfile, []string) {
	var p problems
	kp := workflow.KeyProfile{Handle: k.Handle, Issuer: k.CA, Subject: workflow.Subject(k.Subject),
		CertificatePolicies: k.CertificatePolicies == nil || *k.CertificatePolicies}
	var err error
	if kp.Algorithm, err = algorithm(k.Algorithm); err != nil {
		p.addf("%v", err)
	}
	if !persistentHandle(k.Handle) {
		p.addf("handle %#x is not an owner/endorsement persistent handle", k.Handle)
	}
	if reserved.Endorsement(k.Handle) {
		p.addf("handle %#x is in the TCG-reserved EK handle range (%#x-%#x)", k.Handle, reserved.EKHandleFirst, reserved.EKHandleLast)
	}
	switch {
	case k.CA == "":
		p.addf("ca is required")
	case !caNames[k.CA]:
		p.addf("ca %q is not a configured [[ca]]", k.CA)
	}
	switch k.HardwareModuleName {
	case "", workflow.HWModuleTPM:
		kp.HardwareModuleName = workflow.HWModuleTPM
	case "serial":
		kp.HardwareModuleName = workflow.HWModuleSerial
	case "none":
		kp.HardwareModuleName = workflow.HWModuleNone
	default:
		p.addf("hardware_module_name %q: want tpm, serial or none", k.HardwareModuleName)
	}
	switch {
	case k.HardwareModuleName == "serial" && k.HardwareModuleType == "":
		p.addf("hardware_module_name \"serial\" needs a hardware_module_type")
	case k.HardwareModuleName != "serial" && k.HardwareModuleType != "":
		p.addf("hardware_module_type is the hwType of hardware_module_name \"serial\" only (the TPM's hwType is 2.23.133.1.2)")
	case k.HardwareModuleType != "":
		if kp.HardwareModuleType, err = parseOID(k.HardwareModuleType); err != nil {
			p.addf("hardware_module_type: %v", err)
		}
	}
	return kp, p
}

// defaultIAKHandle is the IAK's handle in the TPM layout (docs/tpm-layout.md: the DevID keys
// take consecutive handles from 0x81020000 in the TCG DevID specification's order).
const defaultIAKHandle = 0x81020001

// persistentHandle reports whether h is a persistent handle of the owner or endorsement
// hierarchy.
func persistentHandle(h uint32) bool { return h >= 0x81000000 && h < 0x81800000 }

// storageHandle reports whether h is in the storage hierarchy's persistent range, which the TCG
// handle registry keeps for SRKs.
func storageHandle(h uint32) bool { return h >= 0x81000000 && h <= 0x8100FFFF }

// defaultSRKHandle is the TCG handle registry's SRK handle for the LDevID key's algorithm (the
// SRK has the LDevID's algorithm): 0x81000001 for RSA, 0x81000002 for ECC.
func defaultSRKHandle(alg agentv1.KeyAlgorithm) uint32 {
	if alg == agentv1.KeyAlgorithm_KEY_ALGORITHM_RSA_2048 {
		return 0x81000001
	}
	return 0x81000002
}

func algorithm(s string) (agentv1.KeyAlgorithm, error) {
	switch s {
	case "ecc-p256":
		return agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, nil
	case "rsa-2048":
		return agentv1.KeyAlgorithm_KEY_ALGORITHM_RSA_2048, nil
	}
	return 0, fmt.Errorf("algorithm %q: want ecc-p256 or rsa-2048", s)
}

// ekAlgorithm parses an EK type: every type of the TCG EK Credential Profile a line meets.
func ekAlgorithm(s string) (agentv1.KeyAlgorithm, error) {
	switch s {
	case "ecc-p384":
		return agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P384, nil
	case "rsa-3072":
		return agentv1.KeyAlgorithm_KEY_ALGORITHM_RSA_3072, nil
	}
	if a, err := algorithm(s); err == nil {
		return a, nil
	}
	return 0, fmt.Errorf("EK algorithm %q: want ecc-p256, ecc-p384, rsa-2048 or rsa-3072", s)
}

func parseOID(s string) (asn1.ObjectIdentifier, error) {
	var oid asn1.ObjectIdentifier
	for _, part := range strings.Split(s, ".") {
		var n int
		if _, err := fmt.Sscanf(part, "%d", &n); err != nil || n < 0 || fmt.Sprint(n) != part {
			return nil, fmt.Errorf("%q is not a dotted OID", s)
		}
		oid = append(oid, n)
	}
	if len(oid) < 2 {
		return nil, fmt.Errorf("%q is not a dotted OID", s)
	}
	return oid, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// loadKeyPair loads a certificate and its private key; the key file must pass secret.CheckFile.
func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	if certFile == "" || keyFile == "" {
		return tls.Certificate{}, errors.New("cert_file and key_file are required")
	}
	if err := secret.CheckFile(keyFile); err != nil {
		return tls.Certificate{}, fmt.Errorf("key file: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		// The error of LoadX509KeyPair never holds key material.
		return tls.Certificate{}, fmt.Errorf("loading %s: %w", certFile, err)
	}
	return cert, nil
}

// loadCerts reads every CERTIFICATE block of a PEM file.
func loadCerts(path string) ([]*x509.Certificate, error) {
	if path == "" {
		return nil, errors.New("a certificate file is required")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return out, nil
}
