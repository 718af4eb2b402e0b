// Package journal is the step journal's stored format: the step names, and the intent and
// result of each step as station/workflow writes them into the store's step records and the
// reports (reports/traveler, the station API) read them back. One type per stored shape, with
// no behaviour of the workflow: a reader needs only this package and the store.
//
// The JSON field names are a stored format: never rename one, never change what a field
// means; add fields instead. Records written by earlier versions must keep decoding.
package journal

// Step names, in workflow order. They are stored in every step record: never rename one.
const (
	StepIdentify      = "identify"
	StepVerifyEK      = "verify_ek"
	StepAuthorize     = "authorize"
	StepIDevIDKey     = "idevid_key"
	StepIDevIDProof   = "idevid_residency"
	StepIDevIDCSR     = "idevid_csr"
	StepIDevIDEnroll  = "idevid_enroll"
	StepIDevIDInstall = "idevid_install"
	StepLDevIDKey     = "ldevid_key"
	StepLDevIDProof   = "ldevid_residency"
	StepLDevIDCSR     = "ldevid_csr"
	StepLDevIDEnroll  = "ldevid_enroll"
	StepLDevIDInstall = "ldevid_install"
	StepOnboarding    = "onboarding"
	StepVerify        = "verify"
	StepFieldCheck    = "field_check"
	StepComplete      = "complete"
	// StepRework prepares a reworked unit before its next provisioning; it is not one of the
	// workflow's steps in order.
	StepRework = "rework"
)

// The IAK steps, which run after idevid_residency (a profile with an IAK; for others none runs
// and nothing is journaled, where earlier stations recorded SkipResult for each). Stored like
// the above: never rename one.
const (
	StepIAKKey     = "iak_key"
	StepIAKProof   = "iak_residency"
	StepIAKCertify = "iak_certify"
	StepIAKCSR     = "iak_csr"
	StepIAKEnroll  = "iak_enroll"
)

// Intent is what a step is about to do, journaled before it does it. Its fields are in the
// order encoding/json sorted the keys of the map it once was, so its encoding is unchanged.
type Intent struct {
	// CA names the issuer an enroll step asks.
	CA string `json:"ca,omitempty"`
	// CSRSHA256 is the hex SHA-256 of the CSR an enroll step sends.
	CSRSHA256 string `json:"csr_sha256,omitempty"`
	// Identify is verify_ek's: the agent's identify report, an encoded Identify (see
	// Identify.MarshalJSON), kept as a JSON string.
	Identify string `json:"identify,omitempty"`
	// KeyName and PublicKeySHA256 name the key an enroll step asks a certificate for, before
	// the request leaves: its TPM Name (hex) and the hex SHA-256 of its SubjectPublicKeyInfo
	// (what a CA's issuance search knows it by).
	KeyName         string `json:"key_name,omitempty"`
	PublicKeySHA256 string `json:"public_key_sha256,omitempty"`
	// Step is the step's name.
	Step string `json:"step"`
}

// IdentifyResult is the identify step's result: a bounded summary of the agent's claims.
type IdentifyResult struct {
	Manufacturer    string      `json:"manufacturer"`
	VendorString    string      `json:"vendor_string"`
	FirmwareVersion uint64      `json:"firmware_version"`
	BootID          string      `json:"boot_id"`
	FixtureSlot     string      `json:"fixture_slot"`
	EKs             []EKSummary `json:"eks"`
	// EKsHeld names the EK types the TPM holds (EK handle or certificate index present).
	EKsHeld []string `json:"eks_held,omitempty"`
}

// EKSummary is one EK the agent reported, in IdentifyResult.
type EKSummary struct {
	Algorithm   string `json:"algorithm"`
	Certificate bool   `json:"certificate"`
	Persisted   bool   `json:"persisted"`
}

// VerifyEKResult is the verify_ek step's result: the EK the station verified.
type VerifyEKResult struct {
	Algorithm string `json:"algorithm"`
	// Fingerprint is the hex SHA-256 of the EK public key (the store's EK index key).
	Fingerprint string `json:"ek_fingerprint"`
	// CertSHA256 is the hex SHA-256 of the EK certificate.
	CertSHA256   string `json:"ek_cert_sha256"`
	Issuer       string `json:"issuer"`
	Manufacturer string `json:"manufacturer"`
}

// AuthorizeResult is the authorize step's result: the work order and profile the unit runs
// under.
type AuthorizeResult struct {
	WorkOrder string `json:"work_order"`
	Profile   string `json:"profile"`
}

// SkipResult is the result earlier stations recorded for a step the unit's profile does not
// ask for (the IAK steps of a profile without an IAK); the station journals nothing for such a
// step now, and still reads these records.
type SkipResult struct {
	Skipped string `json:"skipped"`
}

// CertifyResult is iak_certify's result, the audit trail's copy of the evidence: the IAK's
// TPM2_Certify of the IDevID key as the TPM produced it and the station checked it.
type CertifyResult struct {
	// Attest is the signed TPMS_ATTEST, Signature the TPMT_SIGNATURE over it (TPM-marshalled).
	Attest    []byte `json:"attest"`
	Signature []byte `json:"signature"`
	// AttestSHA256 is the hex SHA-256 of Attest: the digest the IAK signed.
	AttestSHA256 string `json:"attest_sha256"`
	// Nonce is the station's fresh nonce, TPMS_ATTEST.extraData.
	Nonce []byte `json:"nonce"`
	// CertifiedName is the IDevID key's Name the attestation names, IAKName the certifying key's.
	CertifiedName []byte `json:"certified_name"`
	IAKName       []byte `json:"iak_name"`
}

// KeyResult is the result of a key step (idevid_key, iak_key, ldevid_key).
type KeyResult struct {
	Handle uint32 `json:"handle"`
	// Public is the key's TPM public area, Name its TPM Name.
	Public  []byte `json:"public"`
	Name    []byte `json:"name"`
	Existed bool   `json:"existed"`
}

// ProofResult is the result of a residency step: the key proven to sit beside the EK.
type ProofResult struct {
	Name  []byte `json:"name"`
	EKAlg string `json:"ek_algorithm"`
}

// CSRResult is the result of a CSR step (DER).
type CSRResult struct {
	CSR []byte `json:"csr"`
}

// EnrollResult is the result of an enroll step: the issued certificate and its chain (DER).
type EnrollResult struct {
	Cert      []byte   `json:"cert"`
	Chain     [][]byte `json:"chain"`
	Duplicate bool     `json:"duplicate,omitempty"`
}

// InstallResult is the result of an install step and of onboarding: where the object went
// and its hex SHA-256.
type InstallResult struct {
	Where  string `json:"where"`
	SHA256 string `json:"sha256"`
	Locked bool   `json:"locked,omitempty"`
}

// OnboardingResult is the onboarding step's result: digests only, never the PIN.
type OnboardingResult struct {
	InstallResult
	// Files maps the further files written (trust bundle, PIN file) to their SHA-256.
	Files map[string]string `json:"files,omitempty"`
}

// VerifyResult is the verify step's result: check name -> "ok".
type VerifyResult struct {
	Checks map[string]string `json:"checks"`
}

// FieldCheckResult is the field_check step's result: how the unit's LDevID fared at an
// endpoint of the field, used as the field stack will use it.
type FieldCheckResult struct {
	// Mode is "off", "handshake" or "reenroll".
	Mode string `json:"mode"`
	// Endpoint is the URL of a handshake, the CA's name of a re-enrollment.
	Endpoint string `json:"endpoint,omitempty"`
	// ClientCertSHA256 is the hex SHA-256 of the LDevID certificate presented.
	ClientCertSHA256 string `json:"client_cert_sha256,omitempty"`
	// TLSVersion and HTTPStatus are what a handshake's endpoint answered with.
	TLSVersion string `json:"tls_version,omitempty"`
	HTTPStatus int    `json:"http_status,omitempty"`
	// Signatures counts the TLS signatures the unit's TPM made for the check.
	Signatures int `json:"signatures,omitempty"`
	// Cert and Chain are a re-enrollment's new LDevID certificate and its chain (DER); the
	// store's certificate index holds it too. The unit keeps its provisioned certificate.
	Cert  []byte   `json:"cert,omitempty"`
	Chain [][]byte `json:"chain,omitempty"`
}

// CompleteResult is the complete step's result.
type CompleteResult struct {
	WorkOrder string `json:"work_order"`
}

// ReworkResult is the rework step's result.
type ReworkResult struct {
	// IDevID is ReworkKept when the IDevID was verified and kept, else ReworkReissued.
	IDevID string `json:"idevid"`
	// Reason says why the IDevID is issued again.
	Reason string `json:"reason,omitempty"`
	// Done lists what was removed from the unit (true: it was there).
	Done map[string]string `json:"done"`
}

// ReworkResult.IDevID values.
const (
	ReworkKept     = "kept"
	ReworkReissued = "reissued"
)
