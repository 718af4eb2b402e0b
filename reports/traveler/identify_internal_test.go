package traveler

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/journal"
)

// fill sets every field of m to a value of its kind that is not the default (lists get two),
// so that a report holds every field its messages have.
func fill(t testing.TB, m proto.Message, seed int) proto.Message {
	pm := m.ProtoReflect()
	fields := pm.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		n := seed*100 + int(fd.Number())
		var v func(k int) protoreflect.Value
		switch fd.Kind() {
		case protoreflect.Uint32Kind:
			v = func(k int) protoreflect.Value { return protoreflect.ValueOfUint32(uint32(n*7919 + k)) }
		case protoreflect.Uint64Kind:
			v = func(k int) protoreflect.Value { return protoreflect.ValueOfUint64(1<<63 + uint64(n+k)) }
		case protoreflect.StringKind:
			v = func(k int) protoreflect.Value {
				return protoreflect.ValueOfString(fmt.Sprintf("%s-%d/%d", fd.Name(), n, k))
			}
		case protoreflect.BytesKind:
			v = func(k int) protoreflect.Value {
				return protoreflect.ValueOfBytes([]byte(strings.Repeat("\x00\xfe", n%5+k+1)))
			}
		case protoreflect.BoolKind:
			v = func(int) protoreflect.Value { return protoreflect.ValueOfBool(true) }
		case protoreflect.EnumKind:
			vals := fd.Enum().Values()
			v = func(k int) protoreflect.Value {
				return protoreflect.ValueOfEnum(vals.Get(1 + (n+k)%(vals.Len()-1)).Number())
			}
		default:
			t.Fatalf("%s: field %s of kind %s: teach identifyFast (and this test) that kind", pm.Descriptor().FullName(), fd.Name(), fd.Kind())
		}
		if fd.IsList() {
			l := pm.Mutable(fd).List()
			l.Append(v(0))
			l.Append(v(1))
		} else {
			pm.Set(fd, v(0))
		}
	}
	return m
}

// identifySamples are verify_ek intents as the station writes them (first, the ones the fast
// decoder must read), then other forms either decoder may meet.
func identifySamples(t testing.TB) (written, other [][]byte) {
	intent := func(id any) []byte {
		var s string
		switch id := id.(type) {
		case string:
			s = id
		default:
			b, err := json.Marshal(id)
			if err != nil {
				t.Fatal(err)
			}
			s = string(b)
		}
		b, err := json.Marshal(journal.Intent{Step: journal.StepVerifyEK, Identify: s})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	full := journal.Identify{
		Info: fill(t, &agentv1.InfoResult{}, 1).(*agentv1.InfoResult),
		EKs: []*agentv1.EndorsementKey{fill(t, &agentv1.EndorsementKey{}, 2).(*agentv1.EndorsementKey),
			fill(t, &agentv1.EndorsementKey{}, 3).(*agentv1.EndorsementKey), {}},
		Chain: [][]byte{{0x30, 0x82}, {}, []byte(strings.Repeat("chain", 100))},
		Hello: fill(t, &agentv1.Hello{}, 4).(*agentv1.Hello),
	}
	typical := journal.Identify{
		Info: &agentv1.InfoResult{Manufacturer: 0x49465800, ManufacturerId: "IFX", VendorString: "SLB9670",
			FirmwareVersion: 7<<48 | 85<<32 | 4555<<16, Family: "2.0", SpecRevision: 159, SpecYear: 2019,
			PersistentHandles: []uint32{0x81010001, 0x81010002}, NvIndices: []uint32{0x01c00002, 0x01c0000a}},
		EKs: []*agentv1.EndorsementKey{{Algorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, PublicArea: []byte{0, 0x23},
			Certificate: []byte("der"), CertificateIndex: 0x01c0000a}},
		Hello: &agentv1.Hello{ProtocolVersion: 1, AgentVersion: "test", HardwareSerial: "SN-1", BootId: "boot-1",
			TpmTransport: "simulator", SerialSource: "flag"},
	}
	written = [][]byte{
		intent(full), intent(typical), intent(journal.Identify{}), intent(journal.Identify{Info: &agentv1.InfoResult{}}),
		intent(journal.Identify{EKs: []*agentv1.EndorsementKey{{}}, Chain: [][]byte{}}), intent(""),
		[]byte(`{"step":"verify_ek"}`), []byte(`{}`),
	}
	odd := typical
	odd.Hello = &agentv1.Hello{AgentVersion: `v1 <beta> & "quoted" \ é` + "\n\x01"}
	other = [][]byte{
		intent(odd),
		intent(journal.Identify{Info: &agentv1.InfoResult{VendorString: "a<b"}}),
		[]byte(`{"step":"verify_ek","identify":"{\"info\":{\"manufacturer\":1}}","ca":"x"}`),
		[]byte(`{"Identify":"{\"info\":{}}"}`),
		[]byte(`{"identify":"{\"info\":{}}","identify":"{\"info\":{}}"}`),
		[]byte(`{"identify":"{\"info\":{}}" }`), []byte(` {"identify":""}`), []byte(`{"identify":""}x`),
		[]byte(`{"identify":null}`), []byte(`{"identify":1}`), []byte(`{"step":"a\"b"}`), []byte(`{"step":"a\u0041"}`),
		[]byte(`{"identify":"{\u0022info\u0022:{}}"}`), []byte(`{"identify":"{\"info\":{\"family\":\"\\u0041\"}}"}`),
		[]byte(`{"identify":"{\"info\":{\"family\":\"\\u00e9\"}}"}`), []byte(`{"identify":"{\"info\":{}}\u0000"}`),
		[]byte(`{"identify":"{\"info\":{\"specYear\":2019}}"}`),
		[]byte(`{"identify":"{\"info\":{\"spec_year\":\"2019\"}}"}`),
		[]byte(`{"identify":"{\"info\":{\"spec_year\":2019.0}}"}`),
		[]byte(`{"identify":"{\"info\":{\"spec_year\":2e3}}"}`),
		[]byte(`{"identify":"{\"info\":{\"spec_year\":02019}}"}`),
		[]byte(`{"identify":"{\"info\":{\"spec_year\":-1}}"}`),
		[]byte(`{"identify":"{\"info\":{\"spec_year\":4294967296}}"}`),
		[]byte(`{"identify":"{\"info\":{\"spec_year\":null}}"}`),
		[]byte(`{"identify":"{\"info\":{\"spec_year\":1,\"spec_year\":2}}"}`),
		[]byte(`{"identify":"{\"info\":{\"firmware_version\":\"18446744073709551615\"}}"}`),
		[]byte(`{"identify":"{\"info\":{\"firmware_version\":\"18446744073709551616\"}}"}`),
		[]byte(`{"identify":"{\"info\":{\"firmware_version\":12}}"}`),
		[]byte(`{"identify":"{\"info\":{\"persistent_handles\":[]}}"}`),
		[]byte(`{"identify":"{\"info\":{\"persistent_handles\":[1,2,]}}"}`),
		[]byte(`{"identify":"{\"info\":{\"persistent_handles\":null}}"}`),
		[]byte(`{"identify":"{\"info\":{\"persistent_handles\":1}}"}`),
		[]byte(`{"identify":"{\"info\":{\"startup_clear\":0}}"}`),
		[]byte(`{"identify":"{\"info\":{\"unknown_field\":0}}"}`),
		[]byte(`{"identify":"{\"info\":{}, \"eks\":[]}"}`),
		[]byte(`{"identify":"{\"info\":null}"}`), []byte(`{"identify":"null"}`), []byte(`{"identify":"{}"}`),
		[]byte(`{"identify":"{\"eks\":null}"}`), []byte(`{"identify":"{\"eks\":[null]}"}`), []byte(`{"identify":"{\"eks\":[]}"}`),
		[]byte(`{"identify":"{\"eks\":[{}],\"eks\":[{}]}"}`), []byte(`{"identify":"{\"EKs\":[{}]}"}`),
		[]byte(`{"identify":"{\"eks\":[{\"algorithm\":\"KEY_ALGORITHM_RSA_2048\",\"persisted\":true}]}"}`),
		[]byte(`{"identify":"{\"eks\":[{\"algorithm\":1}]}"}`),
		[]byte(`{"identify":"{\"eks\":[{\"algorithm\":\"KEY_ALGORITHM_NONE\"}]}"}`),
		[]byte(`{"identify":"{\"eks\":[{\"persisted\":false}]}"}`), []byte(`{"identify":"{\"eks\":[{\"persisted\":tru}]}"}`),
		[]byte(`{"identify":"{\"eks\":[{\"certificate\":\"AAE=\"}]}"}`),
		[]byte(`{"identify":"{\"eks\":[{\"certificate\":\"AAE\"}]}"}`),
		[]byte(`{"identify":"{\"eks\":[{\"certificate\":\"-_8=\"}]}"}`),
		[]byte(`{"identify":"{\"eks\":[{\"certificate\":\"\"}]}"}`),
		[]byte(`{"identify":"{\"eks\":[{\"certificate\":\"!!!!\"}]}"}`),
		[]byte(`{"identify":"{\"chain\":[\"AAE=\",\"\"]}"}`), []byte(`{"identify":"{\"chain\":[null]}"}`),
		[]byte(`{"identify":"{\"chain\":null}"}`), []byte(`{"identify":"{\"chain\":[\"AAE\"]}"}`),
		[]byte(`{"identify":"{\"hello\":{\"file_roots\":[\"/\",\"/etc\"]}}"}`),
		[]byte(`{"identify":"{\"hello\":{\"boot_id\":\"x\"}} "}`), []byte(`{"identify":"{\"hello\":{}}}"}`),
		[]byte(`{"identify":"{\"info\":{`), []byte(`{"identify":"{\"info\":{}`), []byte(`{`), []byte(``), []byte(`null`),
	}
	return written, other
}

// checkIdentifyIntent fails when the fast decoder accepts an intent the slow one refuses or
// reads another report, or decodeIdentifyIntent disagrees with the slow decoder.
func checkIdentifyIntent(t testing.TB, intent []byte) {
	slow, errSlow := identifyIntentSlow(intent)
	if fast, ok := identifyIntentFast(intent); ok {
		if errSlow != nil {
			t.Fatalf("intent %q: the fast decoder accepts what the slow one refuses: %v", intent, errSlow)
		}
		if !sameIdentify(fast, slow) {
			t.Fatalf("intent %q: fast %v, slow %v", intent, fast, slow)
		}
	}
	got, err := decodeIdentifyIntent(intent)
	if (err == nil) != (errSlow == nil) || errSlow == nil && !sameIdentify(got, slow) {
		t.Fatalf("intent %q: decodeIdentifyIntent %v (%v), slow %v (%v)", intent, got, err, slow, errSlow)
	}
}

func sameIdentify(a, b journal.Identify) bool {
	if !proto.Equal(a.Info, b.Info) || !proto.Equal(a.Hello, b.Hello) || len(a.EKs) != len(b.EKs) ||
		!reflect.DeepEqual(a.Chain, b.Chain) || (a.EKs == nil) != (b.EKs == nil) {
		return false
	}
	for i := range a.EKs {
		if !proto.Equal(a.EKs[i], b.EKs[i]) {
			return false
		}
	}
	return true
}

// TestIdentifyIntent holds the fast identify decoder to encoding/json and protojson, and checks
// that it reads what the station writes (every field of the report's messages included: a
// field of a kind it does not read fails here first).
func TestIdentifyIntent(t *testing.T) {
	written, other := identifySamples(t)
	for _, intent := range append(written, other...) {
		checkIdentifyIntent(t, intent)
	}
	for _, intent := range written {
		if _, ok := identifyIntentFast(intent); !ok {
			t.Errorf("intent %s: the fast decoder declines what the station writes", intent)
		}
	}
	if _, ok := identifyIntentFast(other[0]); ok {
		t.Errorf("intent %s: the fast decoder reads escapes in a report", other[0])
	}
}

// FuzzIdentifyIntent: whatever the intent, the fast decoder reads what the slow one reads; the
// input is also tried as the report an intent holds.
func FuzzIdentifyIntent(f *testing.F) {
	written, other := identifySamples(f)
	for _, intent := range append(written, other...) {
		f.Add(intent)
		var in journal.Intent
		if json.Unmarshal(intent, &in) == nil && in.Identify != "" {
			f.Add([]byte(in.Identify))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkIdentifyIntent(t, data)
		intent, err := json.Marshal(journal.Intent{Step: journal.StepVerifyEK, Identify: string(data)})
		if err != nil {
			t.Fatal(err)
		}
		checkIdentifyIntent(t, intent)
	})
}
