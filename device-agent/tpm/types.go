// Package tpm performs every TPM 2.0 operation the device agent offers, with go-tpm's direct
// tpm2 API over any transport: /dev/tpmrm0 (or another device path), the in-process simulator,
// or swtpm over a unix socket or TCP. It loads at most one transient object at a time besides
// the EK and flushes every object it loads.
package tpm

import (
	"errors"
	"fmt"
)

// Algorithm is a key type.
type Algorithm int

const (
	// AlgUnspecified is invalid.
	AlgUnspecified Algorithm = iota
	// RSA2048 is RSA with a 2048-bit modulus.
	RSA2048
	// ECCP256 is ECC on NIST P-256.
	ECCP256
)

func (a Algorithm) String() string {
	switch a {
	case RSA2048:
		return "RSA-2048"
	case ECCP256:
		return "ECC-P256"
	}
	return fmt.Sprintf("Algorithm(%d)", int(a))
}

// Role says which DevID key is meant.
type Role int

const (
	// RoleUnspecified is invalid.
	RoleUnspecified Role = iota
	// IDevID is a primary key in the endorsement hierarchy.
	IDevID
	// LDevID is a child of the SRK in the storage hierarchy.
	LDevID
)

// Hierarchy names an authorization hierarchy.
type Hierarchy int

const (
	// HierarchyUnspecified is invalid (or a documented default where a field says so).
	HierarchyUnspecified Hierarchy = iota
	// Owner is TPM_RH_OWNER.
	Owner
	// Platform is TPM_RH_PLATFORM.
	Platform
	// Endorsement is TPM_RH_ENDORSEMENT.
	Endorsement
)

// Scheme is a signature scheme.
type Scheme int

const (
	// SchemeDefault is ECDSA for ECC keys and RSASSA-PKCS1-v1_5 for RSA keys.
	SchemeDefault Scheme = iota
	// ECDSA answers an ASN.1 DER signature.
	ECDSA
	// RSASSA is RSASSA-PKCS1-v1_5.
	RSASSA
	// RSAPSS is RSASSA-PSS with the salt length equal to the hash length.
	RSAPSS
)

// Default handles and indices (TCG EK Credential Profile, TCG handle registry, DESIGN.md).
const (
	EKHandleRSA         uint32 = 0x81010001
	EKHandleECC         uint32 = 0x81010002
	SRKHandle           uint32 = 0x81000001
	IDevIDHandle        uint32 = 0x81020000
	LDevIDHandle        uint32 = 0x81000002
	EKCertIndexRSA      uint32 = 0x01C00002
	EKCertIndexECC      uint32 = 0x01C0000A
	EKChainIndexFirst   uint32 = 0x01C00100
	EKChainIndexLast    uint32 = 0x01C001FF
	IDevIDCertIndex     uint32 = 0x01C90000
	persistentFirst     uint32 = 0x81000000
	persistentLast      uint32 = 0x81FFFFFF
	persistentPlatFirst uint32 = 0x81800000
)

// Sentinel errors. Every error returned by this package wraps one of them (or a go-tpm TPM
// response error, see ResponseCode) so the agent can map it to a stable code.
var (
	ErrInvalidArgument  = errors.New("invalid argument")
	ErrHandleOccupied   = errors.New("handle occupied")
	ErrNotFound         = errors.New("not found")
	ErrNVTooLarge       = errors.New("data larger than the NV index")
	ErrWrongHierarchy   = errors.New("wrong hierarchy")
	ErrActivationFailed = errors.New("credential activation failed")
	ErrNVLocked         = errors.New("NV index write-locked")
)
