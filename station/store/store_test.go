package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/devid-station/devid/fixture/devpki"
)

func TestOpen(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string) // runs on a fresh path
		opts    Options
		wantErr error
	}{
		{name: "new file needs a station id", opts: Options{}, wantErr: ErrInvalidArgument},
		{name: "new file", opts: Options{StationID: "st-a"}},
		{
			name:    "other station",
			prepare: func(t *testing.T, path string) { closeNew(t, path, "st-a") },
			opts:    Options{StationID: "st-b"},
			wantErr: ErrStationMismatch,
		},
		{
			name:    "reopen without station id uses the stored one",
			prepare: func(t *testing.T, path string) { closeNew(t, path, "st-a") },
			opts:    Options{},
		},
		{
			name: "newer schema refused",
			prepare: func(t *testing.T, path string) {
				closeNew(t, path, "st-a")
				editBolt(t, path, func(tx *bolt.Tx) error {
					return tx.Bucket(bMeta).Put(kSchemaVersion, u64key(SchemaVersion+1))
				})
			},
			opts:    Options{StationID: "st-a"},
			wantErr: ErrSchemaTooNew,
		},
		{
			name: "head in meta behind the log",
			prepare: func(t *testing.T, path string) {
				closeNew(t, path, "st-a")
				editBolt(t, path, func(tx *bolt.Tx) error {
					return tx.Bucket(bMeta).Put(kAuditHead, encodeHead(ChainHead{Hash: make([]byte, 32)}))
				})
			},
			opts:    Options{StationID: "st-a"},
			wantErr: ErrChainBroken,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "station.db")
			if tt.prepare != nil {
				tt.prepare(t, path)
			}
			s, err := Open(path, tt.opts)
			wantErr(t, "Open", err, tt.wantErr)
			if err != nil {
				if tt.wantErr == nil {
					t.Fatal(err)
				}
				return
			}
			defer s.Close()
			if tt.wantErr != nil {
				t.Fatalf("Open succeeded, want %v", tt.wantErr)
			}
			if s.StationID() != "st-a" {
				t.Errorf("StationID = %q, want st-a", s.StationID())
			}
			if _, err := s.CreatedAt(ctx); err != nil {
				t.Errorf("CreatedAt: %v", err)
			}
			if _, err := s.VerifyChain(ctx); err != nil {
				t.Errorf("VerifyChain: %v", err)
			}
		})
	}
}

// closeNew creates a store file for station and closes it.
func closeNew(t *testing.T, path, station string) {
	t.Helper()
	s, err := Open(path, Options{StationID: station})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// editBolt changes a closed store file directly, as an attacker or a newer
// station would.
func editBolt(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestUnitLifecycleAndCrashResume(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	const serial = "SN0001"

	if _, err := s.BeginStep(ctx, serial, "identify", nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("BeginStep on unknown unit: %v, want ErrNotFound", err)
	}
	mustUnit(t, s, serial, StatusPending)
	ref1, err := s.BeginStep(ctx, serial, "identify", []byte(`{"op":"read ek"}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EndStep(ctx, ref1, []byte(`{"ek":"ok"}`), ""); err != nil {
		t.Fatal(err)
	}
	refEnroll, err := s.BeginStep(ctx, serial, "enroll-idevid", []byte("csr-1"))
	if err != nil {
		t.Fatal(err)
	}

	// Crash: the station stops between the intent and the result.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path)

	open, err := s.OpenIntents(ctx, serial)
	if err != nil {
		t.Fatal(err)
	}
	if len(open) != 1 || open[0].StepRef != refEnroll || string(open[0].Intent) != "csr-1" {
		t.Fatalf("OpenIntents after reopen = %+v, want the enroll-idevid intent %+v", open, refEnroll)
	}
	u, err := s.Unit(ctx, serial)
	if err != nil {
		t.Fatal(err)
	}
	if u.Status != StatusRunning || u.CurrentStep != "enroll-idevid" || u.Attempts != 2 {
		t.Fatalf("unit after reopen = %+v", u)
	}

	// The step cannot begin again before its intent is resolved.
	if _, err := s.BeginStep(ctx, serial, "enroll-idevid", []byte("csr-2")); !errors.Is(err, ErrIntentOpen) {
		t.Fatalf("BeginStep with open intent: %v, want ErrIntentOpen", err)
	}
	if a := lastAudit(t, s); a.Result != ResultError || a.ErrorCode != "intent_open" || a.Serial != serial {
		t.Fatalf("refusal audit = %+v", a)
	}

	endCases := []struct {
		name    string
		ref     StepRef
		result  string
		code    string
		noWrite bool // no audit record may be written
		wantErr error
	}{
		{name: "resolve the lost answer", ref: refEnroll, result: "", code: "answer_lost"},
		{name: "same result again is a no-op", ref: refEnroll, result: "", code: "answer_lost", noWrite: true},
		{name: "other result refused", ref: refEnroll, result: "cert", code: "", wantErr: ErrStepEnded},
		{name: "unknown attempt", ref: StepRef{Serial: serial, Step: "enroll-idevid", Attempt: 9}, wantErr: ErrNotFound},
		{name: "unknown step", ref: StepRef{Serial: serial, Step: "nope", Attempt: 1}, wantErr: ErrNotFound},
		{name: "bad step name", ref: StepRef{Serial: serial, Step: "Bad Step", Attempt: 1}, wantErr: ErrInvalidArgument},
	}
	for _, tt := range endCases {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := s.ChainHead(ctx)
			err := s.EndStep(ctx, tt.ref, []byte(tt.result), tt.code)
			wantErr(t, "EndStep", err, tt.wantErr)
			after, _ := s.ChainHead(ctx)
			if tt.noWrite && after.Seq != before.Seq {
				t.Errorf("no-op EndStep wrote %d audit records", after.Seq-before.Seq)
			}
		})
	}

	ref2, err := s.BeginStep(ctx, serial, "enroll-idevid", []byte("csr-2"))
	if err != nil {
		t.Fatal(err)
	}
	if ref2.Attempt != 2 {
		t.Fatalf("retry attempt = %d, want 2", ref2.Attempt)
	}
	if err := s.EndStep(ctx, ref2, []byte("cert"), ""); err != nil {
		t.Fatal(err)
	}
	if open, _ := s.OpenIntents(ctx, serial); len(open) != 0 {
		t.Fatalf("OpenIntents = %+v, want none", open)
	}
	recs, err := s.StepRecords(ctx, serial)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.Step+"/"+string(rune('0'+r.Attempt))+"/"+r.ErrorCode)
	}
	want := []string{"identify/1/", "enroll-idevid/1/answer_lost", "enroll-idevid/2/"}
	if len(got) != len(want) {
		t.Fatalf("step records = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("step records = %v, want %v", got, want)
		}
	}
	u, _ = s.Unit(ctx, serial)
	if sum := u.Steps["enroll-idevid"]; sum.Attempts != 2 || sum.ErrorCode != "" || sum.EndedAt.IsZero() {
		t.Fatalf("enroll summary = %+v", sum)
	}

	// Done units take no more steps.
	mustUnit(t, s, serial, StatusDone)
	if _, err := s.BeginStep(ctx, serial, "verify", nil); !errors.Is(err, ErrUnitClosed) {
		t.Fatalf("BeginStep on done unit: %v, want ErrUnitClosed", err)
	}

	evs, err := s.UnitEvents(ctx, serial, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	wantTypes := []string{EventUnitCreated, EventUnitUpdated, EventStepBegun, EventStepEnded, EventStepBegun,
		EventStepEnded, EventStepBegun, EventStepEnded, EventUnitUpdated}
	if len(evs) != len(wantTypes) {
		t.Fatalf("got %d events, want %d: %+v", len(evs), len(wantTypes), evs)
	}
	for i, ev := range evs {
		if ev.Type != wantTypes[i] || ev.UnitSeq != uint64(i+1) {
			t.Errorf("event %d = %s/%d, want %s/%d", i, ev.Type, ev.UnitSeq, wantTypes[i], i+1)
		}
	}
	if _, err := s.VerifyChain(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestUpdateUnitKeepsManagedFields(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	mustUnit(t, s, "SN1", StatusPending)
	fp := EKFingerprint([]byte("ek"))
	if err := s.BindEK(ctx, fp, "SN1"); err != nil {
		t.Fatal(err)
	}
	u, err := s.UpdateUnit(ctx, "SN1", func(u *UnitState) error {
		u.Serial, u.EKFingerprint, u.Attempts = "other", "", 99
		u.Keys = map[string]KeyRef{"idevid": {Handle: 0x81020000, Name: []byte{0, 0xb}}}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if u.Serial != "SN1" || u.EKFingerprint != fp || u.Attempts != 0 || u.Keys["idevid"].Handle != 0x81020000 {
		t.Fatalf("unit = %+v", u)
	}
	if _, err := s.UpdateUnit(ctx, "SN1", func(u *UnitState) error { u.Status = "bogus"; return nil }); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bogus status: %v", err)
	}
	if _, err := s.UpdateUnit(ctx, "bad serial", func(*UnitState) error { return nil }); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad serial: %v", err)
	}
}

func TestBindEK(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	mustUnit(t, s, "SN-A", StatusPending)
	mustUnit(t, s, "SN-B", StatusPending)
	fpA, fpB := EKFingerprint([]byte("ek-a")), EKFingerprint([]byte("ek-b"))
	tests := []struct {
		name       string
		fp, serial string
		wantErr    error
		wantWrite  bool   // a new audit record is expected
		wantBound  string // serial reported by EKBoundError
		wantAudRes string
	}{
		{name: "bind", fp: fpA, serial: "SN-A", wantWrite: true, wantAudRes: ResultOK},
		{name: "same pair is idempotent", fp: fpA, serial: "SN-A"},
		{name: "EK bound elsewhere", fp: fpA, serial: "SN-B", wantErr: ErrEKBoundElsewhere, wantWrite: true, wantBound: "SN-A", wantAudRes: ResultError},
		{name: "unit has another EK", fp: fpB, serial: "SN-A", wantErr: ErrEKMismatch, wantWrite: true, wantAudRes: ResultError},
		{name: "second unit binds its own EK", fp: fpB, serial: "SN-B", wantWrite: true, wantAudRes: ResultOK},
		{name: "malformed fingerprint", fp: "ABC", serial: "SN-A", wantErr: ErrInvalidArgument},
		{name: "unknown unit", fp: EKFingerprint([]byte("ek-c")), serial: "SN-C", wantErr: ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := s.ChainHead(ctx)
			err := s.BindEK(ctx, tt.fp, tt.serial)
			wantErr(t, "BindEK", err, tt.wantErr)
			if tt.wantBound != "" {
				var be *EKBoundError
				if !errors.As(err, &be) || be.Serial != tt.wantBound {
					t.Fatalf("error %v, want EKBoundError naming %s", err, tt.wantBound)
				}
			}
			after, _ := s.ChainHead(ctx)
			if wrote := after.Seq > before.Seq; wrote != tt.wantWrite {
				t.Fatalf("audit written = %v, want %v", wrote, tt.wantWrite)
			}
			if tt.wantWrite {
				if a := lastAudit(t, s); a.Result != tt.wantAudRes || a.Action != EventEKBound {
					t.Fatalf("audit = %+v, want result %s", a, tt.wantAudRes)
				}
			}
		})
	}
	for fp, want := range map[string]string{fpA: "SN-A", fpB: "SN-B"} {
		if got, err := s.UnitByEK(ctx, fp); err != nil || got != want {
			t.Errorf("UnitByEK(%s) = %q, %v; want %s", fp, got, err, want)
		}
	}
	if u, _ := s.Unit(ctx, "SN-A"); u.EKFingerprint != fpA {
		t.Errorf("SN-A EK = %s", u.EKFingerprint)
	}
}

func TestCertificateIndex(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	mustUnit(t, s, "SN-A", StatusRunning)
	mustUnit(t, s, "SN-B", StatusRunning)
	pki, err := devpki.New(devpki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ca := pki.IDevIDIssuing
	first := issueLeaf(t, ca, 1001, "SN-A")
	retried := issueLeaf(t, ca, 1002, "SN-A")
	sameSerial := issueLeaf(t, ca, 1001, "SN-B")
	forB := issueLeaf(t, ca, 2001, "SN-B")

	tests := []struct {
		name          string
		serial        string
		role          Role
		der           []byte
		wantErr       error
		wantDuplicate bool
	}{
		{name: "first IDevID", serial: "SN-A", role: RoleIDevID, der: first},
		{name: "same DER again is idempotent", serial: "SN-A", role: RoleIDevID, der: first},
		{name: "retried enrollment is recorded and flagged", serial: "SN-A", role: RoleIDevID, der: retried, wantDuplicate: true},
		{name: "same DER for another unit", serial: "SN-B", role: RoleIDevID, der: first, wantErr: ErrCertBoundElsewhere},
		{name: "same DER for another role", serial: "SN-A", role: RoleLDevID, der: first, wantErr: ErrCertBoundElsewhere},
		{name: "issuer and serial reused", serial: "SN-B", role: RoleIDevID, der: sameSerial, wantErr: ErrCertSerialReused},
		{name: "other unit", serial: "SN-B", role: RoleLDevID, der: forB},
		{name: "not a certificate", serial: "SN-B", role: RoleIDevID, der: []byte("junk"), wantErr: ErrInvalidArgument},
		{name: "bad role", serial: "SN-B", role: "EK", der: forB, wantErr: ErrInvalidArgument},
		{name: "unknown unit", serial: "SN-C", role: RoleIDevID, der: issueLeaf(t, ca, 3001, "SN-C"), wantErr: ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, err := s.RecordCertificate(ctx, tt.serial, tt.role, tt.der)
			wantErr(t, "RecordCertificate", err, tt.wantErr)
			if err != nil {
				return
			}
			if rec.Duplicate != tt.wantDuplicate || rec.Serial != tt.serial || rec.Role != tt.role {
				t.Fatalf("record = %+v, want duplicate=%v", rec, tt.wantDuplicate)
			}
			bySHA, err := s.CertificateBySHA256(ctx, EKFingerprint(tt.der))
			if err != nil || string(bySHA.DER) != string(tt.der) {
				t.Fatalf("CertificateBySHA256: %v", err)
			}
			bySerial, err := s.CertificateByIssuerSerial(ctx, ca.Cert.RawSubject, mustParse(t, tt.der).SerialNumber)
			if err != nil || bySerial.SHA256 != bySHA.SHA256 || bySerial.Serial != tt.serial {
				t.Fatalf("CertificateByIssuerSerial = %+v, %v", bySerial, err)
			}
		})
	}
	u, err := s.Unit(ctx, "SN-A")
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Certificates) != 2 || u.Certificates[0].Duplicate || !u.Certificates[1].Duplicate {
		t.Fatalf("SN-A certificates = %+v, want the first plain and the retry flagged", u.Certificates)
	}
	if _, err := s.CertificateBySHA256(ctx, EKFingerprint([]byte("none"))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown certificate: %v", err)
	}
}

func TestWorkOrdersAndAuthorize(t *testing.T) {
	ctx := WithPrincipal(context.Background(), "mes@plant")
	s, _ := openTemp(t)
	orders := []WorkOrder{
		{ID: "WO-LIST", Profile: "default", Serials: []string{"SN-1", "SN-2"}},
		{ID: "WO-RANGE", Profile: "default", Range: &SerialRange{Prefix: "DV", From: 100, To: 199, Width: 6}},
		{ID: "WO-NOPAD", Profile: "azure", Range: &SerialRange{Prefix: "AZ-", From: 5, To: 50}},
		{ID: "WO-CLOSED", Profile: "default", Serials: []string{"SN-9"}},
	}
	for _, wo := range orders {
		got, err := s.CreateWorkOrder(ctx, wo)
		if err != nil {
			t.Fatalf("CreateWorkOrder(%s): %v", wo.ID, err)
		}
		if got.Status != WorkOrderOpen || got.CreatedBy != "mes@plant" || got.CreatedAt.IsZero() {
			t.Fatalf("created %+v", got)
		}
	}
	if wo, err := s.CloseWorkOrder(ctx, "WO-CLOSED", ""); err != nil || wo.Status != WorkOrderClosed || wo.ClosedBy != "mes@plant" {
		t.Fatalf("CloseWorkOrder = %+v, %v", wo, err)
	}

	tests := []struct {
		name, serial, profile, wantWO string
	}{
		{name: "in list", serial: "SN-2", profile: "default", wantWO: "WO-LIST"},
		{name: "list, other profile", serial: "SN-2", profile: "azure"},
		{name: "not in list", serial: "SN-3", profile: "default"},
		{name: "range low end", serial: "DV000100", profile: "default", wantWO: "WO-RANGE"},
		{name: "range high end", serial: "DV000199", profile: "default", wantWO: "WO-RANGE"},
		{name: "range above", serial: "DV000200", profile: "default"},
		{name: "range wrong width", serial: "DV00150", profile: "default"},
		{name: "range non-digit", serial: "DV00015x", profile: "default"},
		{name: "range wrong prefix", serial: "XV000150", profile: "default"},
		{name: "unpadded range", serial: "AZ-7", profile: "azure", wantWO: "WO-NOPAD"},
		{name: "unpadded range leading zero", serial: "AZ-07", profile: "azure"},
		{name: "closed order does not authorize", serial: "SN-9", profile: "default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wo, err := s.Authorize(ctx, tt.serial, tt.profile)
			if tt.wantWO == "" {
				wantErr(t, "Authorize", err, ErrNotAuthorized)
				return
			}
			if err != nil || wo.ID != tt.wantWO {
				t.Fatalf("Authorize = %s, %v; want %s", wo.ID, err, tt.wantWO)
			}
		})
	}

	createCases := []struct {
		name    string
		wo      WorkOrder
		wantErr error
	}{
		{name: "identical again is idempotent", wo: orders[0]},
		{name: "same id, other content", wo: WorkOrder{ID: "WO-LIST", Profile: "default", Serials: []string{"SN-1"}}, wantErr: ErrWorkOrderExists},
		{name: "no id", wo: WorkOrder{Profile: "default", Serials: []string{"SN-1"}}, wantErr: ErrInvalidArgument},
		{name: "both list and range", wo: WorkOrder{ID: "X", Profile: "p", Serials: []string{"A"}, Range: &SerialRange{To: 1}}, wantErr: ErrInvalidArgument},
		{name: "neither", wo: WorkOrder{ID: "X", Profile: "p"}, wantErr: ErrInvalidArgument},
		{name: "inverted range", wo: WorkOrder{ID: "X", Profile: "p", Range: &SerialRange{From: 5, To: 1}}, wantErr: ErrInvalidArgument},
		{name: "bad serial", wo: WorkOrder{ID: "X", Profile: "p", Serials: []string{"has space"}}, wantErr: ErrInvalidArgument},
	}
	for _, tt := range createCases {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.CreateWorkOrder(ctx, tt.wo)
			wantErr(t, "CreateWorkOrder", err, tt.wantErr)
		})
	}
	all, err := s.WorkOrders(ctx)
	if err != nil || len(all) != len(orders) {
		t.Fatalf("WorkOrders = %d, %v; want %d", len(all), err, len(orders))
	}
	if _, err := s.CloseWorkOrder(ctx, "WO-NONE", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("closing unknown order: %v", err)
	}
}

func TestRework(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	if _, err := s.CreateWorkOrder(ctx, WorkOrder{ID: "WO-1", Profile: "default", Serials: []string{"SN-R"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AuthorizeRework(ctx, "SN-R", "qa-anna", "replaced TPM"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rework of unknown unit: %v", err)
	}
	if _, err := s.Authorize(ctx, "SN-R", "default"); err != nil {
		t.Fatalf("Authorize new unit: %v", err)
	}
	mustUnit(t, s, "SN-R", StatusDone)
	if _, err := s.Authorize(ctx, "SN-R", "default"); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("Authorize done unit: %v, want ErrNotAuthorized", err)
	}
	if _, err := s.UpdateUnit(ctx, "SN-R", func(u *UnitState) error { u.Status = StatusRunning; return nil }); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("reopening done unit without rework: %v", err)
	}
	if _, err := s.AuthorizeRework(ctx, "SN-R", "", "why"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("rework without by: %v", err)
	}
	if u, err := s.AuthorizeRework(ctx, "SN-R", "qa-anna", "replaced TPM"); err != nil || u.Rework == nil {
		t.Fatalf("AuthorizeRework = %+v, %v", u, err)
	}
	if _, err := s.Authorize(ctx, "SN-R", "default"); err != nil {
		t.Fatalf("Authorize after rework: %v", err)
	}
	u := mustUnit(t, s, "SN-R", StatusRunning)
	if u.Rework != nil || len(u.Reworks) != 1 || u.Reworks[0].By != "qa-anna" || u.Reworks[0].UsedAt.IsZero() {
		t.Fatalf("rework not consumed: %+v", u)
	}
	mustUnit(t, s, "SN-R", StatusDone)
	if _, err := s.Authorize(ctx, "SN-R", "default"); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("Authorize after rework used: %v, want ErrNotAuthorized", err)
	}
}

func TestOutboxPagination(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	mustUnit(t, s, "SN-O", StatusRunning) // unit.created + unit.updated
	for i := 0; i < 23; i++ {
		if _, err := s.AppendEvent(ctx, "SN-O", "agent.log", "line", map[string]string{"i": string(rune('a' + i))}); err != nil {
			t.Fatal(err)
		}
	}
	const total = 25
	tests := []struct {
		name      string
		limit     int
		wantPages int
	}{
		{name: "pages of 7", limit: 7, wantPages: 4},
		{name: "one page", limit: 100, wantPages: 1},
		{name: "pages of 1", limit: 1, wantPages: 25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var token uint64
			var got []Event
			pages := 0
			for {
				evs, next, err := s.OutboxAfter(ctx, token, tt.limit)
				if err != nil {
					t.Fatal(err)
				}
				if len(evs) == 0 {
					if next != token {
						t.Fatalf("empty page moved the token %d -> %d", token, next)
					}
					break
				}
				if len(evs) > tt.limit {
					t.Fatalf("page of %d > limit %d", len(evs), tt.limit)
				}
				pages++
				got = append(got, evs...)
				token = next
			}
			if len(got) != total || pages != tt.wantPages {
				t.Fatalf("got %d events in %d pages, want %d in %d", len(got), pages, total, tt.wantPages)
			}
			for i, ev := range got {
				if ev.Seq != uint64(i+1) {
					t.Fatalf("event %d has seq %d", i, ev.Seq)
				}
			}
		})
	}

	// A consumer resumes with its token after a station restart.
	evs, token, err := s.OutboxAfter(ctx, 0, 10)
	if err != nil || token != 10 || len(evs) != 10 {
		t.Fatalf("first page: %d events, token %d, %v", len(evs), token, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path)
	if _, err := s.AppendEvent(ctx, "SN-O", "agent.log", "after restart", nil); err != nil {
		t.Fatal(err)
	}
	evs, token, err = s.OutboxAfter(ctx, token, 100)
	if err != nil || len(evs) != total-10+1 || token != total+1 || evs[0].Seq != 11 || evs[len(evs)-1].Message != "after restart" {
		t.Fatalf("resumed page: %d events, token %d, %v", len(evs), token, err)
	}
}

func TestAdvance(t *testing.T) {
	ctx := context.Background()
	s := openAt(t, filepath.Join(t.TempDir(), "station.db"))
	if _, err := s.UpdateUnit(ctx, "SN1", func(*UnitState) error { return nil }); err != nil {
		t.Fatal(err)
	}
	a, err := s.BeginStep(ctx, "SN1", "step_a", []byte("intent a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Advance(ctx, a, []byte("result a"), "step_b", []byte("intent b"))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := s.StepRecords(ctx, "SN1")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || !recs[0].Ended || string(recs[0].Result) != "result a" || recs[1].Ended || recs[1].StepRef != b {
		t.Fatalf("records after Advance: %+v", recs)
	}
	u, err := s.Unit(ctx, "SN1")
	if err != nil || u.CurrentStep != "step_b" || u.Steps["step_a"].EndedAt.IsZero() {
		t.Fatalf("unit after Advance: %+v, %v", u, err)
	}
	// Ending b with another result than it already has is refused, and c is not begun.
	if err := s.EndStep(ctx, b, []byte("result b"), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Advance(ctx, b, []byte("other"), "step_c", nil); !errors.Is(err, ErrStepEnded) {
		t.Fatalf("Advance from a step ended otherwise: %v, want ErrStepEnded", err)
	}
	// An open intent of the next step refuses the begin, but the end is committed.
	c, err := s.BeginStep(ctx, "SN1", "step_c", nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.BeginStep(ctx, "SN1", "step_d", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Advance(ctx, d, []byte("result d"), "step_c", nil); !errors.Is(err, ErrIntentOpen) {
		t.Fatalf("Advance into a step with an open intent: %v, want ErrIntentOpen", err)
	}
	open, err := s.OpenIntents(ctx, "SN1")
	if err != nil || len(open) != 1 || open[0].StepRef != c {
		t.Fatalf("open intents %+v (%v), want only %v", open, err, c)
	}
	if u, err := s.Unit(ctx, "SN1"); err != nil || u.Steps["step_d"].EndedAt.IsZero() {
		t.Fatalf("unit after the refused begin: %+v, %v; want step_d's end in its summary", u, err)
	}
	if _, err := s.VerifyChain(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCertificateStatus marks certificates superseded and refused: they stay in the unit's
// history with their reason, are revocation candidates, and a new certificate of a role whose
// only other one is superseded is active, not a duplicate.
func TestCertificateStatus(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	mustUnit(t, s, "SN-A", StatusRunning)
	pki, err := devpki.New(devpki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	first, second := issueLeaf(t, pki.IDevIDIssuing, 1001, "SN-A"), issueLeaf(t, pki.IDevIDIssuing, 1002, "SN-A")
	if _, err := s.RecordCertificate(ctx, "SN-A", RoleIDevID, first); err != nil {
		t.Fatal(err)
	}
	sha := EKFingerprint(first)
	for _, tc := range []struct {
		name    string
		sha     string
		status  CertStatus
		reason  string
		wantErr error
	}{
		{"unknown certificate", EKFingerprint([]byte("x")), CertSuperseded, "r", ErrNotFound},
		{"unknown status", sha, "revoked", "r", ErrInvalidArgument},
		{"no reason", sha, CertSuperseded, "", ErrInvalidArgument},
		{"superseded", sha, CertSuperseded, "rework: the IDevID key is gone", nil},
	} {
		wantErr(t, tc.name, s.SetCertificateStatus(ctx, "SN-A", tc.sha, tc.status, tc.reason), tc.wantErr)
	}
	rec, err := s.RecordCertificate(ctx, "SN-A", RoleIDevID, second)
	if err != nil || rec.Duplicate {
		t.Fatalf("new certificate after a superseded one: %+v, %v; want active, not a duplicate", rec, err)
	}
	u, err := s.Unit(ctx, "SN-A")
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Certificates) != 2 || u.Certificates[0].Current() != CertSuperseded || u.Certificates[0].Reason != "rework: the IDevID key is gone" ||
		!u.Certificates[0].RevocationCandidate() || u.Certificates[1].Current() != CertActive || u.Certificates[1].RevocationCandidate() {
		t.Fatalf("certificates %+v", u.Certificates)
	}
	recs, err := s.AuditAfter(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	audited := false
	for _, r := range recs {
		audited = audited || (r.Action == EventCertStatus && r.Details["sha256"] == sha && r.Details["status"] == string(CertSuperseded))
	}
	if !audited {
		t.Fatal("the status change is not audited")
	}
}

// checkUnitActions fails unless UnitActions returns the unit's events (UnitEvents) whose
// principal is neither empty nor the station.
func checkUnitActions(t *testing.T, s *Store, serial string) {
	t.Helper()
	ctx := context.Background()
	all, err := s.UnitEvents(ctx, serial, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var want []Event
	for _, ev := range all {
		if ev.Principal != "" && ev.Principal != PrincipalStation {
			want = append(want, ev)
		}
	}
	got, err := s.UnitActions(ctx, serial)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("UnitActions(%s) = %+v, %v; want %+v", serial, got, err, want)
	}
}

// TestUnitActions: the events API callers caused, in order, whatever their principal's
// spelling; the station's are left out.
func TestUnitActions(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	if _, err := s.UnitActions(ctx, "SN-none"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("UnitActions of an unknown unit: %v, want ErrNotFound", err)
	}
	mustUnit(t, s, "SN1", StatusRunning)
	checkUnitActions(t, s, "SN1")
	if got, err := s.UnitActions(ctx, "SN1"); err != nil || len(got) != 0 {
		t.Fatalf("UnitActions of a unit only the station wrote = %+v, %v", got, err)
	}
	for i, p := range []string{"mes:bob", "qa:<ann> \"é\"", PrincipalStation, "op:carol"} {
		if _, err := s.AppendEvent(WithPrincipal(ctx, p), "SN1", "note", fmt.Sprintf("note %d", i),
			map[string]string{"n": strconv.Itoa(i), "who": p}); err != nil {
			t.Fatal(err)
		}
		mustUnit(t, s, "SN1", StatusRunning)
	}
	checkUnitActions(t, s, "SN1")
	got, err := s.UnitActions(ctx, "SN1")
	if err != nil || len(got) != 3 || got[0].Principal != "mes:bob" || got[1].Principal != "qa:<ann> \"é\"" ||
		got[2].Principal != "op:carol" || got[2].Data["n"] != "3" {
		t.Fatalf("UnitActions = %+v, %v", got, err)
	}
}

// TestUnitLogOutboxEntryMissing: an event of a unit's log missing from the outbox (the first,
// one in the middle, the last, one replaced by a bucket) makes UnitEvents and UnitActions fail
// as corrupt, never skip it.
func TestUnitLogOutboxEntryMissing(t *testing.T) {
	ctx := context.Background()
	for _, which := range []string{"first", "middle", "last", "bucket"} {
		for _, read := range []string{"UnitEvents", "UnitActions"} {
			s, _ := openTemp(t)
			mustUnit(t, s, "SN1", StatusRunning)
			if _, err := s.AppendEvent(WithPrincipal(ctx, "mes:bob"), "SN1", "note", "", nil); err != nil {
				t.Fatal(err)
			}
			mustUnit(t, s, "SN1", StatusRunning)
			mustUnit(t, s, "SN2", StatusRunning) // an outbox entry after SN1's
			err := s.db.Update(func(tx *bolt.Tx) error {
				seqs := tx.Bucket(bUnitEvents).Get([]byte("SN1"))
				i := map[string]int{"first": 0, "middle": 1, "last": len(seqs)/8 - 1, "bucket": 2}[which]
				key := append([]byte(nil), seqs[i*8:i*8+8]...)
				if err := tx.Bucket(bOutbox).Delete(key); err != nil {
					return err
				}
				if which == "bucket" {
					_, err := tx.Bucket(bOutbox).CreateBucket(key)
					return err
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if read == "UnitEvents" {
				_, err = s.UnitEvents(ctx, "SN1", 0, 0)
			} else {
				_, err = s.UnitActions(ctx, "SN1")
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "outbox entry missing") {
				t.Errorf("%s with the %s entry missing: %v, want a corrupt store naming the missing entry", read, which, err)
			}
		}
	}
}
