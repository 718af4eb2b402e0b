package traveler

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/store"
)

// indentSamples are compact JSON values of every shape: nested, empty, strings with escapes,
// quotes, brackets and commas inside.
var indentSamples = []string{
	`{}`, `[]`, `null`, `"x"`, `1.5e3`, `{"a":[]}`, `{"a":{}}`, `[[],[{}],{"b":[1,2,{"c":null}]}]`,
	`{"s":"a,b:c{d}[e]","t":"q\"uo\\\"te\\","u":"\u003c\u2028\n"}`, `["\\",",","{","}","[","]",":"]`,
	`{"a":true,"b":false,"c":-0.5,"d":{"e":{"f":{"g":[]}}}}`, `""`, `[""]`, `{"":""}`,
}

// TestIndentCompact holds indentCompact to json.Indent, and a traveler's JSON to
// json.MarshalIndent's.
func TestIndentCompact(t *testing.T) {
	for _, s := range indentSamples {
		checkIndent(t, []byte(s))
	}
	st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "st-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	travelertest.WriteUnit(t, st, travelertest.Unit{Serial: "SN-1", WorkOrder: "WO-1", Profile: "default"})
	travelertest.WriteUnit(t, st, travelertest.Unit{Serial: "SN-2", WorkOrder: "WO-1", Profile: "default", FailAt: "ldevid_enroll", FailCode: "E_CA"})
	for _, serial := range []string{"SN-1", "SN-2"} {
		rec, err := Build(context.Background(), st, serial)
		if err != nil {
			t.Fatal(err)
		}
		rec.ErrorMessage = `a "quoted" <message>, with {braces} and [brackets]: \ done`
		got, err := rec.JSON()
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.MarshalIndent(rec, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, append(want, '\n')) {
			t.Errorf("%s: JSON differs from json.MarshalIndent's:\n%s\nwant\n%s", serial, got, want)
		}
	}
}

// FuzzIndentCompact: for any compact JSON (what json.Marshal writes), indentCompact writes what
// json.Indent writes.
func FuzzIndentCompact(f *testing.F) {
	for _, s := range indentSamples {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) {
			return
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, data); err != nil || !bytes.Equal(compact.Bytes(), data) {
			return
		}
		checkIndent(t, data)
	})
}

func checkIndent(t *testing.T, src []byte) {
	t.Helper()
	var want bytes.Buffer
	if err := json.Indent(&want, src, "", "  "); err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	if got := indentCompact([]byte("prefix"), src, "  "); !bytes.Equal(got, append([]byte("prefix"), want.Bytes()...)) {
		t.Fatalf("%s: indented\n%s\nwant\n%s", src, got[len("prefix"):], want.Bytes())
	}
}
