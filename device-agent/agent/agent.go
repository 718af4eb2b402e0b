// Package agent is the device agent's session logic: it dials the station over TLS with the
// station CA pinned, opens one AgentGateway.Session stream, introduces the unit with Hello and
// then executes the station's commands one at a time on the unit's TPM and file system,
// answering each with a Result. It holds no policy and no secrets; everything it reports is
// evidence for the station to verify. When the stream breaks it reconnects with capped
// exponential backoff and jitter, until the station sends Finish or the context is cancelled.
//
// Every failure of a command is answered with a stable agentv1.ErrorCode; a panic in a
// handler is answered with ERROR_CODE_INTERNAL and never stops the agent.
package agent

import (
	"crypto"
	"crypto/x509/pkix"
	"errors"
	"runtime/debug"

	"github.com/devid-station/devid/device-agent/tpm"
)

// Version is the agent's build version, reported in Hello. Set it at link time with
// -ldflags "-X github.com/devid-station/devid/device-agent/agent.Version=v1.2.3"; when empty
// the module version or VCS revision from the build info is used.
var Version string

// TPM is what the agent needs from a TPM; *tpm.TPM implements it. Implementations must map
// failures to the tpm package's sentinel errors or go-tpm response codes (see tpm.ResponseCode).
// The agent calls it from one goroutine at a time.
type TPM interface {
	// Description names the TPM transport for Hello.
	Description() string
	// Info reads TPM properties.
	Info() (*tpm.Info, error)
	// ReadEK reads the EK of one algorithm and its certificate.
	ReadEK(alg tpm.Algorithm) (*tpm.EK, error)
	// ReadEKChain reads the vendor chain certificates stored in NV.
	ReadEKChain() ([][]byte, error)
	// CreateKey creates or finds a DevID key at a persistent handle.
	CreateKey(req tpm.KeyRequest) (*tpm.Key, error)
	// ActivateCredential recovers a credential's secret for a key under the EK.
	ActivateCredential(keyHandle uint32, ekAlg tpm.Algorithm, credentialBlob, encryptedSecret []byte) ([]byte, error)
	// Sign signs a digest with a persisted key.
	Sign(handle uint32, digest []byte, hash crypto.Hash, scheme tpm.Scheme) ([]byte, error)
	// BuildCSR builds a DER PKCS#10 request signed by a persisted key.
	BuildCSR(handle uint32, subjectDER []byte, exts []pkix.Extension, scheme tpm.Scheme) ([]byte, error)
	// NVWrite defines (if needed), writes and optionally locks an NV index.
	NVWrite(req tpm.NVWriteRequest) (*tpm.NVWriteResult, error)
	// NVRead reads a whole NV index.
	NVRead(index uint32) (*tpm.NVData, error)
	// Evict removes a persistent object.
	Evict(handle uint32, auth tpm.Hierarchy) (bool, error)
	// NVUndefine removes an NV index.
	NVUndefine(index uint32, auth tpm.Hierarchy) (bool, error)
}

// Agent errors, mapped to agentv1 error codes in results.
var (
	// ErrInvalidArgument: a request field is missing, out of range or malformed.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrUnknownCommand: the command carries no op this agent knows.
	ErrUnknownCommand = errors.New("unknown command")
	// ErrPathNotAllowed: a file path is relative, contains "..", or lies (or resolves) outside
	// the configured roots.
	ErrPathNotAllowed = errors.New("path not allowed")
	// ErrMessageTooLarge: a result would exceed the message bound.
	ErrMessageTooLarge = errors.New("message too large")
	// ErrEndorsementReserved: a write, undefine or evict in a TCG-reserved endorsement range
	// (EK handles, EK certificate and template indexes), refused whatever the station asks.
	ErrEndorsementReserved = errors.New("TCG-reserved endorsement location")
)

// Verdict is the station's final word on the unit, from its Finish command.
type Verdict struct {
	// Passed is true when the unit is fully provisioned and verified.
	Passed bool
	// Code is the station's stable error code when Passed is false.
	Code string
	// Message is a human-readable summary.
	Message string
}

// ExitCode returns the process exit code for the verdict: ExitPassed or ExitFailed.
func (v Verdict) ExitCode() int {
	if v.Passed {
		return ExitPassed
	}
	return ExitFailed
}

// Log field keys.
const (
	logKeySerial   = "serial"
	logKeyCommand  = "command"
	logKeyID       = "id"
	logKeyCode     = "code"
	logKeyAttempt  = "attempt"
	logKeyStation  = "station"
	logKeyErr      = "err"
	logKeyDelay    = "delay"
	logKeyFailures = "failures"
	logKeyPassed   = "passed"
	logKeyMessage  = "message"
)

// agentVersion returns Version, or else what the build info knows.
func agentVersion() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && s.Value != "" {
			return "devel+" + s.Value
		}
	}
	return "devel"
}
