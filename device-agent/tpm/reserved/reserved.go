// Package reserved names the TPM 2.0 locations that hold a TPM's endorsement identity and that
// nothing on the line may write, undefine or evict: the EK persistent handles (TCG Registry of
// Reserved TPM 2.0 Handles and Localities) and the EK certificate, nonce, template and chain NV
// indexes (TCG EK Credential Profile; the registry's range for EK credentials). Both the device
// agent (which refuses such commands) and the station's configuration check (which refuses
// such profiles) use it. It has no dependencies so that the station does not link the TPM stack.
package reserved

// The TCG-reserved endorsement ranges, inclusive.
const (
	// EKHandleFirst and EKHandleLast bound the endorsement keys' persistent handles
	// (RSA EK 0x81010001, ECC EK 0x81010002, ...).
	EKHandleFirst uint32 = 0x81010000
	EKHandleLast  uint32 = 0x810100FF
	// EKNVIndexFirst and EKNVIndexLast bound the EK certificate, nonce and template indexes
	// (RSA 2048 certificate 0x01C00002, ECC P-256 certificate 0x01C0000A, ECC P-384 certificate
	// 0x01C00016, the EK chain 0x01C00100-0x01C001FF, ...).
	EKNVIndexFirst uint32 = 0x01C00000
	EKNVIndexLast  uint32 = 0x01C07FFF
)

// Endorsement reports whether v is a handle or NV index in a TCG-reserved endorsement range.
func Endorsement(v uint32) bool {
	return (v >= EKHandleFirst && v <= EKHandleLast) || (v >= EKNVIndexFirst && v <= EKNVIndexLast)
}
