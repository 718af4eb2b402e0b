package server

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/devid-station/devid/device-agent/agent"
	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/station/journal"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// certCrashJournal kills the station around the first recording of a role's certificate:
// before it (the CA issued, the answer never reached the store) or right after it (recorded,
// but the enrollment's result never saved).
type certCrashJournal struct {
	*boundaryJournal
	role  store.Role
	after bool
	once  sync.Once
}

func (j *certCrashJournal) RecordCertificate(ctx context.Context, serial string, role store.Role, der []byte, chain ...[]byte) (store.CertRecord, error) {
	if j.down.Load() {
		return store.CertRecord{}, errStationDown
	}
	crash := false
	if role == j.role {
		j.once.Do(func() { crash = true })
	}
	if crash && !j.after {
		j.at()
	}
	rec, err := j.boundaryJournal.RecordCertificate(ctx, serial, role, der, chain...)
	if crash && err == nil {
		j.at()
	}
	return rec, err
}

// crashAroundRecord runs one unit on a line whose station dies around the recording of role's
// certificate, restarts the station, and returns the store once the unit passed.
func crashAroundRecord(t *testing.T, role store.Role, after, idempotent bool) *testLine {
	t.Helper()
	var l *testLine
	crashed := make(chan struct{})
	dead := make(chan struct{})
	t.Cleanup(func() { close(dead) })
	j := &certCrashJournal{boundaryJournal: &boundaryJournal{}, role: role, after: after}
	j.at = func() {
		j.down.Store(true)
		l.stop(true)
		close(crashed)
		<-dead // the process died: this goroutine never goes on
	}
	l = newTestLine(t, lineOptions{idempotentCSR: idempotent,
		wrap: func(inner workflow.Journal) workflow.Journal { j.Journal = inner; return j }})
	l.workOrder("WO-1", "SN-0001")
	sim := l.manufacture(nil, tpm.ECCP256)
	verdict := make(chan agent.Verdict, 1)
	go func() { verdict <- l.runUnit(context.Background(), "SN-0001", sim) }()
	select {
	case <-crashed:
	case v := <-verdict:
		t.Fatalf("unit finished (%+v) before the crash", v)
	case <-time.After(time.Minute):
		t.Fatal("no crash")
	}
	l.start(nil)
	select {
	case v := <-verdict:
		if !v.Passed {
			t.Fatalf("verdict: %+v", v)
		}
	case <-time.After(time.Minute):
		t.Fatal("the unit did not complete after the restart")
	}
	if u := l.unit("SN-0001"); u.Status != store.StatusDone {
		t.Fatalf("unit %+v", u)
	}
	return l
}

// TestResumeUsesRecordedCertificate kills the station after a certificate was recorded but
// before its enrollment's result was saved, against CAs that issue a new certificate for every
// request: resume uses the recorded certificate and asks for no second one.
func TestResumeUsesRecordedCertificate(t *testing.T) {
	for _, role := range []store.Role{store.RoleIDevID, store.RoleLDevID} {
		t.Run(string(role), func(t *testing.T) {
			l := crashAroundRecord(t, role, true, false)
			if n := len(l.ca.Ledger()); n != 2 {
				t.Errorf("the CAs issued %d certificates, want 2", n)
			}
			l.issuedAllKnown(l.srv.Store())
			for _, c := range l.unit("SN-0001").Certificates {
				if c.Current() != store.CertActive {
					t.Errorf("certificate %s is %s (%s), want every one active", c.SHA256[:16], c.Current(), c.Reason)
				}
			}
		})
	}
}

// TestRetryAfterLostAnswerReusesCSR kills the station after the CA issued a certificate but
// before the store recorded it: the retry on resume sends the same CSR (both intents name it),
// so a CA that deduplicates CSRs answers with the same certificate.
func TestRetryAfterLostAnswerReusesCSR(t *testing.T) {
	l := crashAroundRecord(t, store.RoleLDevID, false, true)
	if n := len(l.ca.Ledger()); n != 2 {
		t.Errorf("the CAs issued %d certificates, want 2", n)
	}
	l.issuedAllKnown(l.srv.Store())
	recs, err := l.srv.Store().StepRecords(context.Background(), "SN-0001")
	if err != nil {
		t.Fatal(err)
	}
	var csrs []string
	for _, r := range recs {
		if r.Step == workflow.StepLDevIDEnroll {
			var in journal.Intent
			if err := json.Unmarshal(r.Intent, &in); err != nil {
				t.Fatal(err)
			}
			csrs = append(csrs, in.CSRSHA256)
		}
	}
	if len(csrs) != 2 || csrs[0] != csrs[1] || csrs[0] == "" {
		t.Errorf("ldevid_enroll intents name CSRs %q, want the same one twice", csrs)
	}
}

// TestLostAnswerLeavesPossiblyIssued kills the station after the CA issued a certificate but
// before the store recorded it, against CAs that do not deduplicate: the retry gets a second
// certificate, and the first one, unknown to the store, is covered by an open possibly-issued
// entry naming its key, CA and CSR.
func TestLostAnswerLeavesPossiblyIssued(t *testing.T) {
	l := crashAroundRecord(t, store.RoleLDevID, false, false)
	st := l.srv.Store()
	open, err := st.PossiblyIssuedEntries(context.Background(), "SN-0001", true)
	if err != nil {
		t.Fatal(err)
	}
	if len(open) != 1 || open[0].CA != "customer" || open[0].Role != store.RoleLDevID || open[0].From.After(open[0].To) {
		t.Fatalf("open possibly-issued entries %+v, want one of the customer CA's LDevID", open)
	}
	unknown := 0
	for _, e := range l.ca.Ledger() {
		if _, err := st.CertificateBySHA256(context.Background(), e.SHA256); err == nil {
			continue
		}
		unknown++
		c, err := x509.ParseCertificate(e.DER)
		if err != nil {
			t.Fatal(err)
		}
		if workflow.PublicKeySHA256(c.PublicKey) != open[0].PublicKeySHA256 {
			t.Errorf("certificate %s unknown to the store matches no open entry", e.SHA256[:16])
		}
	}
	if unknown != 1 {
		t.Errorf("%d certificates unknown to the store, want 1 (the lost answer)", unknown)
	}
}
