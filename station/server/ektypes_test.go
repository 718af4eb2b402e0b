package server

import (
	"context"
	"slices"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/device-agent/tpm/tpmtest"
	"github.com/devid-station/devid/fixture/tpmvendor"
	"github.com/devid-station/devid/reports/traveler"
	"github.com/devid-station/devid/station/store"
)

// TestEKTypes provisions units whose TPMs hold the TCG high-range EKs (ECC P-384, template H-3,
// swtpm_setup's default ECC EK; RSA-3072, template H-6) through the real agent and station, with
// the default EK preferences. The traveler names every EK type the TPM holds and the one used.
// RSA-3072 runs on swtpm: the in-process simulator is built without 3072-bit RSA.
func TestEKTypes(t *testing.T) {
	tests := []struct {
		name     string
		eks      []tpm.Algorithm
		wantHeld []string
		wantUsed string
		swtpm    bool
	}{
		{"ecc p-384 beside rsa-2048", []tpm.Algorithm{tpm.RSA2048, tpm.ECCP384}, []string{"RSA-2048", "ECC-P384"}, "ECC-P384", false},
		{"ecc p-384 on swtpm", []tpm.Algorithm{tpm.ECCP384}, []string{"ECC-P384"}, "ECC-P384", true},
		{"rsa-3072 on swtpm", []tpm.Algorithm{tpm.RSA3072}, []string{"RSA-3072"}, "RSA-3072", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newTestLine(t, lineOptions{})
			l.workOrder("WO-1", "SN-0001")
			var sim *tpm.TPM
			if tc.swtpm {
				spec, _, _ := tpmtest.StartSWTPM(t)
				var err error
				if sim, err = tpm.Open(spec); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { sim.Close() })
				if _, err := tpmvendor.Manufacture(sim, l.pki.EKIssuing, tpmvendor.Options{Algorithms: tc.eks}); err != nil {
					t.Fatal(err)
				}
			} else {
				sim = l.manufacture(nil, tc.eks...)
			}
			if v := l.runUnit(context.Background(), "SN-0001", sim); !v.Passed {
				t.Fatalf("verdict %+v", v)
			}
			if u := l.unit("SN-0001"); u.Status != store.StatusDone {
				t.Fatalf("unit %s (%s %s)", u.Status, u.ErrorCode, u.ErrorMessage)
			}
			rec, err := traveler.Build(context.Background(), l.srv.Store(), "SN-0001")
			if err != nil {
				t.Fatal(err)
			}
			if rec.TPM == nil || !slices.Equal(rec.TPM.EKsHeld, tc.wantHeld) || rec.TPM.EKUsed != tc.wantUsed {
				t.Fatalf("traveler TPM %+v, want EKs held %v, used %s", rec.TPM, tc.wantHeld, tc.wantUsed)
			}
		})
	}
}
