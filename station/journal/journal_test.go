package journal_test

import (
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/journal"
)

func report() journal.Identify {
	sc := uint32(0x8000000f)
	return journal.Identify{
		Info: &agentv1.InfoResult{Manufacturer: 0x49465800, ManufacturerId: "IFX", VendorString: "SLB9670",
			FirmwareVersion: 7<<48 | 85<<32 | 4555<<16, Family: "2.0", SpecRevision: 159, SpecYear: 2019,
			PersistentHandles: []uint32{0x81010001}, NvIndices: []uint32{0x01c0000a}, StartupClear: &sc},
		EKs: []*agentv1.EndorsementKey{{Algorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, PublicArea: []byte{0, 0x23, 0xff},
			Certificate: []byte{0x30, 0x82, 0xfe}, CertificateIndex: 0x01c0000a, Persisted: true, Handle: 0x81010001}},
		Chain: [][]byte{{1, 2, 3}},
		Hello: &agentv1.Hello{ProtocolVersion: 1, AgentVersion: "test", HardwareSerial: "SN-1", FixtureSlot: "slot-7",
			BootId: "boot-1", TpmTransport: "simulator", SerialSource: "flag", SessionAttempt: 3},
	}
}

func equal(t *testing.T, got, want journal.Identify) {
	t.Helper()
	if !proto.Equal(got.Info, want.Info) || !proto.Equal(got.Hello, want.Hello) || len(got.EKs) != len(want.EKs) {
		t.Fatalf("decoded %+v, want %+v", got, want)
	}
	for i := range want.EKs {
		if !proto.Equal(got.EKs[i], want.EKs[i]) {
			t.Errorf("EK %d: %v, want %v", i, got.EKs[i], want.EKs[i])
		}
	}
	if len(got.Chain) != len(want.Chain) || string(got.Chain[0]) != string(want.Chain[0]) {
		t.Errorf("chain %x, want %x", got.Chain, want.Chain)
	}
}

// The identify report is stored with protojson for its messages and reads back whole.
func TestIdentifyProtoJSON(t *testing.T) {
	want := report()
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"info", "eks", "chain", "hello"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("encoding %s lacks %q", b, k)
		}
	}
	// protojson: enums by name, 64-bit integers as strings, proto field names.
	for _, s := range []string{`KEY_ALGORITHM_ECC_P256`, `"firmware_version":`, `"fixture_slot":`} {
		if !strings.Contains(strings.ReplaceAll(string(b), " ", ""), s) {
			t.Errorf("encoding %s lacks %s", b, s)
		}
	}
	var got journal.Identify
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	equal(t, got, want)
}

// legacyReport is report() as stations stored it before protojson: encoding/json of the
// generated structs (enums and 64-bit integers as numbers, proto field names).
const legacyReport = `{"Info":{"manufacturer":1229346816,"manufacturer_id":"IFX","vendor_string":"SLB9670",` +
	`"firmware_version":1970690207711232,"family":"2.0","spec_revision":159,"spec_year":2019,` +
	`"persistent_handles":[2164326401],"nv_indices":[29360138],"startup_clear":2147483663},` +
	`"EKs":[{"algorithm":2,"public_area":"ACP/","persisted":true,"handle":2164326401,"certificate":"MIL+","certificate_index":29360138}],` +
	`"Chain":["AQID"],"Hello":{"protocol_version":1,"agent_version":"test","hardware_serial":"SN-1","serial_source":"flag",` +
	`"fixture_slot":"slot-7","boot_id":"boot-1","tpm_transport":"simulator","session_attempt":3}}`

// Records written before protojson still read.
func TestIdentifyLegacy(t *testing.T) {
	var got journal.Identify
	if err := json.Unmarshal([]byte(legacyReport), &got); err != nil {
		t.Fatal(err)
	}
	equal(t, got, report())
}

func TestIdentifyInvalid(t *testing.T) {
	for _, in := range []string{`[]`, `{"info":{"manufacturer":"x"}}`, `{"eks":[{"handle":-1}]}`, `{"Info":7}`} {
		var id journal.Identify
		if err := json.Unmarshal([]byte(in), &id); err == nil {
			t.Errorf("%s decoded", in)
		}
	}
}

// An intent encodes as the map of strings it once was: the same keys, in the same order.
func TestIntentEncoding(t *testing.T) {
	in := journal.Intent{Step: "idevid_enroll", CSRSHA256: "ab", CA: "maker", Identify: `{"info":{}}`}
	got, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want, err := json.Marshal(map[string]string{"step": in.Step, "csr_sha256": in.CSRSHA256, "ca": in.CA, "identify": in.Identify})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("intent %s, want %s", got, want)
	}
	got, _ = json.Marshal(journal.Intent{Step: "verify"})
	if string(got) != `{"step":"verify"}` {
		t.Errorf("intent %s", got)
	}
}
