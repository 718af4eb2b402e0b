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

// TestJSONIndented holds a traveler's JSON to json.MarshalIndent's.
func TestJSONIndented(t *testing.T) {
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
