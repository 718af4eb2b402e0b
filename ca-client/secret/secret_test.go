package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const value = "hunter2-Zq81"

// holder has a Secret in an exported and an unexported field, as configs do.
type holder struct {
	Name     string
	Password Secret
	hidden   Secret
	Ptr      *Secret
}

func TestNeverPrinted(t *testing.T) {
	s := New(value)
	if s.Reveal() != value || s.IsZero() || !(Secret{}).IsZero() || (Secret{}).Reveal() != "" {
		t.Fatal("Reveal/IsZero do not round-trip")
	}
	h := holder{Name: "ca", Password: s, hidden: s, Ptr: &s}
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3s", "%T"} {
		outs = append(outs, fmt.Sprintf(verb, s), fmt.Sprintf(verb, h), fmt.Sprintf(verb, &h), fmt.Sprintf(verb, []Secret{s}))
	}
	outs = append(outs, fmt.Sprint(s, h), fmt.Sprintln(h))
	j, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(j))
	var logBuf bytes.Buffer
	for _, hnd := range []slog.Handler{slog.NewJSONHandler(&logBuf, nil), slog.NewTextHandler(&logBuf, nil)} {
		slog.New(hnd).Info("config", "secret", s, "holder", h)
	}
	outs = append(outs, logBuf.String())
	for _, out := range outs {
		if strings.Contains(out, value) || strings.Contains(out, fmt.Sprintf("%x", value)) {
			t.Errorf("leaked: %s", out)
		}
	}
	if got := fmt.Sprint(s); got != Redacted {
		t.Errorf("Sprint = %q, want %q", got, Redacted)
	}
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	s, err := ReadFile(write("ok", value+"\r\n", 0o600))
	if err != nil || s.Reveal() != value {
		t.Fatalf("ReadFile = %v, %v", s, err)
	}
	if _, err := ReadFile(write("ro", value, 0o400)); err != nil {
		t.Errorf("mode 0400 refused: %v", err)
	}
	for _, tc := range []struct {
		path, want string
	}{
		{write("group", value, 0o640), "chmod 600"},
		{write("world", value, 0o604), "chmod 600"},
		{write("groupw", value, 0o620), "chmod 600"},
		{write("empty", "\n", 0o600), "empty"},
		{dir, "not a regular file"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		_, err := ReadFile(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), value) {
			t.Errorf("ReadFile(%s) = %v, want an error mentioning %q without the secret", filepath.Base(tc.path), err, tc.want)
		}
	}
}
