package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/devid-station/devid/device-agent/agent"
	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/fixture/estca"
	"github.com/devid-station/devid/station/reconcile"
	"github.com/devid-station/devid/station/store"
)

// stationdProcess runs the stationd binary on the line's configuration.
type stationdProcess struct {
	t    *testing.T
	bin  string
	conf string
	cmd  *exec.Cmd
	log  *os.File
}

func (p *stationdProcess) start() {
	p.t.Helper()
	p.cmd = exec.Command(p.bin, "-config", p.conf, "-log-level", "warn")
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
}

// kill ends the process with SIGKILL: no drain, no deferred write.
func (p *stationdProcess) kill() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
	p.cmd = nil
}

// stop ends the process with SIGTERM and waits for it to exit.
func (p *stationdProcess) stop() {
	p.t.Helper()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		// A process killed right after its start may not have its handler yet.
		p.t.Logf("stationd stopped: %v", err)
	case <-time.After(time.Minute):
		p.kill()
		p.t.Error("stationd did not stop within a minute of SIGTERM")
	}
	p.cmd = nil
}

// TestKilledStationdLosesNoCertificate runs a small line against a real stationd process and
// dev EST CAs that issue a new certificate for every request (no CSR deduplication), and kills
// stationd with SIGKILL at random moments while units provision, restarting it each time. Every
// unit passes; every certificate in the CAs' ledger is then recorded in the store or matches an
// open possibly-issued entry by key; after reconciliation through the CAs' search, every one is
// recorded and no entry is open. The kill points are random; the invariant must hold for any.
func TestKilledStationdLosesNoCertificate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills stationd: skipped in -short")
	}
	const units, kills = 6, 4
	bin := filepath.Join(t.TempDir(), "stationd")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/devid-station/devid/station/cmd/stationd").CombinedOutput(); err != nil {
		t.Fatalf("building stationd: %v\n%s", err, out)
	}
	// The CAs take a while per enrollment, and go on when the caller is gone: a kill during an
	// enrollment leaves a certificate the station may never hear of.
	slow := estca.Knobs{ProcessingTime: 60 * time.Millisecond}
	l := newTestLine(t, lineOptions{knobs: slow})
	if err := l.ca.SetKnobs("ldevid", slow); err != nil {
		t.Fatal(err)
	}
	var serials []string
	for i := range units {
		serials = append(serials, fmt.Sprintf("SN-%04d", i+1))
	}
	l.workOrder("WO-1", serials...)
	l.stop(false) // the in-process station made the store and the work order; stationd takes over

	conf := filepath.Join(l.dir, "station.toml")
	data, err := toml.Marshal(l.file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, data, 0o600); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(l.dir, "stationd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	t.Cleanup(func() {
		if t.Failed() {
			if data, err := os.ReadFile(logFile.Name()); err == nil {
				t.Logf("stationd.log (last 6 KiB):\n%s", data[max(0, len(data)-6<<10):])
			}
		}
	})
	p := &stationdProcess{t: t, bin: bin, conf: conf, log: logFile}
	p.start()
	t.Cleanup(p.kill)

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	t.Logf("kill seed %d", seed)
	killed := 0
	for i, serial := range serials {
		sim := l.manufacture(nil, tpm.ECCP256)
		verdict := make(chan agent.Verdict, 1)
		go func() { verdict <- l.runUnit(context.Background(), serial, sim) }()
		if i < kills {
			// Kill at a random moment of this unit's run (it may already be done).
			time.Sleep(time.Duration(rng.Int64N(int64(700 * time.Millisecond))))
			p.kill()
			killed++
			p.start()
		}
		select {
		case v := <-verdict:
			if !v.Passed {
				t.Fatalf("%s: verdict %+v", serial, v)
			}
		case <-time.After(2 * time.Minute):
			t.Fatalf("%s: no verdict", serial)
		}
		sim.Close()
	}
	p.stop()

	st, err := store.Open(l.file.StorePath, store.Options{StationID: l.file.StationID})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	ledger := l.ca.Ledger()
	recorded, possibly, unaccounted := invariant(t, st, ledger)
	t.Logf("%d certificates issued, %d kills: %d recorded, %d possibly issued, %d unaccounted", len(ledger), killed, recorded, possibly, unaccounted)
	if unaccounted != 0 {
		t.Fatalf("%d certificates in the CAs' ledger are neither recorded nor covered by an open possibly-issued entry", unaccounted)
	}
	roots := x509.NewCertPool()
	roots.AddCert(l.pki.MakerRoot.Cert)
	reconciled := 0
	for _, ca := range []struct{ name, label string }{{"maker", "idevid"}, {"customer", "ldevid"}} {
		rep, err := reconcile.Search(ctx, st, ca.name, &reconcile.HTTPSearcher{
			URL: l.ca.URL() + "/.well-known/est/" + ca.label + "/search", Roots: roots,
			HeaderName: "Secret-Value", HeaderValue: headerSecret}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		reconciled += rep.Recorded
	}
	after, open, left := invariant(t, st, ledger)
	t.Logf("after reconciliation: recorded %d (reconciled %d), possibly issued %d, unaccounted %d", after, reconciled, open, left)
	if left != 0 || after != len(ledger) || after != recorded+reconciled {
		t.Errorf("after reconciliation %d of %d certificates recorded (%d before, %d reconciled), %d unaccounted", after, len(ledger), recorded, reconciled, left)
	}
	if entries, err := st.PossiblyIssuedEntries(ctx, "", true); err != nil || len(entries) != 0 {
		t.Errorf("open possibly-issued entries after reconciliation: %d, %v", len(entries), err)
	}
	for _, serial := range serials {
		u, err := st.Unit(ctx, serial)
		if err != nil || u.Status != store.StatusDone {
			t.Errorf("%s: %+v, %v", serial, u.Status, err)
		}
	}
	if _, err := st.VerifyChain(ctx); err != nil {
		t.Errorf("audit chain: %v", err)
	}
}

// invariant sorts the CAs' ledger: certificates recorded in the store, those whose key matches
// an open possibly-issued entry, and the others.
func invariant(t *testing.T, st *store.Store, ledger []estca.LedgerEntry) (recorded, possibly, unaccounted int) {
	t.Helper()
	ctx := context.Background()
	open, err := st.PossiblyIssuedEntries(ctx, "", true)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, p := range open {
		keys[p.PublicKeySHA256] = true
	}
	for _, e := range ledger {
		_, err := st.CertificateBySHA256(ctx, e.SHA256)
		switch {
		case err == nil:
			recorded++
		case !errors.Is(err, store.ErrNotFound):
			t.Fatal(err)
		case keys[e.PublicKeySHA256]:
			possibly++
		default:
			unaccounted++
			t.Errorf("certificate %s (%s, serial %x, issued %s) is unknown to the store and matches no open entry",
				e.SHA256[:16], e.Label, e.Serial, e.Time.Format(time.RFC3339Nano))
		}
	}
	return recorded, possibly, unaccounted
}
