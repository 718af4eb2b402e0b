package workflow

import (
	"errors"
	"fmt"
	"strings"
)

// Stable error codes. They are recorded in the store, shown to operators and sent to the MES;
// never rename one.
const (
	CodeAgentError         = "AGENT_ERROR"
	CodeEKCertMissing      = "EK_CERT_MISSING"
	CodeEKUntrusted        = "EK_UNTRUSTED"
	CodeEKCertInvalid      = "EK_CERT_INVALID"
	CodeEKMismatch         = "EK_PUBLIC_MISMATCH"
	CodeEKBound            = "EK_BOUND_TO_OTHER_SERIAL"
	CodeEKChanged          = "EK_CHANGED"
	CodeNotAuthorized      = "NOT_AUTHORIZED"
	CodeAlreadyProvisioned = "ALREADY_PROVISIONED"
	CodeProfileUnknown     = "PROFILE_UNKNOWN"
	CodeHandleOccupied     = "HANDLE_OCCUPIED"
	CodeKeyChanged         = "KEY_CHANGED"
	CodeKeyAttributes      = "KEY_ATTRIBUTES"
	CodeKeyNameMismatch    = "KEY_NAME_MISMATCH"
	CodeActivationFailed   = "ACTIVATION_FAILED"
	CodeCSRInvalid         = "CSR_INVALID"
	CodeCARejected         = "CA_REJECTED"
	CodeCAUnavailable      = "CA_UNAVAILABLE"
	CodeCertInvalid        = "CERT_INVALID"
	CodeInstallFailed      = "INSTALL_FAILED"
	CodeReadbackMismatch   = "READBACK_MISMATCH"
	CodeProofFailed        = "PROOF_FAILED"
	CodeStepTimeout        = "STEP_TIMEOUT"
	CodeAborted            = "ABORTED"
	CodeSerialBusy         = "SERIAL_IN_PROGRESS"
	CodeInternal           = "INTERNAL"
	// CodePlatformDisabled: the profile installs the IDevID certificate in a
	// platform-authorized NV index, but the TPM reports its platform hierarchy (or its NV
	// part) disabled, as firmware leaves it after boot. Nothing is created or issued.
	CodePlatformDisabled = "PLATFORM_HIERARCHY_DISABLED"
	// CodeOnHold: the unit is on hold after a security failure; QA or an admin decides
	// (rework or scrap) before it is provisioned again.
	CodeOnHold = "UNIT_ON_HOLD"
	// CodeScrapped: the unit was scrapped; it is never provisioned again.
	CodeScrapped = "UNIT_SCRAPPED"
)

// Failure classes (Class).
const (
	// ClassTransient failures (a CA unavailable, a timeout, an interruption, an agent that went
	// away) are retried when the unit's agent connects again.
	ClassTransient = "transient"
	// ClassSecurity failures (EK, credential activation, key, CSR and certificate checks) put
	// a unit whose TPM proved it holds the EK on hold until QA or an admin decides.
	ClassSecurity = "security"
	// ClassOther failures (not authorized, configuration, agent or TPM errors) leave the unit
	// failed; it is provisioned again on its next connection.
	ClassOther = "other"
)

var failureClasses = map[string]string{
	CodeCAUnavailable: ClassTransient, CodeStepTimeout: ClassTransient, codeInterrupted: ClassTransient,
	codeAnswerLost: ClassTransient, CodeSerialBusy: ClassTransient, CodeFieldCheckUnavailable: ClassTransient,

	CodeEKCertMissing: ClassSecurity, CodeEKUntrusted: ClassSecurity, CodeEKCertInvalid: ClassSecurity,
	CodeEKMismatch: ClassSecurity, CodeEKBound: ClassSecurity, CodeEKChanged: ClassSecurity,
	CodeActivationFailed: ClassSecurity, CodeKeyChanged: ClassSecurity, CodeKeyAttributes: ClassSecurity,
	CodeKeyNameMismatch: ClassSecurity, CodeCSRInvalid: ClassSecurity, CodeCertInvalid: ClassSecurity,
	CodeReadbackMismatch: ClassSecurity, CodeProofFailed: ClassSecurity,
	CodeIAKNotActivated: ClassSecurity, CodeCertifyInvalid: ClassSecurity, CodeCertifySignature: ClassSecurity,
	CodeCertifyNameMismatch: ClassSecurity, CodeCertifyNonce: ClassSecurity,
}

// Class returns the failure class of a code: ClassTransient, ClassSecurity or ClassOther.
func Class(code string) string {
	if c, ok := failureClasses[code]; ok {
		return c
	}
	return ClassOther
}

// The IAK's certification of the IDevID key (step iak_certify); stable like the above.
const (
	// CodeIAKNotActivated: the IAK was not proven to reside beside the EK before it certified.
	CodeIAKNotActivated = "IAK_NOT_ACTIVATED"
	// CodeCertifyInvalid: the certification is no TPM2_Certify attestation (malformed, not
	// TPM-generated, another attestation type).
	CodeCertifyInvalid = "CERTIFY_INVALID"
	// CodeCertifySignature: the certification is not signed by the activated IAK.
	CodeCertifySignature = "CERTIFY_SIGNATURE"
	// CodeCertifyNameMismatch: the certification names an object other than the IDevID key.
	CodeCertifyNameMismatch = "CERTIFY_NAME_MISMATCH"
	// CodeCertifyNonce: the certification does not carry the station's fresh nonce (stale).
	CodeCertifyNonce = "CERTIFY_NONCE_MISMATCH"
)

// CodeFileRootsUnsuitable: the file roots the agent announced in Hello miss a file the
// profile writes (or it announced none); refused before any key exists. Stable like the above.
const CodeFileRootsUnsuitable = "FILE_ROOTS_UNSUITABLE"

// The field check's error codes (step field_check). Stable like the others: never rename one.
const (
	// CodeFieldCheckRejected: the endpoint refused the unit's LDevID (a TLS alert after the
	// certificate was sent, an HTTP answer other than 2xx, 429 or 5xx, or a CA that rejects the
	// re-enrollment).
	CodeFieldCheckRejected = "FIELD_CHECK_REJECTED"
	// CodeFieldCheckUnavailable: the endpoint could not be reached, its server certificate did
	// not verify, or it answered 429 or 5xx; transient.
	CodeFieldCheckUnavailable = "FIELD_CHECK_UNAVAILABLE"
	// CodeFieldCheckNoClientAuth: the handshake's endpoint never asked for a client
	// certificate, so its answer says nothing about the LDevID.
	CodeFieldCheckNoClientAuth = "FIELD_CHECK_NO_CLIENT_AUTH"
)

// CodeTPMLockout: the unit's TPM is in dictionary-attack lockout (the agent's
// ERROR_CODE_TPM_LOCKOUT, TPM_RC_LOCKOUT): it refuses its DA-protected keys (a DevID key or IAK
// made before their templates set noDA) until its recovery time passed or its lockout is reset
// with lockoutAuth. Whatever the step wrapped it in (a proof, a CA's mTLS handshake signed by
// the IDevID), the unit fails with this code; class other, not retried as transient. Stable
// like the others.
const CodeTPMLockout = "TPM_LOCKOUT"

// Error is a unit failure with a stable code and a human message.
type Error struct {
	// Code is one of the Code constants.
	Code string
	// Msg explains the failure to an operator.
	Msg string
	// Err is the underlying cause, if any.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Msg, e.Err)
	}
	return e.Code + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

func fail(code string, err error, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...), Err: err}
}

// MessageOf returns err's text for an operator without the stable code CodeOf reports: a
// failure's record, event and verdict carry that code in a field of their own, and a printer
// shows code and message side by side. Codes of other errors in the chain stay in the text.
func MessageOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return strings.Replace(err.Error(), e.Code+": ", "", 1)
	}
	return err.Error()
}

// CodeOf returns the stable code of err, CodeInternal when it carries none.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// errInterrupted marks a session that ended before the unit finished; the unit resumes when
// its agent reconnects.
var errInterrupted = errors.New("session interrupted")
