package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// TestEncodeUnitFields fails when a type of the unit's state gains, loses or renames a field:
// encodeUnit spells them out and must learn of it.
func TestEncodeUnitFields(t *testing.T) {
	want := map[reflect.Type]string{
		reflect.TypeFor[UnitState](): "Serial:serial WorkOrderID:work_order_id,omitempty Profile:profile,omitempty " +
			"EKFingerprint:ek_fingerprint,omitempty EKCertSHA256:ek_cert_sha256,omitempty FixtureSlot:fixture_slot,omitempty CurrentStep:current_step,omitempty Status:status " +
			"ErrorCode:error_code,omitempty ErrorMessage:error_message,omitempty Attempts:attempts Steps:steps,omitempty " +
			"Keys:keys,omitempty Certificates:certificates,omitempty Rework:rework,omitempty Reworks:reworks,omitempty " +
			"CreatedAt:created_at UpdatedAt:updated_at",
		reflect.TypeFor[StepSummary](): "Attempts:attempts StartedAt:started_at EndedAt:ended_at,omitzero ErrorCode:error_code,omitempty",
		reflect.TypeFor[KeyRef]():      "Handle:handle Name:name,omitempty",
		reflect.TypeFor[CertRef](): "Role:role SHA256:sha256 IssuerHash:issuer_hash SerialHex:serial_hex Duplicate:duplicate,omitempty " +
			"Status:status,omitempty Reason:reason,omitempty",
		reflect.TypeFor[Rework](): "By:by Reason:reason AuthorizedAt:authorized_at UsedAt:used_at,omitzero",
	}
	for typ, w := range want {
		var got []string
		for f := range typ.Fields() {
			got = append(got, f.Name+":"+f.Tag.Get("json"))
		}
		if g := fmt.Sprint(got); g != "["+w+"]" {
			t.Errorf("%v fields changed: encodeUnit must follow\n got %s\nwant [%s]", typ, g, w)
		}
	}
}

// TestEncodeUnit: encodeUnit writes what encoding/json writes, for chosen edge cases and for
// random states.
func TestEncodeUnit(t *testing.T) {
	at := time.Date(2026, 12, 1, 3, 4, 5, 600700800, time.UTC)
	paris := time.FixedZone("CET", 3600)
	cases := []UnitState{
		{},
		{Serial: "SN-1", Status: StatusRunning, CreatedAt: at, UpdatedAt: at},
		{Serial: `<a href="x">&'\` + "\u2028\x01\xff" + `é`, ErrorMessage: "line\nbreak\ttab", Status: StatusFailed},
		{Serial: "SN-2", Steps: map[string]StepSummary{}, Keys: map[string]KeyRef{}, Certificates: []CertRef{}, Reworks: []Rework{}},
		{Serial: "SN-3", CreatedAt: at.In(paris), UpdatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		{Serial: "SN-4", Steps: map[string]StepSummary{"b": {Attempts: 2, StartedAt: at}, "a": {Attempts: 1, StartedAt: at, EndedAt: at.Add(time.Second), ErrorCode: "X"}},
			Keys:         map[string]KeyRef{"idevid": {Handle: 0x81020000, Name: []byte{0, 0x0b, 1, 2, 3}}, "srk": {Handle: 1}, "e": {Name: []byte{}}},
			Certificates: []CertRef{{Role: RoleIDevID, SHA256: "ab", IssuerHash: "cd", SerialHex: "01", Duplicate: true, Status: CertRefused, Reason: "<why>"}, {}},
			Rework:       &Rework{By: "qa", Reason: "r", AuthorizedAt: at},
			Reworks:      []Rework{{By: "a", AuthorizedAt: at, UsedAt: at}, {}}},
	}
	for i, u := range cases {
		compareEncodings(t, fmt.Sprint("case ", i), &u)
	}
	// Times encoding/json refuses (years outside 0 to 9999, a zone 24 hours or more off UTC):
	// encodeUnit refuses them too.
	for _, tm := range []time.Time{time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		at.In(time.FixedZone("odd", 25*3600))} {
		u := UnitState{Serial: "SN", CreatedAt: tm}
		if _, err := encodeUnit(&u); err == nil {
			t.Errorf("%v encoded", tm)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		u := randomUnit(rng)
		compareEncodings(t, fmt.Sprint("random ", i), &u)
	}
}

func compareEncodings(t *testing.T, name string, u *UnitState) {
	t.Helper()
	want, werr := json.Marshal(u)
	got, gerr := encodeUnit(u)
	if (werr != nil) != (gerr != nil) {
		t.Fatalf("%s: encodeUnit error %v, encoding/json %v", name, gerr, werr)
	}
	if werr == nil && !bytes.Equal(got, want) {
		t.Fatalf("%s:\n got %s\nwant %s", name, got, want)
	}
}

// unitAlphabet is what randomUnit's strings are made of: some characters encoding/json escapes.
const unitAlphabet = "abcXYZ019-_ <>&\"\\\n\x00é\u2028"

func randomUnit(rng *rand.Rand) UnitState { return randomUnitOf(rng, unitAlphabet) }

// randomUnitOf returns a random unit state whose strings are made of alphabet's characters.
func randomUnitOf(rng *rand.Rand, alphabet string) UnitState {
	str := func() string {
		var b []rune
		for range rng.IntN(6) {
			b = append(b, []rune(alphabet)[rng.IntN(len([]rune(alphabet)))])
		}
		return string(b)
	}
	tm := func() time.Time {
		if rng.IntN(4) == 0 {
			return time.Time{}
		}
		return time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).UTC()
	}
	u := UnitState{Serial: str(), WorkOrderID: str(), Profile: str(), EKFingerprint: str(), EKCertSHA256: str(), FixtureSlot: str(), CurrentStep: str(),
		Status: Status(str()), ErrorCode: str(), ErrorMessage: str(), Attempts: rng.Uint64(), CreatedAt: tm(), UpdatedAt: tm()}
	if rng.IntN(3) > 0 {
		u.Steps = map[string]StepSummary{}
		for range rng.IntN(5) {
			u.Steps[str()] = StepSummary{Attempts: rng.Uint64N(9), StartedAt: tm(), EndedAt: tm(), ErrorCode: str()}
		}
	}
	if rng.IntN(3) > 0 {
		u.Keys = map[string]KeyRef{}
		for range rng.IntN(3) {
			var name []byte
			if n := rng.IntN(4); n > 0 {
				name = make([]byte, n*11)
				for i := range name {
					name[i] = byte(rng.IntN(256))
				}
			}
			u.Keys[str()] = KeyRef{Handle: rng.Uint32(), Name: name}
		}
	}
	for range rng.IntN(3) {
		u.Certificates = append(u.Certificates, CertRef{Role: Role(str()), SHA256: str(), IssuerHash: str(), SerialHex: str(),
			Duplicate: rng.IntN(2) == 0, Status: CertStatus(str()), Reason: str()})
	}
	if rng.IntN(2) == 0 {
		u.Rework = &Rework{By: str(), Reason: str(), AuthorizedAt: tm(), UsedAt: tm()}
	}
	for range rng.IntN(3) {
		u.Reworks = append(u.Reworks, Rework{By: str(), Reason: str(), AuthorizedAt: tm(), UsedAt: tm()})
	}
	return u
}
