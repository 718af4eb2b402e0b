package agent

import (
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
)

// TestHelloAnnouncesFileRoots runs the agent against a stub station and reads the roots its
// Hello announces: the unit paths, cleaned, never the bench folder they map into.
func TestHelloAnnouncesFileRoots(t *testing.T) {
	sysroot := t.TempDir()
	tests := []struct {
		name    string
		roots   []string
		sysroot string
		want    []string
	}{
		{"no roots", nil, "", nil},
		{"roots cleaned", []string{"/etc/devid/", "/etc//aziot/."}, "", []string{"/etc/devid", "/etc/aziot"}},
		{"sysroot alone is the whole unit", nil, sysroot, []string{"/"}},
		{"roots below a sysroot stay unit paths", []string{"/etc/devid"}, sysroot, []string{"/etc/devid"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pki := newTestPKI(t)
			st := startStation(t, pki)
			cfg := testConfig(t, st, pki.pool)
			cfg.FileRoots, cfg.Sysroot = tc.roots, tc.sysroot
			startAgent(t, cfg, &fakeTPM{})
			s := st.next(t)
			defer s.close(nil)
			if got := s.hello.GetFileRoots(); !slices.Equal(got, tc.want) {
				t.Fatalf("hello file_roots = %q, want %q", got, tc.want)
			}
		})
	}
}

// sysrootDispatcher returns a dispatcher configured as Run configures it from roots and sysroot.
func sysrootDispatcher(t *testing.T, sysroot string, roots ...string) *dispatcher {
	t.Helper()
	s, err := Config{StationAddr: "s:1", StationCA: x509.NewCertPool(), FileRoots: roots, Sysroot: sysroot}.validate()
	if err != nil {
		t.Fatal(err)
	}
	return &dispatcher{tpm: &fakeTPM{}, files: &fileRoots{roots: s.roots, sysroot: s.sysroot}, maxBytes: 64 << 10, log: slog.New(slog.DiscardHandler)}
}

// TestSysrootFiles writes unit paths through a sysroot: they land below it, the roots are
// checked as unit paths, and a symlink leading off the sysroot is refused.
func TestSysrootFiles(t *testing.T) {
	t.Run("whole unit", func(t *testing.T) {
		sys := t.TempDir()
		d := sysrootDispatcher(t, sys)
		for _, p := range []string{"/etc/devid/ldevid.pem", "/etc/aziot/config.toml"} {
			if res := d.execute(writeCmd(p, []byte(p), 0o644)); res.GetError() != nil {
				t.Fatalf("write %s: %v", p, res.GetError())
			}
			if b, err := os.ReadFile(filepath.Join(sys, p)); err != nil || string(b) != p {
				t.Errorf("%s below the sysroot = %q, %v", p, b, err)
			}
			if res := d.execute(readCmd(p)); string(res.GetReadFile().GetContent()) != p {
				t.Errorf("read %s = %v", p, res)
			}
		}
		if res := d.execute(writeCmd("/", nil, 0)); res.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
			t.Errorf("write / = %v, want INVALID_ARGUMENT", res)
		}
	})
	t.Run("roots below the sysroot", func(t *testing.T) {
		sys := t.TempDir()
		d := sysrootDispatcher(t, sys, "/etc/devid")
		if err := d.files.makeRoots(); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(filepath.Join(sys, "etc/devid")); err != nil || !fi.IsDir() {
			t.Fatalf("root not created below the sysroot: %v", err)
		}
		if res := d.execute(writeCmd("/etc/devid/ldevid.pem", []byte("x"), 0o644)); res.GetError() != nil {
			t.Fatalf("write inside the root: %v", res.GetError())
		}
		for _, p := range []string{"/etc/aziot/config.toml", "/etc/devidX/ldevid.pem", filepath.Join(sys, "etc/devid/x")} {
			if res := d.execute(writeCmd(p, []byte("x"), 0o644)); res.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED {
				t.Errorf("write %s = %v, want PATH_NOT_ALLOWED", p, res)
			}
		}
		if _, err := os.Stat(filepath.Join(sys, "etc/aziot")); !os.IsNotExist(err) {
			t.Errorf("a refused write created a folder: %v", err)
		}
	})
	t.Run("symlink off the sysroot", func(t *testing.T) {
		sys, outside := t.TempDir(), t.TempDir()
		if err := os.Symlink(outside, filepath.Join(sys, "etc")); err != nil {
			t.Fatal(err)
		}
		err := sysrootDispatcher(t, sys, "/etc/devid").files.makeRoots()
		if !errors.Is(err, ErrPathNotAllowed) {
			t.Fatalf("creating a root through a symlink off the sysroot: %v, want PATH_NOT_ALLOWED", err)
		}
		if entries, _ := os.ReadDir(outside); len(entries) != 0 {
			t.Fatalf("created outside the sysroot: %v", entries)
		}
		if err := os.Mkdir(filepath.Join(outside, "devid"), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, roots := range [][]string{nil, {"/etc/devid"}} {
			d := sysrootDispatcher(t, sys, roots...)
			res := d.execute(writeCmd("/etc/devid/ldevid.pem", []byte("x"), 0o644))
			if res.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED {
				t.Errorf("roots %q: write through a symlink off the sysroot = %v, want PATH_NOT_ALLOWED", roots, res)
			}
		}
		if entries, _ := os.ReadDir(filepath.Join(outside, "devid")); len(entries) != 0 {
			t.Errorf("written outside the sysroot: %v", entries)
		}
	})
}

func TestSysrootValidate(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	mustWrite(t, file, nil)
	tests := []struct {
		name, sysroot, wantErr string
	}{
		{"relative", "unit", "not absolute"},
		{"missing", filepath.Join(dir, "missing"), "sysroot"},
		{"a file", file, "not a directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Config{StationAddr: "s:1", StationCA: x509.NewCertPool(), Sysroot: tc.sysroot}.validate()
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("validate() error = %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}
