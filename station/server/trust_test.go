package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/fixture/devpki"
	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/config"
	"github.com/devid-station/devid/station/ekcert"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// ekFingerprint is the store's fingerprint of the TPM's ECC EK.
func ekFingerprint(t *testing.T, sim *tpm.TPM) string {
	t.Helper()
	ek, err := sim.ReadEK(tpm.ECCP256)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(ek.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return store.EKFingerprint(der)
}

// softEK is the ECC EK of a TPM the station never saw, certified by ca: a software key in the
// EK template.
func softEK(t *testing.T, ca *devpki.CA) *tpm.EK {
	t.Helper()
	k := softwareKey(t)
	cert, err := ca.IssueEKCert(&k.PublicKey, ekcert.TPMIdentity{Manufacturer: "id:534F4654", Model: "soft", Version: "id:00010000"}, devpki.EKCertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &tpm.EK{Algorithm: tpm.ECCP256, Public: softwarePublic(t, tpm2.ECCEKTemplate, &k.PublicKey), Certificate: cert, CertificateIndex: 0x01c0000a}
}

// withEK answers ReadEK with ek, as an agent on another TPM would.
func withEK(ek *tpm.EK) func(tpm.Algorithm) (*tpm.EK, error) {
	return func(alg tpm.Algorithm) (*tpm.EK, error) {
		if alg != ek.Algorithm {
			return nil, fmt.Errorf("no %v EK", alg)
		}
		return ek, nil
	}
}

// rawSession opens an agent session by hand and says Hello for serial, then waits (a minute
// at most) for the station's first message. The session stays open, silent, until close or
// the end of the test.
func (l *testLine) rawSession(serial string) (first *agentv1.StationMessage, close func(), err error) {
	l.t.Helper()
	conn, err := grpc.NewClient(l.file.Agents.Listen, grpc.WithTransportCredentials(credentials.NewTLS(
		&tls.Config{RootCAs: l.stationCA, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13})))
	if err != nil {
		l.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	close = func() { cancel(); conn.Close() }
	l.t.Cleanup(close)
	stream, err := agentv1.NewAgentGatewayClient(conn).Session(ctx)
	if err != nil {
		return nil, close, err
	}
	// A stream the station refuses at once may be closed before Send runs: Send then says only
	// io.EOF, and the status is what Recv returns.
	if err := stream.Send(&agentv1.AgentMessage{Body: &agentv1.AgentMessage_Hello{Hello: &agentv1.Hello{ProtocolVersion: 1, HardwareSerial: serial}}}); err != nil && !errors.Is(err, io.EOF) {
		return nil, close, err
	}
	type recv struct {
		m   *agentv1.StationMessage
		err error
	}
	got := make(chan recv, 1)
	go func() {
		m, err := stream.Recv()
		got <- recv{m, err}
	}()
	select {
	case r := <-got:
		return r.m, close, r.err
	case <-time.After(time.Minute):
		return nil, close, errors.New("no message from the station within a minute")
	}
}

// TestUnprovenSessionsBindNothing: an attacker holds a unit's public EK and EK certificate
// but not its TPM, so every credential activation fails. Before, its session bound the EK to
// the serial it claimed (the genuine unit was then refused for good) or recorded a software
// key that later refused the genuine unit's key. Now nothing an unproven session reports
// binds or constrains the genuine unit, and an admin's release of a binding is audited.
func TestUnprovenSessionsBindNothing(t *testing.T) {
	tests := []struct {
		name   string
		serial string
		lie    func(t *testing.T, real *tpm.TPM, l *lyingTPM)
	}{
		{name: "the unit's EK under another serial", serial: "SN-0002"},
		{name: "the unit's EK and serial with a software key", serial: "SN-0001",
			lie: func(t *testing.T, real *tpm.TPM, l *lyingTPM) {
				l.createKey = func(req tpm.KeyRequest) (*tpm.Key, error) {
					pub := softwarePublic(t, tpm.DevIDTemplate(tpm.ECCP256), &softwareKey(t).PublicKey)
					name, err := tpm.Name(pub)
					if err != nil {
						t.Fatal(err)
					}
					return &tpm.Key{Public: pub, Name: name, Handle: req.Handle}, nil
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			l := newTestLine(t, lineOptions{})
			l.workOrder("WO-1", "SN-0001", "SN-0002")
			sim := l.manufacture(nil, tpm.ECCP256)
			fp := ekFingerprint(t, sim)
			st := l.srv.Store()
			forged := &lyingTPM{TPM: sim, activate: func(uint32, tpm.Algorithm, []byte, []byte) ([]byte, error) {
				return make([]byte, 32), nil // not the credential's secret: the attacker lacks the EK
			}}
			if tc.lie != nil {
				tc.lie(t, sim, forged)
			}
			if v := l.runUnit(ctx, tc.serial, forged); v.Passed || v.Code != workflow.CodeActivationFailed {
				t.Fatalf("forged session: %+v, want failed with %s", v, workflow.CodeActivationFailed)
			}
			if serial, err := st.UnitByEK(ctx, fp); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("after the forged session the EK is bound to %q (%v)", serial, err)
			}
			if v := l.runUnit(ctx, "SN-0001", sim); !v.Passed {
				t.Fatalf("the genuine unit after the forged session: %+v", v)
			}
			if serial, err := st.UnitByEK(ctx, fp); serial != "SN-0001" || err != nil {
				t.Fatalf("EK bound to %q (%v), want SN-0001", serial, err)
			}

			// Once proven, the EK is refused under another serial before anything is written.
			before, _ := st.ChainHead(ctx)
			v := l.runUnit(ctx, "SN-0002", &lyingTPM{TPM: sim})
			if v.Passed || v.Code != workflow.CodeEKBound {
				t.Fatalf("the proven EK under another serial: %+v, want %s", v, workflow.CodeEKBound)
			}
			if after, _ := st.ChainHead(ctx); after.Seq != before.Seq {
				t.Errorf("the refused session wrote %d audit records", after.Seq-before.Seq)
			}

			// An admin releases the binding (an RMA): audited with the reason.
			if _, err := st.ReleaseEK(store.WithPrincipal(ctx, "admin:CN=admin-1"), "SN-0001", "RMA 12: board replaced"); err != nil {
				t.Fatal(err)
			}
			recs, err := st.AuditAfter(ctx, before.Seq, 0)
			if err != nil || len(recs) != 1 || recs[0].Action != store.EventEKReleased || recs[0].Principal != "admin:CN=admin-1" ||
				recs[0].Details["reason"] != "RMA 12: board replaced" {
				t.Errorf("audit of the release: %+v (%v)", recs, err)
			}
			if _, err := st.UnitByEK(ctx, fp); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("EK still bound after its release: %v", err)
			}
		})
	}
}

// TestRefusedSessionsLeaveBoundedRecords: sessions that fail their first checks (a serial in
// no work order, with a megabyte-sized EK chain; an EK of an unknown vendor under an
// authorized serial) used to create unit records and journal their whole identify report.
// Now they write no unit, event, outbox or audit record, only a bounded refusal each, and
// their peer is turned away after its refusal limit.
func TestRefusedSessionsLeaveBoundedRecords(t *testing.T) {
	ctx := context.Background()
	const refusals = 4
	l := newTestLine(t, lineOptions{configure: func(f *config.File) { f.Agents.MaxRefusalsPerPeer = refusals }})
	l.workOrder("WO-1", "SN-0001")
	sim := l.manufacture(nil, tpm.ECCP256)
	otherVendor, err := devpki.New(devpki.Options{TPMVendorOrg: "Unknown TPM Vendor"})
	if err != nil {
		t.Fatal(err)
	}
	st := l.srv.Store()
	head, _ := st.ChainHead(ctx)
	token := outboxEnd(t, st, 0)

	bigChain := func() ([][]byte, error) {
		var chain [][]byte
		for range 6 {
			chain = append(chain, make([]byte, 100<<10))
		}
		return chain, nil
	}
	sessions := []struct {
		serial string
		tpm    *lyingTPM
		code   string
	}{
		{"SN-9001", &lyingTPM{TPM: sim, readEKChain: bigChain}, workflow.CodeNotAuthorized},
		{"SN-9002", &lyingTPM{TPM: sim, readEKChain: bigChain}, workflow.CodeNotAuthorized},
		{"SN-9003", &lyingTPM{TPM: sim, readEKChain: bigChain}, workflow.CodeNotAuthorized},
		{"SN-0001", &lyingTPM{TPM: sim, readEK: withEK(softEK(t, otherVendor.EKIssuing))}, workflow.CodeEKUntrusted},
	}
	for _, s := range sessions {
		if v := l.runUnit(ctx, s.serial, s.tpm); v.Passed || v.Code != s.code {
			t.Fatalf("%s: %+v, want failed with %s", s.serial, v, s.code)
		}
		if u := l.unit(s.serial); u.Status != "" {
			t.Errorf("the refused session created the unit %s: %+v", s.serial, u)
		}
	}
	if after, _ := st.ChainHead(ctx); after.Seq != head.Seq {
		t.Errorf("refused sessions wrote %d audit records", after.Seq-head.Seq)
	}
	if end := outboxEnd(t, st, token); end != token {
		t.Errorf("refused sessions wrote %d outbox events", end-token)
	}
	got, total, err := st.Refusals(ctx)
	if err != nil || total != uint64(len(sessions)) || len(got) != len(sessions) {
		t.Fatalf("%d refusals kept of %d (%v), want %d", len(got), total, err, len(sessions))
	}
	for i, r := range got {
		if r.Serial != sessions[i].serial || r.Code != sessions[i].code || len(r.Fingerprints) == 0 || r.Peer == "" || len(r.Message) > 256 {
			t.Errorf("refusal %d: %+v", i, r)
		}
	}
	// The peer reached its refusal limit: its next session is turned away before any command.
	if msg, _, err := l.rawSession("SN-0001"); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("session after %d refusals: %v, %v, want ResourceExhausted", refusals, msg, err)
	}
}

// outboxEnd returns the last outbox token after token.
func outboxEnd(t *testing.T, st *store.Store, token uint64) uint64 {
	t.Helper()
	for {
		evs, next, err := st.OutboxAfter(context.Background(), token, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return token
		}
		token = next
	}
}

// TestSilentSessionsHoldNoSlot: the station has one provisioning slot and a step timeout of
// ten minutes. Sessions that say Hello and then fall silent used to take the slot (the next
// unit waited for it without a deadline); now they hold none, one peer cannot open more than
// its sessions, and a genuine unit provisions while they hang.
func TestSilentSessionsHoldNoSlot(t *testing.T) {
	l := newTestLine(t, lineOptions{configure: func(f *config.File) {
		f.Agents.MaxUnitsInFlight = 1
		f.Agents.MaxSessionsPerPeer = 3
		f.Workflow.StepTimeout = config.Duration(10 * time.Minute)
	}})
	l.workOrder("WO-1", "SN-0001", "SN-0002", "SN-0003")
	sim := l.manufacture(nil, tpm.ECCP256)
	var last func()
	for _, serial := range []string{"SN-0002", "SN-0003", "SN-0001"} {
		msg, closeSession, err := l.rawSession(serial)
		if err != nil || msg.GetCommand().GetInfo() == nil {
			t.Fatalf("silent session %s: first message %v, %v, want an Info command", serial, msg, err)
		}
		last = closeSession
	}
	if msg, _, err := l.rawSession("SN-0001"); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a fourth session of one peer: %v, %v, want ResourceExhausted", msg, err)
	}
	last()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if v := l.runUnit(ctx, "SN-0001", sim); !v.Passed {
		t.Fatalf("genuine unit beside silent sessions: %+v", v)
	}
}

// blockingJournal holds the workflow of serial when it is about to begin step, until release
// is closed.
type blockingJournal struct {
	workflow.Journal
	serial, step string
	reached      chan struct{}
	release      chan struct{}
}

func (j *blockingJournal) Advance(ctx context.Context, end store.StepRef, result []byte, step string, intent []byte) (store.StepRef, error) {
	if end.Serial == j.serial && step == j.step {
		close(j.reached)
		<-j.release
	}
	return j.Journal.Advance(ctx, end, result, step, intent)
}

// TestSecondSessionLeavesVictimAlone: while a unit provisions, a second session claims its
// serial. It used to write unit.failed SERIAL_IN_PROGRESS into the running unit's log and the
// MES outbox while the unit went on to pass; now it is refused with a bounded record only.
func TestSecondSessionLeavesVictimAlone(t *testing.T) {
	ctx := context.Background()
	j := &blockingJournal{serial: "SN-0001", step: workflow.StepIDevIDKey, reached: make(chan struct{}), release: make(chan struct{})}
	l := newTestLine(t, lineOptions{
		wrap:      func(inner workflow.Journal) workflow.Journal { j.Journal = inner; return j },
		configure: func(f *config.File) { f.Workflow.HandoverWait = config.Duration(500 * time.Millisecond) },
	})
	l.workOrder("WO-1", "SN-0001")
	sim := l.manufacture(nil, tpm.ECCP256)
	st := l.srv.Store()
	token := outboxEnd(t, st, 0)

	victim := make(chan error, 1)
	go func() {
		v := l.runUnit(ctx, "SN-0001", sim)
		if !v.Passed {
			victim <- fmt.Errorf("victim: %+v", v)
		}
		victim <- nil
	}()
	select {
	case <-j.reached:
	case err := <-victim:
		t.Fatalf("the victim ended before its key step: %v", err)
	}
	// Another TPM (a genuine EK certificate) claims the busy serial.
	intruder := &lyingTPM{TPM: sim, readEK: withEK(softEK(t, l.pki.EKIssuing))}
	if v := l.runUnit(ctx, "SN-0001", intruder); v.Passed || v.Code != workflow.CodeSerialBusy {
		t.Errorf("second session: %+v, want failed with %s", v, workflow.CodeSerialBusy)
	}
	close(j.release)
	if err := <-victim; err != nil {
		t.Fatal(err)
	}

	evs, err := st.UnitEvents(ctx, "SN-0001", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Type == "unit.failed" || ev.ErrorCode == workflow.CodeSerialBusy || ev.Data["code"] == workflow.CodeSerialBusy {
			t.Errorf("the victim's log holds the refused session's %s %s", ev.Type, ev.Data["code"])
		}
	}
	outbox, _, err := st.OutboxAfter(ctx, token, 10000)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range outbox {
		if ev.Data["code"] == workflow.CodeSerialBusy || ev.ErrorCode == workflow.CodeSerialBusy {
			t.Errorf("the MES outbox holds %s %s for %s", ev.Type, workflow.CodeSerialBusy, ev.Serial)
		}
	}
	if u := l.unit("SN-0001"); u.Status != store.StatusDone {
		t.Errorf("victim unit %+v", u)
	}
	got, _, err := st.Refusals(ctx)
	if err != nil || len(got) != 1 || got[0].Code != workflow.CodeSerialBusy || got[0].Serial != "SN-0001" {
		t.Errorf("refusals %+v (%v), want one %s", got, err, workflow.CodeSerialBusy)
	}
}
