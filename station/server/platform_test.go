package server

import (
	"context"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/fixture/tpmvendor"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
	"github.com/google/go-tpm/tpm2/transport"
)

// disablePlatformHierarchy sends TPM2_HierarchyControl(TPM_RH_PLATFORM, enable
// TPM_RH_PLATFORM, NO) with an empty password, as firmware does after boot (go-tpm has no
// command struct for it).
func disablePlatformHierarchy(t *testing.T, tr transport.TPM) {
	t.Helper()
	cmd := []byte{
		0x80, 0x02, 0, 0, 0, 0, 0x00, 0x00, 0x01, 0x21, // TPM_ST_SESSIONS, size, TPM_CC_HierarchyControl
		0x40, 0x00, 0x00, 0x0C, // authHandle TPM_RH_PLATFORM
		0, 0, 0, 9, 0x40, 0x00, 0x00, 0x09, 0, 0, 0, 0, 0, // password session, empty
		0x40, 0x00, 0x00, 0x0C, 0x00, // enable TPM_RH_PLATFORM, state NO
	}
	binary.BigEndian.PutUint32(cmd[2:], uint32(len(cmd)))
	rsp, err := tr.Send(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if len(rsp) < 10 || binary.BigEndian.Uint32(rsp[6:]) != 0 {
		t.Fatalf("TPM2_HierarchyControl answered %x", rsp)
	}
}

// TestPlatformHierarchyDisabled runs units whose firmware disabled the platform hierarchy after
// the TPM vendor's manufacturing (TPM2_HierarchyControl), through the real agent and station.
// A profile with a platform-created IDevID NV index fails at once with its own code, before any
// key is created or certificate issued; a profile with an owner-created index provisions.
func TestPlatformHierarchyDisabled(t *testing.T) {
	tests := []struct {
		auth     string
		wantCode string
	}{
		{"platform", workflow.CodePlatformDisabled},
		{"owner", ""},
	}
	for _, tc := range tests {
		t.Run(tc.auth, func(t *testing.T) {
			l := newTestLine(t, lineOptions{})
			l.file.Profiles[0].IDevIDNV.Auth = tc.auth
			l.stop(true)
			l.start(nil)
			l.workOrder("WO-1", "SN-0001")

			tr, err := tpm.OpenTransport("simulator")
			if err != nil {
				t.Fatal(err)
			}
			sim := tpm.New(tr, "simulator")
			t.Cleanup(func() { sim.Close() })
			if _, err := tpmvendor.Manufacture(sim, l.pki.EKIssuing, tpmvendor.Options{Algorithms: []tpm.Algorithm{tpm.ECCP256}}); err != nil {
				t.Fatal(err)
			}
			disablePlatformHierarchy(t, tr)

			v := l.runUnit(context.Background(), "SN-0001", sim)
			u := l.unit("SN-0001")
			if tc.wantCode != "" {
				if v.Passed || v.Code != tc.wantCode || u.Status != store.StatusFailed || u.ErrorCode != tc.wantCode {
					t.Fatalf("verdict %+v, unit %s %s, want failed %s", v, u.Status, u.ErrorCode, tc.wantCode)
				}
				if n := len(l.ca.Ledger()); n != 0 || len(u.Certificates) != 0 {
					t.Fatalf("CA issued %d certificates, unit records %d: want none", n, len(u.Certificates))
				}
				info, err := sim.Info()
				if err != nil {
					t.Fatal(err)
				}
				if slices.Contains(info.PersistentHandles, 0x81020000) {
					t.Fatal("an IDevID key was created before the failure")
				}
				return
			}
			if !v.Passed || u.Status != store.StatusDone {
				t.Fatalf("verdict %+v, unit %s %s %s", v, u.Status, u.ErrorCode, u.ErrorMessage)
			}
			nv, err := sim.NVRead(0x01C90000)
			if err != nil {
				t.Fatal(err)
			}
			if nv.Attributes&tpm.NVPlatformCreate != 0 || nv.Attributes&tpm.NVOwnerWrite == 0 || nv.Attributes&tpm.NVWriteLocked == 0 {
				t.Fatalf("IDevID index attributes %#x: want owner-created, write-locked", nv.Attributes)
			}
		})
	}
}
