package export_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devid-station/devid/reports/export"
	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/store"
)

// line is a real store written the way the workflow journals units: work order WO-1 with two
// provisioned units and one that failed at LDevID enrollment, and a unit of WO-2.
type line struct {
	st   *store.Store
	key  *ecdsa.PrivateKey
	dir  string // the WO-1 bundle
	body *export.Body
	// start is the time of the first record.
	start time.Time
	// trust holds the roots of every unit's DevID certificates, ekTrust of their EK
	// certificates.
	trust, ekTrust *x509.CertPool
}

// possiblyKey is the key of SN-2's possibly issued LDevID.
var possiblyKey = strings.Repeat("ab", 32)

func newLine(t *testing.T) *line {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// The clock starts now: travelertest's certificates are valid from an hour ago for a day,
	// and the verifier checks them at the time they were recorded.
	start := time.Now().UTC().Truncate(time.Second)
	clock := travelertest.NewClock(start)
	st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "st-qa", Clock: clock,
		Checkpoints: store.CheckpointOptions{Signer: key, Every: 7, Interval: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := store.WithPrincipal(context.Background(), "mes:alice")
	roots, ekRoots := x509.NewCertPool(), x509.NewCertPool()
	for _, wo := range []store.WorkOrder{{ID: "WO-1", Profile: "default", Serials: []string{"SN-1", "SN-2", "SN-3"}},
		{ID: "WO-2", Profile: "default", Serials: []string{"SN-9"}}} {
		if _, err := st.CreateWorkOrder(ctx, wo); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []travelertest.Unit{
		{Serial: "SN-1", WorkOrder: "WO-1", Profile: "default"},
		{Serial: "SN-9", WorkOrder: "WO-2", Profile: "default"},
		{Serial: "SN-2", WorkOrder: "WO-1", Profile: "default"},
		{Serial: "SN-3", WorkOrder: "WO-1", Profile: "default", FailAt: "ldevid_enroll", FailCode: "CA_REFUSED"},
	} {
		u.Clock, u.StepTime = clock, time.Second
		w := travelertest.WriteUnit(t, st, u)
		roots.AddCert(w.DevIDRoot)
		ekRoots.AddCert(w.EKRoot)
		// Checkpoints come every 7 records from a goroutine; sign now and then so that the
		// range certainly holds some in the middle.
		if _, err := st.Checkpoint(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// SN-2's LDevID enrollment lost its answer: the CA may have certified this key.
	if _, err := st.OpenPossiblyIssued(context.Background(), store.PossiblyIssued{Serial: "SN-2", Role: store.RoleLDevID,
		Step: "ldevid_enroll", Attempt: 1, CA: "customer", CSRSHA256: strings.Repeat("cd", 32),
		PublicKeySHA256: possiblyKey, From: start, To: start.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	b, err := export.Build(context.Background(), st, export.Selection{WorkOrder: "WO-1"}, export.Options{Version: "v-test"})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "bundle")
	if err := b.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	return &line{st: st, key: key, dir: dir, body: b.Body, start: start, trust: roots, ekTrust: ekRoots}
}

// roots returns the CA certificates the bundle's chains end in: the trusted roots an auditor
// holds (taken here from the intact bundle).
func (l *line) roots(*testing.T) *x509.CertPool { return l.trust }

func read(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func write(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(name)), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// copyDir copies the bundle so each case tampers with its own.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "bundle")
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestBundleVerifies(t *testing.T) {
	l := newLine(t)
	rep := export.Verify(l.dir, l.roots(t), l.key.Public())
	if !rep.OK() {
		t.Fatalf("intact bundle fails:\n%s", rep)
	}
	var serials []string
	for _, u := range rep.Units {
		serials = append(serials, u.Serial)
	}
	if got := strings.Join(serials, ","); got != "SN-1,SN-2,SN-3" {
		t.Errorf("units %s, want the work order's SN-1,SN-2,SN-3", got)
	}
	if !strings.Contains(rep.String(), "PASS SN-3") {
		t.Errorf("report does not pass SN-3:\n%s", rep)
	}
	// Every unit's EK certificate is in the bundle and chains to the EK roots.
	for _, u := range l.body.Units {
		if !strings.HasPrefix(u.EKCertificate, "certificates/"+u.Serial+"/ek-") {
			t.Errorf("%s: EK certificate file %q", u.Serial, u.EKCertificate)
		}
	}
	if rep := export.VerifyWith(l.dir, export.Trust{Roots: l.trust, EKRoots: l.ekTrust, StationKey: l.key.Public()}); !rep.OK() {
		t.Errorf("intact bundle fails with the EK roots:\n%s", rep)
	}
	b := l.body
	if b.StationID != "st-qa" || b.SoftwareVersion != "v-test" || len(b.Audit.Checkpoints) < 2 {
		t.Errorf("manifest station %q version %q checkpoints %d", b.StationID, b.SoftwareVersion, len(b.Audit.Checkpoints))
	}
	head, err := l.st.ChainHead(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if b.Audit.Last != head.Seq || !bytes.Equal(b.Audit.Head.Hash, head.Hash) {
		t.Errorf("range ends at %d, the chain head (the export's checkpoint) is %d", b.Audit.Last, head.Seq)
	}
	rev := string(read(t, l.dir, export.RevocationFile))
	if !strings.Contains(rev, "SN-2,key,LDevID,customer,,"+possiblyKey+",possibly_issued,") {
		t.Errorf("%s does not list SN-2's possibly issued key:\n%s", export.RevocationFile, rev)
	}
	sum := string(read(t, l.dir, export.SummaryFile))
	for _, want := range []string{"SN-1,WO-1,default,", "SN-3,WO-1,default,", ",failed,CA_REFUSED,", "mes:alice", "st-qa", "v-test", "0x49465800", "7.85.4555.0"} {
		if !strings.Contains(sum, want) {
			t.Errorf("summary.csv lacks %q:\n%s", want, sum)
		}
	}
	if strings.Contains(sum, "SN-9") {
		t.Errorf("summary.csv holds SN-9 of another work order")
	}
}

func TestSelections(t *testing.T) {
	l := newLine(t)
	ctx := context.Background()
	b, err := export.Build(ctx, l.st, export.Selection{Serials: []string{"SN-9"}}, export.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Body.Units) != 1 || b.Body.Units[0].Serial != "SN-9" || b.Body.Audit.First == 1 {
		t.Errorf("serial selection: units %+v, range from %d (want from a checkpoint after SN-1)", b.Body.Units, b.Body.Audit.First)
	}
	dir := filepath.Join(t.TempDir(), "b")
	if err := b.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	if rep := export.Verify(dir, l.roots(t), l.key.Public()); len(rep.Problems) > 0 {
		t.Errorf("a range starting at a checkpoint fails:\n%s", rep)
	}
	now := l.start
	b, err = export.Build(ctx, l.st, export.Selection{Since: now, Until: now.Add(24 * time.Hour)}, export.Options{})
	if err != nil || len(b.Body.Units) != 4 {
		t.Errorf("time range: %v, %d units, want 4", err, len(b.Body.Units))
	}
	for _, bad := range []export.Selection{{}, {WorkOrder: "WO-1", Serials: []string{"SN-1"}}, {Serials: []string{"SN-404"}},
		{Since: now.Add(48 * time.Hour), Until: now.Add(72 * time.Hour)}, {WorkOrder: "WO-404"}} {
		if _, err := export.Build(ctx, l.st, bad, export.Options{}); err == nil {
			t.Errorf("selection %+v: no error", bad)
		}
	}
}

// auditLines splits audit.jsonl into records.
func auditLines(t *testing.T, dir string) []store.AuditEvent {
	t.Helper()
	var out []store.AuditEvent
	for _, line := range bytes.Split(bytes.TrimSpace(read(t, dir, export.AuditFile)), []byte("\n")) {
		var a store.AuditEvent
		if err := json.Unmarshal(line, &a); err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

func writeAudit(t *testing.T, dir string, recs []store.AuditEvent) {
	t.Helper()
	var buf bytes.Buffer
	for i := range recs {
		b, err := json.Marshal(&recs[i])
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(append(b, '\n'))
	}
	write(t, dir, export.AuditFile, buf.Bytes())
}

// flip changes one byte of name in the middle of a JSON string value (a hex digit or letter),
// so the file still parses where it can.
func flip(t *testing.T, dir, name string, at string) {
	t.Helper()
	b := read(t, dir, name)
	i := bytes.Index(b, []byte(at))
	if i < 0 {
		t.Fatalf("%s has no %q", name, at)
	}
	i += len(at)
	if b[i] == 'a' {
		b[i] = 'b'
	} else {
		b[i] = 'a'
	}
	write(t, dir, name, b)
}

func TestTamper(t *testing.T) {
	l := newLine(t)
	roots := l.roots(t)
	var sn1 export.Unit
	for _, u := range l.body.Units {
		if u.Serial == "SN-1" {
			sn1 = u
		}
	}
	idevid := sn1.Certificates[0]
	recs := auditLines(t, l.dir)
	// The SN-2 status update to done, and the checkpoint that first covers it.
	var edit, cover uint64
	for _, a := range recs {
		if edit == 0 && a.Serial == "SN-2" && a.Action == store.EventUnitUpdated && a.Details["status"] == "done" {
			edit = a.Seq
		}
		if edit != 0 && cover == 0 && a.Action == store.AuditActionCheckpoint {
			cover = a.Seq
		}
	}
	if edit == 0 || cover == 0 {
		t.Fatalf("no SN-2 done record (%d) or covering checkpoint (%d)", edit, cover)
	}
	first := l.body.Audit.First
	seqName := func(n uint64) string { return export.AuditFile + " record " + itoa(n) + ":" }

	cases := []struct {
		name   string
		tamper func(dir string)
		want   []string // every one must appear in the report
		unit   string   // this unit must FAIL ("" only the bundle)
	}{
		{"traveler byte", func(d string) { flip(t, d, sn1.Traveler, `"work_order": "WO-`) },
			[]string{sn1.Traveler + ": SHA-256"}, "SN-1"},
		{"traveler result re-encoded", func(d string) {
			write(t, d, sn1.Traveler, bytes.Replace(read(t, d, sn1.Traveler), []byte(`"result": "done"`), []byte(`"result": "failed"`), 1))
		}, []string{sn1.Traveler + ": SHA-256", sn1.Traveler + `: result "failed", audit.jsonl record`}, "SN-1"},
		{"certificate byte", func(d string) {
			b := read(t, d, idevid)
			b[len("-----BEGIN CERTIFICATE-----\n")+200] ^= 1 // a base64 letter of the signature part
			write(t, d, idevid, b)
		}, []string{idevid + ": SHA-256", idevid + ": "}, "SN-1"},
		{"summary byte", func(d string) { flip(t, d, export.SummaryFile, "SN-1,WO-1,default,") },
			[]string{export.SummaryFile + ": SHA-256"}, ""},
		{"manifest byte", func(d string) { flip(t, d, export.ManifestFile, `"station_id": "st-`) },
			[]string{export.ManifestFile + ": signature does not verify"}, ""},
		{"audit byte", func(d string) {
			b := read(t, d, export.AuditFile)
			i := bytes.Index(b, []byte(`"status":"done"`))
			b[i+len(`"status":"`)] = 'D'
			write(t, d, export.AuditFile, b)
		}, []string{export.AuditFile + ": SHA-256", "hash does not match content"}, ""},
		{"record deleted", func(d string) {
			r := auditLines(t, d)
			writeAudit(t, d, append(r[:edit-first:edit-first], r[edit-first+1:]...))
		}, []string{export.AuditFile + ": SHA-256", seqName(edit) + " record carries seq " + itoa(edit+1)}, ""},
		{"edited and re-chained", func(d string) {
			r := auditLines(t, d)
			r[edit-first].Details["status"] = "failed"
			for i := int(edit - first); i < len(r); i++ {
				if i > 0 {
					r[i].PrevHash = r[i-1].Hash
				}
				r[i].Hash = r[i].ComputeHash()
			}
			writeAudit(t, d, r)
		}, []string{export.AuditFile + ": SHA-256", seqName(cover) + " checkpoint signs seq"}, ""},
		{"audit truncated", func(d string) { writeAudit(t, d, auditLines(t, d)[:edit-first]) },
			[]string{export.AuditFile + ": SHA-256", seqName(edit-1) + " the records end at " + itoa(edit-1)}, ""},
		{"traveler truncated", func(d string) { write(t, d, sn1.Traveler, read(t, d, sn1.Traveler)[:100]) },
			[]string{sn1.Traveler + ": SHA-256", sn1.Traveler + ": unexpected end of JSON input"}, "SN-1"},
		{"EK certificate of another unit", func(d string) {
			var sn2 export.Unit
			for _, u := range l.body.Units {
				if u.Serial == "SN-2" {
					sn2 = u
				}
			}
			write(t, d, sn1.EKCertificate, read(t, d, sn2.EKCertificate))
		}, []string{sn1.EKCertificate + ": SHA-256", sn1.EKCertificate + ": file name is not", sn1.EKCertificate + ": the EK"}, "SN-1"},
		{"file deleted", func(d string) { os.Remove(filepath.Join(d, idevid)) },
			[]string{idevid + ": open"}, "SN-1"},
		{"file added", func(d string) { write(t, d, "extra.txt", []byte("x")) },
			[]string{"extra.txt: not listed in the manifest"}, ""},
		{"certificate replaced by a link out of the bundle", func(d string) {
			outside := filepath.Join(t.TempDir(), "cert.pem")
			if err := os.WriteFile(outside, read(t, d, idevid), 0o600); err != nil {
				t.Fatal(err)
			}
			os.Remove(filepath.Join(d, idevid))
			if err := os.Symlink(outside, filepath.Join(d, idevid)); err != nil {
				t.Fatal(err)
			}
		}, []string{idevid + ": openat", "path escapes from parent"}, "SN-1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := copyDir(t, l.dir)
			c.tamper(d)
			rep := export.Verify(d, roots, l.key.Public())
			out := rep.String()
			t.Logf("report:\n%s", out)
			if rep.OK() {
				t.Fatalf("tampered bundle passes:\n%s", out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("report lacks %q:\n%s", w, out)
				}
			}
			if c.unit != "" && !strings.Contains(out, "FAIL "+c.unit+"\n") {
				t.Errorf("unit %s does not fail:\n%s", c.unit, out)
			}
		})
	}

	t.Run("other station key", func(t *testing.T) {
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if rep := export.Verify(l.dir, roots, other.Public()); rep.OK() || !strings.Contains(rep.String(), "manifest.json: signature does not verify") {
			t.Errorf("another key verifies:\n%s", rep)
		}
	})
	t.Run("other EK roots", func(t *testing.T) {
		pool := x509.NewCertPool()
		pool.AddCert(travelertest.NewCA(t, "stranger").Cert)
		rep := export.VerifyWith(l.dir, export.Trust{Roots: roots, EKRoots: pool, StationKey: l.key.Public()})
		if rep.OK() || !strings.Contains(rep.String(), sn1.EKCertificate+": does not chain to the given EK roots") {
			t.Errorf("EK certificates chain to a stranger:\n%s", rep)
		}
	})
	t.Run("EK roots and no EK certificate", func(t *testing.T) {
		d := copyDir(t, l.dir)
		os.Remove(filepath.Join(d, sn1.EKCertificate))
		rep := export.VerifyWith(d, export.Trust{Roots: roots, EKRoots: l.ekTrust, StationKey: l.key.Public()})
		if rep.OK() || !strings.Contains(rep.String(), sn1.EKCertificate+": missing") {
			t.Errorf("a missing EK certificate passes:\n%s", rep)
		}
	})
	t.Run("other roots", func(t *testing.T) {
		pool := x509.NewCertPool()
		pool.AddCert(travelertest.NewCA(t, "stranger").Cert)
		rep := export.Verify(l.dir, pool, l.key.Public())
		if rep.OK() || !strings.Contains(rep.String(), idevid+": does not chain to the given roots") {
			t.Errorf("certificates chain to a stranger:\n%s", rep)
		}
	})
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// TestEKCertificateOfEarlierSession: a unit whose latest verify_ek failed with another EK
// certificate keeps the one its earlier session verified, and the bundle holds that one, found
// in the earlier session's identify report.
func TestEKCertificateOfEarlierSession(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "st-qa",
		Checkpoints: store.CheckpointOptions{Signer: key, Interval: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if _, err := st.CreateWorkOrder(ctx, store.WorkOrder{ID: "WO-1", Profile: "default", Serials: []string{"SN-1"}}); err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// Each session's EK certificate comes from a CA of its own: the same key, another certificate.
	first := travelertest.WriteUnit(t, st, travelertest.Unit{Serial: "SN-1", WorkOrder: "WO-1", Profile: "default", EK: ek,
		FailAt: "idevid_enroll", FailCode: "CA_REFUSED"})
	second := travelertest.WriteUnit(t, st, travelertest.Unit{Serial: "SN-1", WorkOrder: "WO-1", Profile: "default", EK: ek,
		FailAt: "verify_ek", FailCode: "EK_CERT_INVALID"})
	if bytes.Equal(first.EKCert, second.EKCert) {
		t.Fatal("both sessions have the same EK certificate")
	}
	b, err := export.Build(ctx, st, export.Selection{Serials: []string{"SN-1"}}, export.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(first.EKCert)
	if got := b.Body.Units[0].EKCertificate; got != "certificates/SN-1/ek-"+hex.EncodeToString(want[:])+".pem" {
		t.Fatalf("EK certificate file %q, want the first session's", got)
	}
	for _, f := range b.Files {
		if f.Path != b.Body.Units[0].EKCertificate {
			continue
		}
		if p, _ := pem.Decode(f.Data); p == nil || !bytes.Equal(p.Bytes, first.EKCert) {
			t.Fatalf("%s does not start with the first session's EK certificate", f.Path)
		}
		return
	}
	t.Fatal("no EK certificate file in the bundle")
}
