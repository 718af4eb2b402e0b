package workflow

import (
	"bytes"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"strings"
)

var (
	oidSubjectAltName     = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidHardwareModuleName = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 8, 4}
	// OIDTPM20 is tcg-sv-tpm20, the hwType of a TPM 2.0's hardwareModuleName (TCG TPM 2.0 Keys
	// for Device Identity and Attestation).
	OIDTPM20 = asn1.ObjectIdentifier{2, 23, 133, 1, 2}

	oidCertificatePolicies = asn1.ObjectIdentifier{2, 5, 29, 32}
	// The TCG DevID certificate policies (TCG TPM 2.0 Keys for Device Identity and
	// Attestation, TCG OID registry): what the CA's registration authority verified.
	// OIDVerifiedTPMResidency: the key is resident in the TPM whose EK was verified.
	OIDVerifiedTPMResidency = asn1.ObjectIdentifier{2, 23, 133, 11, 1, 1}
	// OIDVerifiedTPMFixed: the key's fixedTPM attribute was verified (an IDevID, IAK or
	// LDevID). (tcg-cap-verifiedTPMRestricted, OIDVerifiedTPMRestricted, goes with an IAK.)
	OIDVerifiedTPMFixed = asn1.ObjectIdentifier{2, 23, 133, 11, 1, 2}
)

// What a DevID certificate's hardwareModuleName (subjectAltName otherName, RFC 4108) names;
// KeyProfile.HardwareModuleName.
const (
	// HWModuleTPM names the TPM that holds the key, as the TCG DevID specification defines it
	// for a TPM-resident DevID: hwType tcg-sv-tpm20 (2.23.133.1.2), hwSerialNum the serial
	// number of the TPM's EK certificate (the one the station verified), big-endian, without
	// leading zero bytes. The unit's serial stays in the subject's serialNumber.
	HWModuleTPM = "tpm"
	// HWModuleSerial names the unit: hwType KeyProfile.HardwareModuleType, hwSerialNum the
	// unit's serial.
	HWModuleSerial = "serial"
	// HWModuleNone asks for no subjectAltName.
	HWModuleNone = ""
)

// Subject is the distinguished name a profile gives a DevID certificate. CommonName may hold
// "{serial}", replaced by the unit's serial. The serial always goes into serialNumber (IEEE
// 802.1AR).
type Subject struct {
	Country            []string
	Organization       []string
	OrganizationalUnit []string
	CommonName         string
}

// subjectDER builds the DER subject for a unit from verified data only.
func (s Subject) subjectDER(serial string) ([]byte, error) {
	name := pkix.Name{
		Country:            s.Country,
		Organization:       s.Organization,
		OrganizationalUnit: s.OrganizationalUnit,
		CommonName:         strings.ReplaceAll(s.CommonName, "{serial}", serial),
		SerialNumber:       serial,
	}
	der, err := asn1.Marshal(name.ToRDNSequence())
	if err != nil {
		return nil, fmt.Errorf("encoding subject: %w", err)
	}
	return der, nil
}

// hardwareModuleName is RFC 4108's HardwareModuleName.
type hardwareModuleName struct {
	Type   asn1.ObjectIdentifier
	Serial []byte
}

// otherName is the GeneralName otherName alternative's content; Value is the [0] EXPLICIT
// wrapper around the name itself.
type otherName struct {
	TypeID asn1.ObjectIdentifier
	Value  asn1.RawValue
}

// sanExtension returns a subjectAltName holding one otherName hardwareModuleName{hwType,
// serial} (RFC 4108, IEEE 802.1AR), or false when hwType is empty (no subjectAltName).
func sanExtension(hwType asn1.ObjectIdentifier, serial []byte) (pkix.Extension, bool, error) {
	if len(hwType) == 0 {
		return pkix.Extension{}, false, nil
	}
	hmn, err := asn1.Marshal(hardwareModuleName{Type: hwType, Serial: serial})
	if err != nil {
		return pkix.Extension{}, false, err
	}
	on, err := asn1.MarshalWithParams(otherName{
		TypeID: oidHardwareModuleName,
		Value:  asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: hmn},
	}, "tag:0")
	if err != nil {
		return pkix.Extension{}, false, err
	}
	names, err := asn1.Marshal([]asn1.RawValue{{FullBytes: on}})
	if err != nil {
		return pkix.Extension{}, false, err
	}
	return pkix.Extension{Id: oidSubjectAltName, Value: names}, true, nil
}

// parseHardwareModuleName returns the hwType and serial of the single hardwareModuleName
// otherName in a subjectAltName value.
func parseHardwareModuleName(san []byte) (asn1.ObjectIdentifier, []byte, error) {
	var names []asn1.RawValue
	if rest, err := asn1.Unmarshal(san, &names); err != nil || len(rest) != 0 {
		return nil, nil, errors.New("malformed subjectAltName")
	}
	var found *hardwareModuleName
	for _, n := range names {
		if n.Class != asn1.ClassContextSpecific || n.Tag != 0 {
			continue
		}
		var typeID asn1.ObjectIdentifier
		rest, err := asn1.Unmarshal(n.Bytes, &typeID)
		if err != nil {
			return nil, nil, errors.New("malformed otherName")
		}
		if !typeID.Equal(oidHardwareModuleName) {
			continue
		}
		var value asn1.RawValue
		if rest, err = asn1.Unmarshal(rest, &value); err != nil || len(rest) != 0 || value.Class != asn1.ClassContextSpecific || value.Tag != 0 {
			return nil, nil, errors.New("malformed otherName value")
		}
		if found != nil {
			return nil, nil, errors.New("more than one hardwareModuleName")
		}
		var h hardwareModuleName
		if rest, err := asn1.Unmarshal(value.Bytes, &h); err != nil || len(rest) != 0 {
			return nil, nil, errors.New("malformed hardwareModuleName")
		}
		found = &h
	}
	if found == nil {
		return nil, nil, errors.New("no hardwareModuleName")
	}
	return found.Type, found.Serial, nil
}

// sameHardwareModuleName reports whether two subjectAltName values carry the same
// hardwareModuleName.
func sameHardwareModuleName(a, b []byte) bool {
	ta, sa, err := parseHardwareModuleName(a)
	if err != nil {
		return false
	}
	tb, sb, err := parseHardwareModuleName(b)
	return err == nil && ta.Equal(tb) && bytes.Equal(sa, sb)
}

// devIDPolicies are the certificate policies the station asks for in a DevID certificate: it
// verified the key's residency in the EK's TPM (credential activation) and its fixedTPM
// attribute (attest.CheckDevID) before building the CSR.
var devIDPolicies = []asn1.ObjectIdentifier{OIDVerifiedTPMResidency, OIDVerifiedTPMFixed}

// policyInformation is RFC 5280's PolicyInformation without qualifiers.
type policyInformation struct {
	Policy asn1.ObjectIdentifier
}

// policiesExtension returns a certificatePolicies extension (RFC 5280 4.2.1.4, not critical)
// holding the given policies.
func policiesExtension(policies []asn1.ObjectIdentifier) (pkix.Extension, error) {
	infos := make([]policyInformation, len(policies))
	for i, p := range policies {
		infos[i] = policyInformation{Policy: p}
	}
	v, err := asn1.Marshal(infos)
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("encoding certificate policies: %w", err)
	}
	return pkix.Extension{Id: oidCertificatePolicies, Value: v}, nil
}

// hasPolicies reports whether a certificate carries every policy of a certificatePolicies
// extension value the station requested.
func hasPolicies(got []asn1.ObjectIdentifier, requested []byte) bool {
	var infos []policyInformation
	if rest, err := asn1.Unmarshal(requested, &infos); err != nil || len(rest) != 0 {
		return false
	}
	for _, want := range infos {
		if !slices.ContainsFunc(got, want.Policy.Equal) {
			return false
		}
	}
	return true
}
