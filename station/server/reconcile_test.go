package server

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"testing"
	"time"

	"github.com/devid-station/devid/station/reconcile"
	"github.com/devid-station/devid/station/store"
)

// TestReconcileLostAnswer leaves a certificate unknown to the store (the station died after
// the CA issued it, against CAs that do not deduplicate), then reconciles: by asking the CA's
// search, or by importing its issuance log. Either way every certificate in the CA's ledger
// ends recorded, the unknown one as a duplicate or superseded, and the entry closes.
func TestReconcileLostAnswer(t *testing.T) {
	for _, how := range []string{"search", "import"} {
		t.Run(how, func(t *testing.T) {
			l := crashAroundRecord(t, store.RoleLDevID, false, false)
			st := l.srv.Store()
			ctx := context.Background()
			var rep reconcile.Report
			var err error
			switch how {
			case "search":
				roots := x509.NewCertPool()
				roots.AddCert(l.pki.MakerRoot.Cert)
				rep, err = reconcile.Search(ctx, st, "customer", &reconcile.HTTPSearcher{
					URL: l.ca.URL() + "/.well-known/est/ldevid/search", Roots: roots,
					HeaderName: "Secret-Value", HeaderValue: headerSecret}, time.Now())
			case "import":
				var buf bytes.Buffer
				for _, e := range l.ca.Ledger() {
					line, err := json.Marshal(e)
					if err != nil {
						t.Fatal(err)
					}
					buf.Write(append(line, '\n'))
				}
				log, perr := reconcile.ParseLog(&buf)
				if perr != nil {
					t.Fatal(perr)
				}
				rep, err = reconcile.Import(ctx, st, "customer", log)
			}
			if err != nil {
				t.Fatal(err)
			}
			if rep.Closed != 1 || rep.Recorded != 1 || rep.Open != 0 {
				t.Errorf("report %+v, want one entry closed with one certificate recorded", rep)
			}
			l.issuedAllKnown(st)
			if open, err := st.PossiblyIssuedEntries(ctx, "", true); err != nil || len(open) != 0 {
				t.Errorf("open entries after reconciliation: %+v, %v", open, err)
			}
			active := 0
			for _, c := range l.unit("SN-0001").Certificates {
				switch c.Current() {
				case store.CertActive:
					active++
				case store.CertDuplicate, store.CertSuperseded:
				default:
					t.Errorf("certificate %s is %s", c.SHA256[:16], c.Current())
				}
			}
			if active != 2 {
				t.Errorf("%d active certificates, want the IDevID and the LDevID the unit holds", active)
			}
		})
	}
}
