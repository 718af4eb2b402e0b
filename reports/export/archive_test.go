package export_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/devid-station/devid/reports/export"
)

// entry is one tar entry of a hand-made archive.
type entry struct {
	name string
	data []byte
	kind byte
}

// archiveOf reads the archive at p.
func archiveOf(t *testing.T, p string) []entry {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []entry
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{h.Name, data, h.Typeflag})
	}
}

// writeArchive writes entries as a tar file and returns its path.
func writeArchive(t *testing.T, entries []entry) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.kind, Mode: 0o644, Size: int64(len(e.data))}
		if e.kind == tar.TypeSymlink {
			h.Linkname, h.Size = "/etc/passwd", 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.kind == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "bundle.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestArchive writes the WO-1 bundle as one archive, checks that it holds the folder's files
// (manifest.json last) and verifies, and that tampering inside it fails naming the file.
func TestArchive(t *testing.T) {
	l := newLine(t)
	p := filepath.Join(t.TempDir(), "bundle.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	tw := export.NewTarWriter(f)
	body, err := export.Write(context.Background(), l.st, export.Selection{WorkOrder: "WO-1"}, export.Options{Version: "v-test"}, tw)
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	rep := export.Verify(p, l.roots(t), l.key.Public())
	if !rep.OK() || len(rep.Units) != 3 {
		t.Fatalf("intact archive fails:\n%s", rep)
	}
	entries := archiveOf(t, p)
	if len(entries) != len(body.Files)+1 || entries[len(entries)-1].name != export.ManifestFile {
		t.Fatalf("%d entries, the manifest lists %d files (then manifest.json last)", len(entries), len(body.Files))
	}
	for i, e := range entries[:len(entries)-1] {
		if e.name != body.Files[i].Path || e.kind != tar.TypeReg {
			t.Errorf("entry %d is %q (type %c), the manifest lists %q", i, e.name, e.kind, body.Files[i].Path)
		}
		if strings.HasPrefix(e.name, "travelers/") && !bytes.Equal(e.data, read(t, l.dir, e.name)) {
			t.Errorf("%s differs from the folder bundle's", e.name)
		}
	}
	traveler := body.Units[0].Traveler
	with := func(edit func([]entry) []entry) []entry {
		return edit(append([]entry(nil), entries...))
	}
	cases := []struct {
		name    string
		entries []entry
		want    []string
	}{
		{"traveler byte", with(func(es []entry) []entry {
			for i := range es {
				if es[i].name == traveler {
					es[i].data = bytes.Replace(es[i].data, []byte(`"result": "done"`), []byte(`"result": "fail"`), 1)
				}
			}
			return es
		}), []string{traveler + ": SHA-256", traveler + `: result "fail", audit.jsonl record`}},
		{"file twice", with(func(es []entry) []entry { return append([]entry{{traveler, []byte("{}"), tar.TypeReg}}, es...) }),
			[]string{traveler + ": twice in the archive"}},
		{"file missing", with(func(es []entry) []entry {
			return slices.DeleteFunc(es, func(e entry) bool { return e.name == traveler })
		}), []string{traveler + ": not in the archive"}},
		{"file added", with(func(es []entry) []entry { return append(es, entry{"extra.txt", []byte("x"), tar.TypeReg}) }),
			[]string{"extra.txt: not listed in the manifest"}},
		{"link", with(func(es []entry) []entry { return append(es, entry{"certificates/link.pem", nil, tar.TypeSymlink}) }),
			[]string{"certificates/link.pem: not a regular file in the archive"}},
		{"name leaving the bundle", with(func(es []entry) []entry { return append(es, entry{"../x", []byte("x"), tar.TypeReg}) }),
			[]string{"../x: the name leaves the bundle"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep := export.Verify(writeArchive(t, c.entries), l.roots(t), l.key.Public())
			out := rep.String()
			if rep.OK() {
				t.Fatalf("tampered archive passes:\n%s", out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("report lacks %q:\n%s", w, out)
				}
			}
		})
	}
	t.Run("truncated", func(t *testing.T) {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		q := filepath.Join(t.TempDir(), "cut.tar")
		if err := os.WriteFile(q, data[:len(data)/2], 0o644); err != nil {
			t.Fatal(err)
		}
		// The file cut short names itself: its data ends early, or its size exceeds what is left.
		out := export.Verify(q, l.roots(t), l.key.Public()).String()
		if !strings.HasSuffix(out, "FAIL\n") || !strings.Contains(out, ": archive: unexpected EOF") && !strings.Contains(out, "bytes, larger than the archive") {
			t.Errorf("a truncated archive:\n%s", out)
		}
	})
}
