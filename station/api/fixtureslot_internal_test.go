package api

import (
	"encoding/json"
	"testing"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/journal"
)

// TestFixtureSlot reads the slot from verify_ek intents in both stored forms of the identify
// report, as journal.Identify decodes them.
func TestFixtureSlot(t *testing.T) {
	hello := &agentv1.Hello{HardwareSerial: "SN-1", FixtureSlot: "slot-7", BootId: "b"}
	current, err := journal.Identify{Hello: hello, Chain: [][]byte{{1, 2}}}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	older, err := json.Marshal(struct {
		Chain [][]byte
		Hello *agentv1.Hello
	}{[][]byte{{1, 2}}, hello})
	if err != nil {
		t.Fatal(err)
	}
	intent := func(identify []byte) []byte {
		b, err := json.Marshal(journal.Intent{Identify: string(identify)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, c := range []struct {
		name   string
		intent []byte
		want   string
	}{
		{"protojson", intent(current), "slot-7"},
		{"encoding/json of the generated structs", intent(older), "slot-7"},
		{"no identify", []byte(`{}`), ""},
		{"not JSON", []byte(`{`), ""},
		{"identify not JSON", intent([]byte(`{"hello":`)), ""},
	} {
		if got := fixtureSlot(c.intent); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
		var in journal.Intent
		var id journal.Identify
		if c.want != "" && (json.Unmarshal(c.intent, &in) != nil || json.Unmarshal([]byte(in.Identify), &id) != nil || id.Hello.GetFixtureSlot() != c.want) {
			t.Errorf("%s: journal.Identify reads another slot than %q", c.name, c.want)
		}
	}
}
