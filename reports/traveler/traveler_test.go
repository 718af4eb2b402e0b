package traveler_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"maps"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/reports/traveler"
	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/journal"
	"github.com/devid-station/devid/station/store"
)

func openStore(t *testing.T, clock store.Clock) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "st-test", Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func hexSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestBuildDoneUnit(t *testing.T) {
	start := time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC)
	clock := travelertest.NewClock(start)
	st := openStore(t, clock)
	w := travelertest.WriteUnit(t, st, travelertest.Unit{Serial: "SN-0001", WorkOrder: "WO-1", Profile: "default",
		Slot: "slot-3", Clock: clock, StepTime: time.Second})

	rec, err := traveler.Build(context.Background(), st, "SN-0001")
	if err != nil {
		t.Fatal(err)
	}
	// Round trip through the published JSON, as a reader of travelers/<serial>.json sees it.
	b, err := rec.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var got traveler.Record
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("traveler JSON does not decode: %v\n%s", err, b)
	}

	checks := []struct {
		name      string
		got, want any
	}{
		{"schema", got.Schema, traveler.Schema},
		{"serial", got.Serial, "SN-0001"},
		{"work order", got.WorkOrder, "WO-1"},
		{"profile", got.Profile, "default"},
		{"station", got.StationID, "st-test"},
		{"result", got.Result, "done"},
		{"error code", got.ErrorCode, ""},
		{"attempts", got.Attempts, uint64(1)},
		{"steps", len(got.Steps), 15},
		{"first step", got.Steps[0].Name, "verify_ek"},
		{"last step", got.Steps[14].Name, "complete"},
		{"step duration ms", got.Steps[0].DurationMS, 1000.0},
		// 15 steps, each ending one second after it began.
		{"cycle time", got.CycleTimeSeconds, 15.0},
		{"started", got.StartedAt.Equal(start), true},
		{"tpm manufacturer", got.TPM.ManufacturerID, "IFX"},
		{"tpm manufacturer hex", got.TPM.Manufacturer, "0x49465800"},
		{"tpm firmware", got.TPM.FirmwareVersion, "7.85.4555.0"},
		{"tpm fixture slot", got.TPM.FixtureSlot, "slot-3"},
		{"ek algorithm", got.EK.Algorithm, "KEY_ALGORITHM_ECC_P256"},
		{"ek sha256", got.EK.SHA256, hexSHA(w.EKCert)},
		{"ek fingerprint", got.EK.Fingerprint, w.EKFingerprint},
		{"ek issuer", got.EK.Issuer, "CN=Test EK CA SN-0001,O=test"},
		{"idevid sha256", got.IDevID.SHA256, hexSHA(w.IDevID)},
		{"ldevid sha256", got.LDevID.SHA256, hexSHA(w.LDevID)},
		{"idevid subject", got.IDevID.Subject, "SERIALNUMBER=SN-0001,CN=SN-0001 IDevID"},
		{"ldevid issuer", got.LDevID.Issuer, "CN=Test DevID CA SN-0001,O=test"},
		{"certificates", len(got.Certificates), 2},
		{"verification", maps.Equal(got.Verification, w.Checks), true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	ek, _ := x509.ParseCertificate(w.EKCert)
	if got.EK.SerialNumber != ek.SerialNumber.Text(16) {
		t.Errorf("ek serial = %s, want %s", got.EK.SerialNumber, ek.SerialNumber.Text(16))
	}
	for name, c := range map[string]*traveler.Certificate{"idevid": got.IDevID, "ldevid": got.LDevID} {
		blk, _ := pem.Decode([]byte(c.PEM))
		if blk == nil {
			t.Fatalf("%s PEM does not decode", name)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatalf("%s PEM: %v", name, err)
		}
		if !c.NotBefore.Equal(cert.NotBefore) || !c.NotAfter.Equal(cert.NotAfter) || c.SerialNumber != cert.SerialNumber.Text(16) {
			t.Errorf("%s validity/serial = %v..%v %s, want %v..%v %s", name, c.NotBefore, c.NotAfter, c.SerialNumber,
				cert.NotBefore, cert.NotAfter, cert.SerialNumber.Text(16))
		}
	}
}

func TestBuildFailedUnit(t *testing.T) {
	clock := travelertest.NewClock(time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC))
	st := openStore(t, clock)
	travelertest.WriteUnit(t, st, travelertest.Unit{Serial: "SN-0002", WorkOrder: "WO-1", Profile: "default",
		FailAt: "idevid_enroll", FailCode: "CA_REJECTED", Clock: clock, StepTime: 2 * time.Second})

	rec, err := traveler.Build(context.Background(), st, "SN-0002")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Result != "failed" || rec.ErrorCode != "CA_REJECTED" {
		t.Errorf("result %s %s, want failed CA_REJECTED", rec.Result, rec.ErrorCode)
	}
	if rec.IDevID != nil || rec.LDevID != nil || rec.Verification != nil {
		t.Errorf("a unit that failed at enrollment has certificates or checks: %+v %+v %v", rec.IDevID, rec.LDevID, rec.Verification)
	}
	if rec.EK == nil || rec.TPM == nil {
		t.Fatal("EK and TPM missing for a unit whose EK verified")
	}
	last := rec.Steps[len(rec.Steps)-1]
	if last.Name != "idevid_enroll" || last.ErrorCode != "CA_REJECTED" {
		t.Errorf("last step %s %s, want idevid_enroll CA_REJECTED", last.Name, last.ErrorCode)
	}
	// verify_ek .. idevid_enroll: 6 steps of 2 s.
	if rec.EndedAt == nil || rec.CycleTimeSeconds != 12 {
		t.Errorf("cycle time %v (ended %v), want 12 s", rec.CycleTimeSeconds, rec.EndedAt)
	}
}

func TestBuildRunningUnit(t *testing.T) {
	st := openStore(t, nil)
	travelertest.WriteUnit(t, st, travelertest.Unit{Serial: "SN-0003", WorkOrder: "WO-1", Profile: "default", StopBefore: "verify"})
	rec, err := traveler.Build(context.Background(), st, "SN-0003")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Result != "running" || rec.EndedAt != nil || rec.CycleTimeSeconds != 0 {
		t.Errorf("running unit: result %s ended %v cycle %v", rec.Result, rec.EndedAt, rec.CycleTimeSeconds)
	}
	if rec.IDevID == nil || rec.LDevID == nil {
		t.Error("certificates recorded before verify are missing")
	}
}

func TestBuildUnknownUnit(t *testing.T) {
	st := openStore(t, nil)
	_, err := traveler.Build(context.Background(), st, "SN-404")
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("err = %v, want store.ErrNotFound", err)
	}
}

// legacyStore serves verify_ek intents the way stations wrote them before the identify report
// was protojson: encoding/json of the generated structs.
type legacyStore struct {
	*store.Store
	t *testing.T
}

func (s legacyStore) StepRecords(ctx context.Context, serial string) ([]store.StepRecord, error) {
	recs, err := s.Store.StepRecords(ctx, serial)
	for i, rec := range recs {
		if rec.Step != journal.StepVerifyEK {
			continue
		}
		var in journal.Intent
		var id journal.Identify
		if err := json.Unmarshal(rec.Intent, &in); err != nil {
			s.t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(in.Identify), &id); err != nil {
			s.t.Fatal(err)
		}
		old, err := json.Marshal(struct {
			Info  *agentv1.InfoResult
			EKs   []*agentv1.EndorsementKey
			Chain [][]byte
			Hello *agentv1.Hello
		}{id.Info, id.EKs, id.Chain, id.Hello})
		if err != nil {
			s.t.Fatal(err)
		}
		recs[i].Intent, err = json.Marshal(map[string]string{"step": rec.Step, "identify": string(old)})
		if err != nil {
			s.t.Fatal(err)
		}
	}
	return recs, err
}

// A store written before the identify report was protojson still gives the same traveler.
func TestBuildLegacyIdentify(t *testing.T) {
	st := openStore(t, nil)
	travelertest.WriteUnit(t, st, travelertest.Unit{Serial: "SN-0001", WorkOrder: "WO-1", Profile: "default", Slot: "slot-3"})
	rec, err := traveler.Build(context.Background(), st, "SN-0001")
	if err != nil {
		t.Fatal(err)
	}
	old, err := traveler.Build(context.Background(), legacyStore{st, t}, "SN-0001")
	if err != nil {
		t.Fatal(err)
	}
	if rec.TPM == nil || rec.TPM.FixtureSlot != "slot-3" || rec.TPM.VendorString != "SLB9670" || rec.EK == nil || rec.EK.SerialNumber == "" {
		t.Fatalf("traveler TPM %+v, EK %+v", rec.TPM, rec.EK)
	}
	if !reflect.DeepEqual(old.TPM, rec.TPM) || !reflect.DeepEqual(old.EK, rec.EK) {
		t.Errorf("from the legacy intent: TPM %+v, EK %+v; want %+v, %+v", old.TPM, old.EK, rec.TPM, rec.EK)
	}
}

// TestBuildActions: the traveler lists the events API callers caused, oldest first, with
// their principal, message and data, and none of the station's.
func TestBuildActions(t *testing.T) {
	clock := travelertest.NewClock(time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC))
	st := openStore(t, clock)
	ctx := context.Background()
	travelertest.WriteUnit(t, st, travelertest.Unit{Serial: "SN-0003", WorkOrder: "WO-1", Profile: "default",
		FailAt: "idevid_enroll", FailCode: "CA_REJECTED", Clock: clock, StepTime: time.Second})
	if _, err := st.AppendEvent(ctx, "SN-0003", "note", "by the station", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AppendEvent(store.WithPrincipal(ctx, "qa:ann <lab>"), "SN-0003", "hold.decided", "kept on hold",
		map[string]string{"decision": "hold"}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	if _, err := st.AppendEvent(store.WithPrincipal(ctx, "mes:bob"), "SN-0003", "note", "", nil); err != nil {
		t.Fatal(err)
	}
	rec, err := traveler.Build(ctx, st, "SN-0003")
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Actions) != 2 {
		t.Fatalf("actions = %+v, want 2", rec.Actions)
	}
	a, b := rec.Actions[0], rec.Actions[1]
	if a.Principal != "qa:ann <lab>" || a.Kind != "hold.decided" || a.Message != "kept on hold" || a.Data["decision"] != "hold" ||
		b.Principal != "mes:bob" || b.Kind != "note" || b.Data != nil || !b.Time.Equal(a.Time.Add(time.Minute)) {
		t.Errorf("actions = %+v", rec.Actions)
	}
}
