package agent

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm"
	agentv1 "github.com/devid-station/devid/proto/agent/v1"
)

// TestLDevIDKeyFile checks the agent's LDevID key file on the simulator: a created LDevID is
// written as a TSS2 PRIVATE KEY PEM of that key (0600); asked again, the existing key is
// accepted only while the file holds it; an IDevID writes nothing.
func TestLDevIDKeyFile(t *testing.T) {
	sim := needSim(t)
	root := t.TempDir()
	const handle, other, idevid = 0x81020042, 0x81020043, 0x81020041
	t.Cleanup(func() {
		for _, h := range []uint32{handle, other, idevid} {
			if _, err := sim.Evict(h, tpm.Owner); err != nil {
				t.Errorf("evicting %#x: %v", h, err)
			}
		}
	})
	d := &dispatcher{tpm: sim, files: &fileRoots{roots: []string{root}}, keyFile: filepath.Join(root, "devid", "ldevid.tss2.pem"),
		maxBytes: 64 << 10, log: slog.New(slog.DiscardHandler)}
	create := func(role agentv1.KeyRole, h uint32) (*agentv1.CreateKeyResult, error) {
		return d.createKey(&agentv1.CreateKeyRequest{Role: role, Algorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, Handle: h})
	}

	r, err := create(agentv1.KeyRole_KEY_ROLE_LDEVID, handle)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(d.keyFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi)
	}
	data, _ := os.ReadFile(d.keyFile)
	parent, pub, err := tpm.ParseTSS2PrivateKeyPEM(data)
	if err != nil || parent != tpm.SRKHandleECC || !bytes.Equal(pub, r.GetPublicArea()) {
		t.Fatalf("key file: parent %#x, same public %v, %v", parent, bytes.Equal(pub, r.GetPublicArea()), err)
	}

	if r, err := create(agentv1.KeyRole_KEY_ROLE_LDEVID, handle); err != nil || !r.GetExisted() {
		t.Errorf("existing key with its file: existed %v, %v", r.GetExisted(), err)
	}
	// Another LDevID overwrites the file: it no longer holds the key at handle.
	if _, err := create(agentv1.KeyRole_KEY_ROLE_LDEVID, other); err != nil {
		t.Fatal(err)
	}
	if _, err := create(agentv1.KeyRole_KEY_ROLE_LDEVID, handle); err == nil || !strings.Contains(err.Error(), "another key") {
		t.Errorf("existing key, file of another key: %v", err)
	}
	if err := os.WriteFile(d.keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := create(agentv1.KeyRole_KEY_ROLE_LDEVID, handle); err == nil || !strings.Contains(err.Error(), "TSS2") {
		t.Errorf("existing key, file of no key: %v", err)
	}
	if err := os.Remove(d.keyFile); err != nil {
		t.Fatal(err)
	}
	if _, err := create(agentv1.KeyRole_KEY_ROLE_LDEVID, handle); err == nil || !strings.Contains(err.Error(), "only in this file") {
		t.Errorf("existing key, file gone: %v", err)
	}

	if _, err := create(agentv1.KeyRole_KEY_ROLE_IDEVID, idevid); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.keyFile); !os.IsNotExist(err) {
		t.Errorf("an IDevID wrote the LDevID key file: %v", err)
	}
}
