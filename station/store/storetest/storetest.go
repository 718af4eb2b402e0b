// Package storetest fills a store with many units fast, for the store's scale benchmarks and
// tests (listing, restart): it writes each unit as the workflow leaves it (state, one step
// record per step with intents and results of realistic size, the verify_ek intent carrying
// an identify report with its EK certificate chain) through store.Seed, in large
// transactions, instead of running the workflow.
package storetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/journal"
	"github.com/devid-station/devid/station/store"
)

// Steps are the steps a seeded unit went through, in order.
var Steps = []string{journal.StepIdentify, journal.StepVerifyEK, journal.StepAuthorize,
	journal.StepIDevIDKey, journal.StepIDevIDProof, journal.StepIDevIDCSR, journal.StepIDevIDEnroll, journal.StepIDevIDInstall,
	journal.StepLDevIDKey, journal.StepLDevIDProof, journal.StepLDevIDCSR, journal.StepLDevIDEnroll, journal.StepLDevIDInstall,
	journal.StepOnboarding, journal.StepVerify, journal.StepComplete}

// Options shape the seeded units.
type Options struct {
	// Prefix starts every serial ("SN-" when empty); serials are Prefix and an 8-digit index.
	Prefix string
	// PerWorkOrder units share a work order (WO-<n>); 0 means 1000.
	PerWorkOrder int
	// InFlightEvery makes every n-th unit (index % n == n-1) still running at an enroll step,
	// its intent open; 0 means none.
	InFlightEvery int
	// FailedEvery makes every n-th unit (index % n == 0, index > 0) failed with ErrorCode; 0
	// means none.
	FailedEvery int
	// ErrorCode is the failed units' code ("CA_REJECTED" when empty).
	ErrorCode string
	// Batch is how many units one transaction writes; 0 means 2000.
	Batch int
}

// Serial is the serial of the i-th seeded unit.
func Serial(prefix string, i int) string {
	if prefix == "" {
		prefix = "SN-"
	}
	return fmt.Sprintf("%s%08d", prefix, i)
}

// Seed writes units [from, to) into st.
func Seed(ctx context.Context, st *store.Store, from, to int, opts Options) error {
	batch := opts.Batch
	if batch <= 0 {
		batch = 2000
	}
	chain := [][]byte{filler(900, 1), filler(850, 2)}
	for lo := from; lo < to; lo += batch {
		var units []store.SeedUnit
		for i := lo; i < min(lo+batch, to); i++ {
			u, err := unit(i, opts, chain)
			if err != nil {
				return err
			}
			units = append(units, u)
		}
		if err := st.Seed(ctx, units); err != nil {
			return fmt.Errorf("seeding units %d-%d: %w", lo, lo+len(units)-1, err)
		}
	}
	return nil
}

// Status is the status Seed gives the i-th unit under opts.
func Status(i int, opts Options) store.Status {
	switch {
	case opts.InFlightEvery > 0 && i%opts.InFlightEvery == opts.InFlightEvery-1:
		return store.StatusRunning
	case opts.FailedEvery > 0 && i > 0 && i%opts.FailedEvery == 0:
		return store.StatusFailed
	}
	return store.StatusDone
}

// filler is n deterministic bytes (standing in for a certificate).
func filler(n int, seed byte) []byte {
	b := make([]byte, 0, n+sha256.Size)
	h := sha256.Sum256([]byte{seed})
	for len(b) < n {
		b = append(b, h[:]...)
		h = sha256.Sum256(h[:])
	}
	return b[:n]
}

func unit(i int, opts Options, chain [][]byte) (store.SeedUnit, error) {
	per := opts.PerWorkOrder
	if per <= 0 {
		per = 1000
	}
	serial := Serial(opts.Prefix, i)
	t0 := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second)
	sum := sha256.Sum256([]byte(serial))
	fp := hex.EncodeToString(sum[:])
	u := store.UnitState{Serial: serial, WorkOrderID: fmt.Sprintf("WO-%d", i/per), Profile: "default",
		EKFingerprint: fp, Status: Status(i, opts), CreatedAt: t0, Steps: map[string]store.StepSummary{}}
	steps := Steps
	switch u.Status {
	case store.StatusRunning:
		steps = Steps[:7] // open at idevid_enroll
	case store.StatusFailed:
		steps = Steps[:7]
		u.ErrorCode = opts.ErrorCode
		if u.ErrorCode == "" {
			u.ErrorCode = "CA_REJECTED"
		}
		u.ErrorMessage = "the CA refused the request"
	}
	identify, err := journal.Identify{
		Info: &agentv1.InfoResult{Manufacturer: 0x53494d20, VendorString: "simulated", FirmwareVersion: 0x20240125},
		EKs: []*agentv1.EndorsementKey{{Algorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, PublicArea: filler(122, byte(i)),
			Handle: 0x81010002, Certificate: filler(700, byte(i+1)), CertificateIndex: 0x01c0000a}},
		Chain: chain,
		Hello: &agentv1.Hello{ProtocolVersion: 1, AgentVersion: "bench", HardwareSerial: serial, SerialSource: "flag",
			FixtureSlot: fmt.Sprintf("slot-%d", i%64), BootId: fp[:32], TpmTransport: "simulator", SessionAttempt: 1},
	}.MarshalJSON()
	if err != nil {
		return store.SeedUnit{}, err
	}
	var recs []store.StepRecord
	for n, step := range steps {
		began := t0.Add(time.Duration(n) * 100 * time.Millisecond)
		in := journal.Intent{}
		switch step {
		case journal.StepVerifyEK:
			in.Identify = string(identify)
		case journal.StepIDevIDEnroll, journal.StepLDevIDEnroll:
			in.CA, in.CSRSHA256, in.KeyName, in.PublicKeySHA256 = "maker", fp, "000b"+fp, fp
		}
		intent, err := json.Marshal(in)
		if err != nil {
			return store.SeedUnit{}, err
		}
		rec := store.StepRecord{StepRef: store.StepRef{Step: step, Attempt: 1}, Intent: intent, BeganAt: began}
		last := n == len(steps)-1
		if !last || u.Status == store.StatusDone || u.Status == store.StatusFailed {
			rec.Ended, rec.EndedAt = true, began.Add(80*time.Millisecond)
			rec.Result = []byte(`{}`)
			if step == journal.StepVerifyEK {
				if rec.Result, err = json.Marshal(journal.VerifyEKResult{Algorithm: "ecc-p256", Fingerprint: fp,
					CertSHA256: fp, Issuer: "CN=Sim EK CA", Manufacturer: "SIM"}); err != nil {
					return store.SeedUnit{}, err
				}
				// As the workflow records them when the unit is authorized after verify_ek.
				u.EKCertSHA256, u.FixtureSlot = fp, fmt.Sprintf("slot-%d", i%64)
			}
			if last && u.Status == store.StatusFailed {
				rec.Result, rec.ErrorCode = nil, u.ErrorCode
			}
		}
		recs = append(recs, rec)
		u.Steps[step] = store.StepSummary{Attempts: 1, StartedAt: began, EndedAt: rec.EndedAt, ErrorCode: rec.ErrorCode}
		u.CurrentStep = step
		u.Attempts++
	}
	if u.Status == store.StatusDone {
		u.Keys = map[string]store.KeyRef{"IDevID": {Handle: 0x81020000, Name: sum[:]}, "LDevID": {Handle: 0x81020002, Name: sum[:]}}
		u.Certificates = []store.CertRef{{Role: "IDevID", SHA256: fp, IssuerHash: fp, SerialHex: fp[:32], Status: store.CertActive},
			{Role: "LDevID", SHA256: fp, IssuerHash: fp, SerialHex: fp[32:], Status: store.CertActive}}
	}
	return store.SeedUnit{State: u, Steps: recs}, nil
}
