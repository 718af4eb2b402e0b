package traveler

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/devid-station/devid/station/store"
)

// TestMarshalRecordFields fails when a type of the traveler gains, loses or renames a field:
// marshalRecord spells them out and must learn of it.
func TestMarshalRecordFields(t *testing.T) {
	want := map[reflect.Type]string{
		reflect.TypeFor[Record](): "Schema:schema Serial:serial WorkOrder:work_order,omitempty WorkOrderCreatedBy:work_order_created_by,omitempty " +
			"Profile:profile,omitempty StationID:station_id Result:result ErrorCode:error_code,omitempty ErrorMessage:error_message,omitempty " +
			"Attempts:attempts StartedAt:started_at,omitempty EndedAt:ended_at,omitempty CycleTimeSeconds:cycle_time_seconds,omitempty " +
			"Provisionings:provisionings Steps:steps TPM:tpm,omitempty EK:ek,omitempty IDevID:idevid,omitempty LDevID:ldevid,omitempty " +
			"IAK:iak,omitempty IAKCertification:iak_certification,omitempty Certificates:certificates,omitempty " +
			"RevocationCandidates:revocation_candidates,omitempty PossiblyIssued:possibly_issued,omitempty Verification:verification,omitempty " +
			"FieldCheck:field_check,omitempty Reworks:reworks,omitempty Actions:actions,omitempty",
		reflect.TypeFor[Provisioning](): "Number:number Rework:rework,omitempty Result:result ErrorCode:error_code,omitempty " +
			"StartedAt:started_at,omitempty EndedAt:ended_at,omitempty CycleTimeSeconds:cycle_time_seconds,omitempty Verification:verification,omitempty",
		reflect.TypeFor[Step](): "Name:name Attempt:attempt StartedAt:started_at EndedAt:ended_at,omitempty DurationMS:duration_ms,omitempty " +
			"ErrorCode:error_code,omitempty",
		reflect.TypeFor[TPMInfo](): "Manufacturer:manufacturer ManufacturerID:manufacturer_id,omitempty VendorString:vendor_string,omitempty " +
			"FirmwareVersion:firmware_version,omitempty Family:family,omitempty SpecLevel:spec_level,omitempty SpecRevision:spec_revision,omitempty " +
			"SpecYear:spec_year,omitempty EKsHeld:eks_held,omitempty EKsRead:eks_read,omitempty EKUsed:ek_used,omitempty " +
			"AgentVersion:agent_version,omitempty TPMTransport:tpm_transport,omitempty SerialSource:serial_source,omitempty " +
			"FixtureSlot:fixture_slot,omitempty BootID:boot_id,omitempty",
		reflect.TypeFor[EKCertificate](): "Algorithm:algorithm Fingerprint:ek_fingerprint Manufacturer:manufacturer,omitempty Subject:subject " +
			"Issuer:issuer SerialNumber:serial_number SHA256:sha256 DER:- Chain:-",
		reflect.TypeFor[Certificate](): "Subject:subject Issuer:issuer SerialNumber:serial_number NotBefore:not_before NotAfter:not_after " +
			"SHA256:sha256 PEM:pem",
		reflect.TypeFor[IAKCertification](): "AttestSHA256:attest_sha256 Attest:attest Signature:signature Nonce:nonce " +
			"CertifiedName:certified_name IAKName:iak_name",
		reflect.TypeFor[CertificateRef](): "Role:role SHA256:sha256 Duplicate:duplicate,omitempty Status:status Reason:reason,omitempty " +
			"Issuer:issuer,omitempty SerialNumber:serial_number,omitempty",
		reflect.TypeFor[PossiblyIssued](): "ID:id Role:role CA:ca PublicKeySHA256:public_key_sha256 CSRSHA256:csr_sha256 From:from To:to",
		reflect.TypeFor[FieldCheck](): "Mode:mode Endpoint:endpoint,omitempty ClientCertSHA256:client_cert_sha256,omitempty " +
			"TLSVersion:tls_version,omitempty HTTPStatus:http_status,omitempty Signatures:tpm_signatures,omitempty Reenrolled:reenrolled,omitempty",
		reflect.TypeFor[Action]():       "Time:time Principal:principal Kind:kind Message:message,omitempty Data:data,omitempty",
		reflect.TypeFor[store.Rework](): "By:by Reason:reason AuthorizedAt:authorized_at UsedAt:used_at,omitzero",
	}
	for typ, w := range want {
		var got []string
		for f := range typ.Fields() {
			got = append(got, f.Name+":"+f.Tag.Get("json"))
		}
		if g := fmt.Sprint(got); g != "["+w+"]" {
			t.Errorf("%v fields changed: marshalRecord must follow\n got %s\nwant [%s]", typ, g, w)
		}
	}
}

// TestMarshalRecord: marshalRecord writes what json.Marshal writes, and fails where it fails,
// for chosen edge cases and for random records.
func TestMarshalRecord(t *testing.T) {
	at := time.Date(2026, 12, 1, 3, 4, 5, 600700800, time.UTC)
	cases := []Record{
		{},
		{Provisionings: []Provisioning{}, Steps: []Step{}, Certificates: []CertificateRef{}, Reworks: []store.Rework{},
			Verification: map[string]string{}, Actions: []Action{}, TPM: &TPMInfo{EKsHeld: []string{}}},
		{Schema: Schema, Serial: `<a href="x">&'\` + "\u2028\u2029\x01\x7f\xff\b\f\n\r\t" + `é`, StartedAt: &at, CycleTimeSeconds: 1e-7},
		{CycleTimeSeconds: 1e21},
		{CycleTimeSeconds: -2.5, Steps: []Step{{DurationMS: 1e-6}, {DurationMS: 999999999999999999999}}},
		{CycleTimeSeconds: math.NaN()},
		{CycleTimeSeconds: math.Inf(1)},
		{StartedAt: ptr(time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC))},
		{StartedAt: ptr(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC))},
		{StartedAt: ptr(at.In(time.FixedZone("odd", 24*3600)))},
		{StartedAt: ptr(at.In(time.FixedZone("odd", -23*3600-59*60)))},
		{StartedAt: ptr(at.In(time.FixedZone("odd", 3600+30)))},
		{Steps: []Step{{StartedAt: time.Time{}}}, PossiblyIssued: []PossiblyIssued{{}}},
	}
	for i := range cases {
		compareRecord(t, fmt.Sprint("case ", i), &cases[i])
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 2000 {
		alphabet := "abcXYZ019-_ :/=+\n"
		if i%2 == 1 {
			alphabet = "abc <>&\"\\\n\t\x00\x1f\x7fé\u2028\u2029\xff"
		}
		r := randomRecord(rng, alphabet)
		compareRecord(t, fmt.Sprint("random ", i), &r)
	}
}

func ptr[T any](v T) *T { return &v }

func compareRecord(t *testing.T, name string, r *Record) {
	t.Helper()
	want, werr := json.Marshal(r)
	got, gerr := marshalRecord(r)
	if (werr != nil) != (gerr != nil) {
		t.Fatalf("%s: marshalRecord error %v, encoding/json %v", name, gerr, werr)
	}
	if werr == nil && !bytes.Equal(got, want) {
		t.Fatalf("%s:\n got %s\nwant %s", name, got, want)
	}
}

func randomRecord(rng *rand.Rand, alphabet string) Record {
	runes := []rune(alphabet)
	str := func() string {
		if rng.IntN(4) == 0 {
			return ""
		}
		var b []rune
		for range 1 + rng.IntN(8) {
			b = append(b, runes[rng.IntN(len(runes))])
		}
		s := string(b)
		if rng.IntN(40) == 0 {
			s += "\xff" // invalid UTF-8
		}
		return s
	}
	zones := []*time.Location{time.UTC, time.FixedZone("CET", 3600), time.FixedZone("x", -9*3600-30*60), time.FixedZone("y", 45)}
	tm := func() time.Time {
		if rng.IntN(6) == 0 {
			return time.Time{}
		}
		return time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).In(zones[rng.IntN(len(zones))])
	}
	tp := func() *time.Time {
		if rng.IntN(3) == 0 {
			return nil
		}
		return ptr(tm())
	}
	fl := func() float64 {
		switch rng.IntN(5) {
		case 0:
			return 0
		case 1:
			return float64(rng.Int64N(1e6)) / 1000
		case 2:
			return rng.Float64() * 1e4
		case 3:
			return -rng.Float64()
		}
		return float64(rng.Int64N(100000))
	}
	strs := func() []string {
		var l []string
		if rng.IntN(3) > 0 {
			l = []string{}
		}
		for range rng.IntN(3) {
			l = append(l, str())
		}
		return l
	}
	smap := func() map[string]string {
		if rng.IntN(3) == 0 {
			return nil
		}
		m := map[string]string{}
		for range rng.IntN(5) {
			m[str()] = str()
		}
		return m
	}
	cert := func() *Certificate {
		if rng.IntN(3) == 0 {
			return nil
		}
		return &Certificate{Subject: str(), Issuer: str(), SerialNumber: str(), NotBefore: tm(), NotAfter: tm(), SHA256: str(),
			PEM: certificatePEM([]byte(str() + str() + str()))}
	}
	rework := func() store.Rework {
		return store.Rework{By: str(), Reason: str(), AuthorizedAt: tm(), UsedAt: tm()}
	}
	ref := func() CertificateRef {
		return CertificateRef{Role: str(), SHA256: str(), Duplicate: rng.IntN(2) == 0, Status: str(), Reason: str(), Issuer: str(),
			SerialNumber: str()}
	}
	r := Record{Schema: str(), Serial: str(), WorkOrder: str(), WorkOrderCreatedBy: str(), Profile: str(), StationID: str(),
		Result: str(), ErrorCode: str(), ErrorMessage: str(), Attempts: rng.Uint64() >> rng.IntN(64), StartedAt: tp(), EndedAt: tp(),
		CycleTimeSeconds: fl(), IDevID: cert(), LDevID: cert(), IAK: cert(), Verification: smap()}
	if rng.IntN(5) > 0 {
		r.Provisionings = []Provisioning{}
	}
	for i := range rng.IntN(3) {
		p := Provisioning{Number: i + 1 - rng.IntN(3), Result: str(), ErrorCode: str(), StartedAt: tp(), EndedAt: tp(),
			CycleTimeSeconds: fl(), Verification: smap()}
		if rng.IntN(2) == 0 {
			p.Rework = ptr(rework())
		}
		r.Provisionings = append(r.Provisionings, p)
	}
	if rng.IntN(5) > 0 {
		r.Steps = []Step{}
	}
	for range rng.IntN(6) {
		r.Steps = append(r.Steps, Step{Name: str(), Attempt: rng.Uint64N(5), StartedAt: tm(), EndedAt: tp(), DurationMS: fl(), ErrorCode: str()})
	}
	if rng.IntN(4) > 0 {
		r.TPM = &TPMInfo{Manufacturer: str(), ManufacturerID: str(), VendorString: str(), FirmwareVersion: str(), Family: str(),
			SpecLevel: rng.Uint32() >> rng.IntN(32), SpecRevision: rng.Uint32N(3), SpecYear: rng.Uint32N(3000), EKsHeld: strs(),
			EKsRead: strs(), EKUsed: str(), AgentVersion: str(), TPMTransport: str(), SerialSource: str(), FixtureSlot: str(), BootID: str()}
	}
	if rng.IntN(4) > 0 {
		r.EK = &EKCertificate{Algorithm: str(), Fingerprint: str(), Manufacturer: str(), Subject: str(), Issuer: str(),
			SerialNumber: str(), SHA256: str(), DER: []byte(str()), Chain: [][]byte{[]byte(str())}}
	}
	if rng.IntN(3) == 0 {
		r.IAKCertification = &IAKCertification{AttestSHA256: str(), Attest: str(), Signature: str(), Nonce: str(),
			CertifiedName: str(), IAKName: str()}
	}
	for range rng.IntN(4) {
		r.Certificates = append(r.Certificates, ref())
	}
	for range rng.IntN(3) {
		r.RevocationCandidates = append(r.RevocationCandidates, ref())
	}
	for range rng.IntN(3) {
		r.PossiblyIssued = append(r.PossiblyIssued, PossiblyIssued{ID: str(), Role: str(), CA: str(), PublicKeySHA256: str(),
			CSRSHA256: str(), From: tm(), To: tm()})
	}
	if rng.IntN(3) == 0 {
		r.FieldCheck = &FieldCheck{Mode: str(), Endpoint: str(), ClientCertSHA256: str(), TLSVersion: str(),
			HTTPStatus: rng.IntN(3) * (200 - rng.IntN(400)), Signatures: rng.IntN(3) - 1, Reenrolled: cert()}
	}
	for range rng.IntN(3) {
		r.Reworks = append(r.Reworks, rework())
	}
	for range rng.IntN(3) {
		r.Actions = append(r.Actions, Action{Time: tm(), Principal: str(), Kind: str(), Message: str(), Data: smap()})
	}
	return r
}
