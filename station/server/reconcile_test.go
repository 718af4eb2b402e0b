package server

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"testing"
	"time"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/fixture/estca"
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

// TestRetriedEnrollmentLeavesPossiblyIssued: the CA issues the IDevID and resets the connection
// instead of answering; the EST client sends the same CSR again and the CA, which does not
// deduplicate, issues a second certificate that the station records. The first is in the CA's
// ledger only: the station must hold a possibly-issued entry for its key until a search of the
// CA records it.
func TestRetriedEnrollmentLeavesPossiblyIssued(t *testing.T) {
	l := newTestLine(t, lineOptions{knobs: estca.Knobs{LoseAnswers: 1}})
	l.workOrder("WO-1", "SN-0001")
	sim := l.manufacture(nil, tpm.ECCP256)
	if v := l.runUnit(context.Background(), "SN-0001", sim); !v.Passed {
		t.Fatalf("verdict %+v", v)
	}
	st := l.srv.Store()
	ctx := context.Background()
	open, err := st.PossiblyIssuedEntries(ctx, "SN-0001", true)
	if err != nil {
		t.Fatal(err)
	}
	if len(open) != 1 || open[0].CA != "maker" || open[0].PublicKeySHA256 == "" {
		t.Fatalf("open entries %+v, want one for the maker CA naming the IDevID key", open)
	}
	unknown := 0
	for _, e := range l.ca.Ledger() {
		if _, err := st.CertificateBySHA256(ctx, e.SHA256); err == nil {
			continue
		}
		unknown++
		if e.Label != "idevid" {
			t.Errorf("certificate %s of %s is unknown to the store", e.SHA256[:16], e.Label)
		}
	}
	if unknown != 1 {
		t.Fatalf("%d certificates unknown to the store, want the one whose answer was lost", unknown)
	}
	roots := x509.NewCertPool()
	roots.AddCert(l.pki.MakerRoot.Cert)
	rep, err := reconcile.Search(ctx, st, "maker", &reconcile.HTTPSearcher{
		URL: l.ca.URL() + "/.well-known/est/idevid/search", Roots: roots,
		HeaderName: "Secret-Value", HeaderValue: headerSecret}, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Closed != 1 || rep.Open != 0 {
		t.Errorf("report %+v, want the entry closed", rep)
	}
	l.issuedAllKnown(st)
}
