package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devid-station/devid/reports/export"
	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/store"
)

func TestRun(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	st, err := store.Open(filepath.Join(tmp, "station.db"), store.Options{StationID: "st-cmd",
		Checkpoints: store.CheckpointOptions{Signer: key, Interval: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	w := travelertest.WriteUnit(t, st, travelertest.Unit{Serial: "SN-1", WorkOrder: "WO-1", Profile: "default"})
	b, err := export.Build(context.Background(), st, export.Selection{Serials: []string{"SN-1"}}, export.Options{Version: "t"})
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(tmp, "bundle")
	if err := b.WriteDir(bundle); err != nil {
		t.Fatal(err)
	}
	// The chains end in each unit's CA (travelertest): the auditor's roots.
	pemFile := filepath.Join(bundle, filepath.FromSlash(b.Body.Units[0].Certificates[0]))
	data, err := os.ReadFile(pemFile)
	if err != nil {
		t.Fatal(err)
	}
	_, rest := pem.Decode(data)
	roots := filepath.Join(tmp, "roots.pem")
	keyFile := filepath.Join(tmp, "station-key.pem")
	pub, err := export.PublicKeyPEM(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(roots, rest, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-bundle", bundle, "-roots", roots, "-station-key", keyFile}

	var out, errb bytes.Buffer
	if code := run(args, &out, &errb); code != 0 || !strings.Contains(out.String(), "PASS SN-1") {
		t.Fatalf("intact bundle: exit %d\n%s%s", code, out.String(), errb.String())
	}
	// The same bundle as one archive.
	archive := filepath.Join(tmp, "bundle.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	tw := export.NewTarWriter(f)
	for _, file := range b.Files {
		if err := tw.Put(file.Path, file.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out.Reset()
	if code := run([]string{"-bundle", archive, "-roots", roots, "-station-key", keyFile}, &out, &errb); code != 0 || !strings.Contains(out.String(), "PASS SN-1") {
		t.Fatalf("intact archive: exit %d\n%s%s", code, out.String(), errb.String())
	}
	// With the EK roots the EK certificate is checked too; with a stranger's it fails.
	ekRoots, stranger := filepath.Join(tmp, "ek-roots.pem"), filepath.Join(tmp, "stranger.pem")
	if err := os.WriteFile(ekRoots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: w.EKRoot.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stranger, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: w.DevIDRoot.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run(append(args, "-ek-roots", ekRoots), &out, &errb); code != 0 {
		t.Fatalf("with the EK roots: exit %d\n%s%s", code, out.String(), errb.String())
	}
	out.Reset()
	if code := run(append(args, "-ek-roots", stranger), &out, &errb); code != 1 || !strings.Contains(out.String(), "does not chain to the given EK roots") {
		t.Fatalf("with another EK root: exit %d\n%s", code, out.String())
	}
	data[len(data)/2] ^= 1
	if err := os.WriteFile(pemFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run(args, &out, &errb); code != 1 || !strings.Contains(out.String(), "FAIL SN-1") {
		t.Fatalf("tampered bundle: exit %d\n%s", code, out.String())
	}
	if code := run([]string{"-bundle", bundle}, &out, &errb); code != 2 {
		t.Errorf("missing flags: exit %d, want 2", code)
	}
	manifest := filepath.Join(bundle, export.ManifestFile)
	if code := run([]string{"-bundle", bundle, "-roots", roots, "-station-key", manifest}, &out, &errb); code != 2 {
		t.Errorf("a key file without PEM: exit %d, want 2", code)
	}
}
