package agent

import (
	"bytes"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
)

func writeCmd(p string, content []byte, mode uint32) *agentv1.Command {
	return &agentv1.Command{Id: 1, Op: &agentv1.Command_WriteFile{WriteFile: &agentv1.WriteFileRequest{Path: p, Content: content, Mode: mode}}}
}

func readCmd(p string) *agentv1.Command {
	return &agentv1.Command{Id: 2, Op: &agentv1.Command_ReadFile{ReadFile: &agentv1.ReadFileRequest{Path: p}}}
}

// mustWrite writes a file for a test.
func mustWrite(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// noTempFiles fails if a temporary file of the atomic write is left in dir.
func noTempFiles(t *testing.T, dir string) {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
	if err != nil || len(m) != 0 {
		t.Errorf("temporary files left in %s: %v %v", dir, m, err)
	}
}

func TestWriteAndReadFile(t *testing.T) {
	root := t.TempDir()
	d := newTestDispatcher(t, &fakeTPM{}, root)
	content := []byte("-----BEGIN CERTIFICATE-----\nldevid\n-----END CERTIFICATE-----\n")
	p := filepath.Join(root, "etc", "devid", "ldevid.pem") // parents created

	res := d.execute(writeCmd(p, content, 0o640))
	if res.GetError() != nil {
		t.Fatalf("write: %v", res.GetError())
	}
	sum := sha256.Sum256(content)
	if w := res.GetWriteFile(); !bytes.Equal(w.GetSha256(), sum[:]) || w.GetSize() != uint64(len(content)) {
		t.Errorf("write result = %x/%d, want %x/%d", w.GetSha256(), w.GetSize(), sum, len(content))
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("stat: %v %v, want mode 0640", fi, err)
	}
	if fi, err := os.Stat(filepath.Dir(p)); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("created parent: %v %v, want mode 0755", fi, err)
	}
	noTempFiles(t, filepath.Dir(p))

	res = d.execute(readCmd(p))
	if res.GetError() != nil {
		t.Fatalf("read: %v", res.GetError())
	}
	if r := res.GetReadFile(); !bytes.Equal(r.GetContent(), content) || r.GetMode() != 0o640 {
		t.Errorf("read = %q mode %#o, want %q mode 0640", r.GetContent(), r.GetMode(), content)
	}

	// Overwrite with default mode 0600, replacing the file atomically.
	res = d.execute(writeCmd(p, []byte("v2"), 0))
	if res.GetError() != nil {
		t.Fatalf("overwrite: %v", res.GetError())
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != "v2" {
		t.Errorf("after overwrite: %q %v", b, err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("default mode: %v %v, want 0600", fi, err)
	}
	noTempFiles(t, filepath.Dir(p))
}

func TestFileRootThroughSymlink(t *testing.T) {
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "root")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	d := newTestDispatcher(t, &fakeTPM{}, link)
	for _, p := range []string{filepath.Join(link, "a.txt"), filepath.Join(real, "b.txt")} {
		if res := d.execute(writeCmd(p, []byte("x"), 0o644)); res.GetError() != nil {
			t.Errorf("write %s: %v", p, res.GetError())
		}
	}
	for _, name := range []string{"a.txt", "b.txt"} {
		if _, err := os.Stat(filepath.Join(real, name)); err != nil {
			t.Errorf("%s not written below the resolved root: %v", name, err)
		}
	}
}

func TestFilePathErrors(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	mustWrite(t, filepath.Join(outside, "secret"), []byte("outside"))
	mustWrite(t, filepath.Join(root, "plain"), []byte("file"))
	if err := os.Mkdir(filepath.Join(root, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(root, "sub", "inner"), []byte("inner"))
	for _, l := range []struct{ target, name string }{
		{outside, "escape-dir"},
		{filepath.Join(outside, "secret"), "escape-file"},
		{filepath.Join(root, "sub"), "inside-dir"},
		{filepath.Join(root, "sub", "inner"), "inside-file"},
		{"../" + filepath.Base(outside), "relative-escape"},
	} {
		if err := os.Symlink(l.target, filepath.Join(root, l.name)); err != nil {
			t.Fatal(err)
		}
	}
	big := filepath.Join(root, "big")
	mustWrite(t, big, make([]byte, 70<<10))
	d := newTestDispatcher(t, &fakeTPM{}, root)

	tests := []struct {
		name string
		cmd  *agentv1.Command
		want agentv1.ErrorCode
	}{
		{"write relative path", writeCmd("etc/devid/x", nil, 0), agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED},
		{"write empty path", writeCmd("", nil, 0), agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED},
		{"write dotdot inside root", writeCmd(root+"/sub/../x", nil, 0), agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED},
		{"write dotdot escaping root", writeCmd(root+"/../x", nil, 0), agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED},
		{"write outside roots", writeCmd(filepath.Join(outside, "new"), nil, 0), agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED},
		{"write root prefix sibling", writeCmd(root+"-evil/x", nil, 0), agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED},
		{"write through symlinked dir escape", writeCmd(filepath.Join(root, "escape-dir", "new"), nil, 0), agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED},
		{"write through relative symlink escape", writeCmd(filepath.Join(root, "relative-escape", "new"), nil, 0), agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED},
		{"write creating below symlink escape", writeCmd(filepath.Join(root, "escape-dir", "a", "b"), nil, 0), agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED},
		{"write the root itself", writeCmd(root, nil, 0), agentv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
		{"write onto a directory", writeCmd(filepath.Join(root, "sub"), nil, 0), agentv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
		{"write below a regular file", writeCmd(filepath.Join(root, "plain", "x"), nil, 0), agentv1.ErrorCode_ERROR_CODE_IO},
		{"write mode with setuid", writeCmd(filepath.Join(root, "m"), nil, 0o4755), agentv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
		{"read outside roots", readCmd(filepath.Join(outside, "secret")), agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED},
		{"read symlink to outside file", readCmd(filepath.Join(root, "escape-file")), agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED},
		{"read through symlinked dir escape", readCmd(filepath.Join(root, "escape-dir", "secret")), agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED},
		{"read dotdot", readCmd(root + "/sub/../plain"), agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED},
		{"read missing file", readCmd(filepath.Join(root, "missing")), agentv1.ErrorCode_ERROR_CODE_NOT_FOUND},
		{"read missing directory", readCmd(filepath.Join(root, "nodir", "x")), agentv1.ErrorCode_ERROR_CODE_NOT_FOUND},
		{"read a directory", readCmd(filepath.Join(root, "sub")), agentv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
		{"read above the message bound", readCmd(big), agentv1.ErrorCode_ERROR_CODE_MESSAGE_TOO_LARGE},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := d.execute(tc.cmd)
			if res.GetError().GetCode() != tc.want || res.GetOp() != nil {
				t.Fatalf("result = %v, want %v", res, tc.want)
			}
		})
	}
	// Nothing was created outside the root, and the outside file is untouched.
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Errorf("outside directory changed: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(root, "nodir")); !os.IsNotExist(err) {
		t.Errorf("read created a directory: %v", err)
	}

	// Symlinks that stay inside the root are followed.
	for _, p := range []string{filepath.Join(root, "inside-file"), filepath.Join(root, "inside-dir", "inner")} {
		res := d.execute(readCmd(p))
		if res.GetError() != nil || string(res.GetReadFile().GetContent()) != "inner" {
			t.Errorf("read %s = %v", p, res)
		}
	}
}

func TestFileNoRoots(t *testing.T) {
	d := newTestDispatcher(t, &fakeTPM{})
	p := filepath.Join(t.TempDir(), "x")
	if res := d.execute(writeCmd(p, []byte("x"), 0)); res.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED {
		t.Fatalf("result = %v, want PATH_NOT_ALLOWED", res)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("file written without roots: %v", err)
	}
}

func TestFileMissingRoot(t *testing.T) {
	root := filepath.Join(t.TempDir(), "not-yet")
	d := newTestDispatcher(t, &fakeTPM{}, root)
	if res := d.execute(writeCmd(filepath.Join(root, "x"), []byte("x"), 0)); res.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("result = %v, want NOT_FOUND", res)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Errorf("the root itself was created: %v", err)
	}
}

func TestRemoveFile(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	d := newTestDispatcher(t, &fakeTPM{}, root)
	rm := func(p string) *agentv1.Result {
		return d.execute(&agentv1.Command{Id: 3, Op: &agentv1.Command_RemoveFile{RemoveFile: &agentv1.RemoveFileRequest{Path: p}}})
	}
	p := filepath.Join(root, "etc", "devid", "ldevid.pem")
	if res := d.execute(writeCmd(p, []byte("x"), 0o644)); res.GetError() != nil {
		t.Fatal(res.GetError())
	}
	if res := rm(p); res.GetError() != nil || !res.GetRemoveFile().GetExisted() {
		t.Fatalf("remove: %v", res)
	}
	if _, err := os.Lstat(p); !os.IsNotExist(err) {
		t.Fatalf("file still there: %v", err)
	}
	if res := rm(p); res.GetError() != nil || res.GetRemoveFile().GetExisted() {
		t.Errorf("removing an absent file: %v", res)
	}
	if res := rm(filepath.Join(root, "no", "such", "dir", "f")); res.GetError() != nil || res.GetRemoveFile().GetExisted() {
		t.Errorf("removing below an absent directory: %v", res)
	}
	victim := filepath.Join(outside, "keep")
	mustWrite(t, victim, []byte("keep"))
	if res := rm(victim); res.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED {
		t.Errorf("removing outside the roots: %v", res)
	}
	if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if res := rm(filepath.Join(root, "link", "keep")); res.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED {
		t.Errorf("removing through a symlink leading outside: %v", res)
	}
	if _, err := os.Stat(victim); err != nil {
		t.Errorf("a file outside the roots was removed: %v", err)
	}
	if res := rm(filepath.Join(root, "etc")); res.GetError().GetCode() != agentv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Errorf("removing a directory: %v", res)
	}
}
