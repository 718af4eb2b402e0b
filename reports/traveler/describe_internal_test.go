package traveler

import (
	"context"
	"crypto/x509"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/store"
)

// TestDescribeOnce checks that a traveler's certificates, described from the parse (and the
// spelled issuer) that read their issuer, are what describing each DER afresh gives.
func TestDescribeOnce(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "st-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	w := travelertest.WriteUnit(t, st, travelertest.Unit{Serial: "SN-1", WorkOrder: "WO-1", Profile: "default"})
	rec, err := Build(context.Background(), st, "SN-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		got *Certificate
		der []byte
	}{{rec.IDevID, w.IDevID}, {rec.LDevID, w.LDevID}} {
		want, err := describe(c.der)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(c.got, want) {
			t.Errorf("traveler's certificate %+v, described afresh %+v", c.got, want)
		}
		cert, err := x509.ParseCertificate(c.der)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := describeParsed(c.der, cert, ""); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("described from its parse %+v (%v), afresh %+v", got, err, want)
		}
		if got, err := describeParsed(c.der, cert, cert.Issuer.String()); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("described from its parse and issuer %+v (%v), afresh %+v", got, err, want)
		}
	}
}
