package server

import (
	"context"
	"crypto"
	"crypto/x509/pkix"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devid-station/devid/device-agent/agent"
	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/station/workflow"
)

// effectCountingTPM counts the TPM commands that create or use a DevID key or write NV.
type effectCountingTPM struct {
	agent.TPM
	effects atomic.Int32
}

func (c *effectCountingTPM) CreateKey(req tpm.KeyRequest) (*tpm.Key, error) {
	c.effects.Add(1)
	return c.TPM.CreateKey(req)
}

func (c *effectCountingTPM) BuildCSR(h uint32, subject []byte, exts []pkix.Extension, s tpm.Scheme) ([]byte, error) {
	c.effects.Add(1)
	return c.TPM.BuildCSR(h, subject, exts, s)
}

func (c *effectCountingTPM) Sign(h uint32, digest []byte, hash crypto.Hash, s tpm.Scheme) ([]byte, error) {
	c.effects.Add(1)
	return c.TPM.Sign(h, digest, hash, s)
}

func (c *effectCountingTPM) NVWrite(req tpm.NVWriteRequest) (*tpm.NVWriteResult, error) {
	c.effects.Add(1)
	return c.TPM.NVWrite(req)
}

// TestFileRootsChecked provisions units whose profile writes absolute unit paths
// (/etc/devid, /etc/aziot), through a real agent and station: an agent whose announced roots
// miss a file is refused with FILE_ROOTS_UNSUITABLE before any key or certificate exists; an
// agent that maps the unit paths into a bench folder with a sysroot passes.
func TestFileRootsChecked(t *testing.T) {
	const (
		certPath       = "/etc/devid/ldevid.pem"
		onboardingPath = "/etc/aziot/config.toml"
	)
	tests := []struct {
		name    string
		roots   []string
		sysroot bool   // map the unit paths into the line's unit folder
		missed  string // a path the refusal names; "" when the unit passes
	}{
		{"bench folder announced as a root", []string{"<unit>"}, false, certPath},
		{"no roots announced", nil, false, certPath},
		{"roots miss the onboarding folder", []string{"/etc/devid"}, true, onboardingPath},
		{"sysroot alone", nil, true, ""},
		{"sysroot with a root per folder", []string{"/etc/devid", "/etc/aziot/"}, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newTestLine(t, lineOptions{})
			// The default profile's unit paths, not paths of this machine.
			l.stop(true)
			l.file.Profiles[0].LDevIDCertPath = certPath
			l.file.Profiles[0].Onboarding.Path = onboardingPath
			l.file.Profiles[0].Onboarding.TrustBundlePath = "/etc/aziot/est-root-ca.pem"
			l.file.Profiles[0].Onboarding.PINPath = "/etc/devid/pkcs11-pin"
			l.start(nil)
			l.workOrder("WO-1", "SN-0001")
			sim := &effectCountingTPM{TPM: l.manufacture(nil, tpm.ECCP256)}
			cfg := l.agentConfig("SN-0001")
			cfg.FileRoots = nil
			for _, r := range tc.roots {
				cfg.FileRoots = append(cfg.FileRoots, strings.ReplaceAll(r, "<unit>", l.unitRoot))
			}
			if tc.sysroot {
				cfg.Sysroot = l.unitRoot
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			v, err := agent.Run(ctx, cfg, sim)
			if err != nil {
				t.Fatal(err)
			}
			u := l.unit("SN-0001")

			if tc.missed == "" {
				if !v.Passed || len(u.Certificates) != 2 {
					t.Fatalf("verdict %+v, %d certificates; want a pass with both", v, len(u.Certificates))
				}
				for _, p := range []string{certPath, onboardingPath} {
					if _, err := os.Stat(filepath.Join(l.unitRoot, p)); err != nil {
						t.Errorf("%s not below the sysroot: %v", p, err)
					}
				}
				return
			}
			if v.Passed || v.Code != workflow.CodeFileRootsUnsuitable || !strings.Contains(v.Message, `"`+tc.missed+`"`) {
				t.Fatalf("verdict %+v, want %s naming %s", v, workflow.CodeFileRootsUnsuitable, tc.missed)
			}
			if u.ErrorCode != workflow.CodeFileRootsUnsuitable || u.CurrentStep != workflow.StepAuthorize {
				t.Errorf("unit recorded %s at step %s, want %s at %s", u.ErrorCode, u.CurrentStep, workflow.CodeFileRootsUnsuitable, workflow.StepAuthorize)
			}
			// Nothing was created: no key command reached the TPM, no key is persisted, no
			// certificate was issued or stored.
			if n := sim.effects.Load(); n != 0 {
				t.Errorf("%d key or NV commands reached the TPM", n)
			}
			info, err := sim.Info()
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range []uint32{l.file.Profiles[0].IDevID.Handle, l.file.Profiles[0].LDevID.Handle} {
				if slices.Contains(info.PersistentHandles, h) {
					t.Errorf("a key exists at %#x", h)
				}
			}
			if slices.Contains(info.NVIndices, l.file.Profiles[0].IDevIDNV.Index) {
				t.Error("the IDevID NV index exists")
			}
			if len(u.Keys) != 0 || len(u.Certificates) != 0 || len(l.ca.Ledger()) != 0 {
				t.Errorf("unit keys %v, %d certificates stored, %d issued; want none", u.Keys, len(u.Certificates), len(l.ca.Ledger()))
			}
			// The agent may have made its root folders below the sysroot, but no file.
			err = filepath.WalkDir(l.unitRoot, func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					t.Errorf("file written to the unit: %s", p)
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
