// Package tpm performs every TPM 2.0 operation the device agent offers, with go-tpm's direct
// tpm2 API over any transport: /dev/tpmrm0 (or another device path), the in-process simulator
// (builds with cgo only, so the CGO_ENABLED=0 agent never links it), or swtpm over a unix
// socket or TCP. Operations load at most one transient object besides a recreated EK and flush
// everything they load, so the TPM's few object slots never fill up.
//
// Hierarchy authorizations (owner, endorsement, platform) are empty passwords, as on a unit
// on the manufacturing line. A *TPM is safe for concurrent use.
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
	// ECCP384 is ECC on NIST P-384 (EKs only: TCG template H-3).
	ECCP384
	// RSA3072 is RSA with a 3072-bit modulus (EKs only: TCG template H-6).
	RSA3072
)

func (a Algorithm) String() string {
	switch a {
	case RSA2048:
		return "RSA-2048"
	case ECCP256:
		return "ECC-P256"
	case ECCP384:
		return "ECC-P384"
	case RSA3072:
		return "RSA-3072"
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
	// IAK is the Initial Attestation Key: a restricted signing primary key in the endorsement
	// hierarchy (IAKTemplate).
	IAK
)

func (r Role) String() string {
	switch r {
	case IDevID:
		return "IDevID"
	case LDevID:
		return "LDevID"
	case IAK:
		return "IAK"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

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

func (h Hierarchy) String() string {
	switch h {
	case Owner:
		return "owner"
	case Platform:
		return "platform"
	case Endorsement:
		return "endorsement"
	}
	return fmt.Sprintf("Hierarchy(%d)", int(h))
}

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

// Default handles and indices: the EKs and SRKs after the TCG handle registry (Registry of
// Reserved TPM 2.0 Handles and Localities), the DevID keys after the handles docs/tpm-layout.md
// lists for them, the EK certificate indices after the TCG EK Credential Profile.
const (
	EKHandleRSA         uint32 = 0x81010001
	EKHandleECC         uint32 = 0x81010002
	EKHandleECCP384     uint32 = 0x81010016
	EKHandleRSA3072     uint32 = 0x8101001C
	SRKHandleRSA        uint32 = 0x81000001
	SRKHandleECC        uint32 = 0x81000002
	IDevIDHandle        uint32 = 0x81020000
	IAKHandle           uint32 = 0x81020001
	LDevIDHandle        uint32 = 0x81020002
	LAKHandle           uint32 = 0x81020003
	EKCertIndexRSA      uint32 = 0x01C00002
	EKCertIndexECC      uint32 = 0x01C0000A
	EKCertIndexECCP384  uint32 = 0x01C00016
	EKCertIndexRSA3072  uint32 = 0x01C0001C
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

// NV index range (TPM 2.0 Part 2, TPM_HT_NV_INDEX).
const (
	nvIndexFirst uint32 = 0x01000000
	nvIndexLast  uint32 = 0x01FFFFFF
)

// TPMA_NV bits (TPM 2.0 Part 2, 13.4), for NVWriteRequest.Attributes and NVData.Attributes.
const (
	NVPPWrite        uint32 = 1 << 0
	NVOwnerWrite     uint32 = 1 << 1
	NVAuthWrite      uint32 = 1 << 2
	NVPolicyWrite    uint32 = 1 << 3
	NVPolicyDelete   uint32 = 1 << 10
	NVWriteLocked    uint32 = 1 << 11
	NVWriteAll       uint32 = 1 << 12
	NVWriteDefine    uint32 = 1 << 13
	NVWriteSTClear   uint32 = 1 << 14
	NVGlobalLock     uint32 = 1 << 15
	NVPPRead         uint32 = 1 << 16
	NVOwnerRead      uint32 = 1 << 17
	NVAuthRead       uint32 = 1 << 18
	NVPolicyRead     uint32 = 1 << 19
	NVNoDA           uint32 = 1 << 25
	NVOrderly        uint32 = 1 << 26
	NVClearSTClear   uint32 = 1 << 27
	NVReadLocked     uint32 = 1 << 28
	NVWritten        uint32 = 1 << 29
	NVPlatformCreate uint32 = 1 << 30
	NVReadSTClear    uint32 = 1 << 31

	// NVStateBits are the TPMA_NV bits that record state rather than a definition.
	NVStateBits = NVWriteLocked | NVReadLocked | NVWritten
	// NVDefaultOwner are the attributes NVWrite gives an index it defines with Owner auth.
	NVDefaultOwner = NVOwnerWrite | NVAuthWrite | NVOwnerRead | NVAuthRead | NVNoDA | NVWriteDefine
	// NVDefaultPlatform are the attributes NVWrite gives an index it defines with Platform auth.
	NVDefaultPlatform = NVPPWrite | NVAuthWrite | NVPPRead | NVOwnerRead | NVAuthRead | NVNoDA | NVWriteDefine | NVPlatformCreate
)
