package export_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/devid-station/devid/reports/export"
)

// failingSink is a TarWriter that fails at the file named fail, as Put or PutStream (a full
// disk, a client gone), and reports the files in dir, the spill folder, when audit.jsonl comes.
type failingSink struct {
	*export.TarWriter
	fail string
	dir  string
	seen []os.FileInfo // what dir held when audit.jsonl came
}

var errSink = errors.New("the sink refuses")

func (s *failingSink) Put(name string, parts ...[]byte) error {
	if name == s.fail {
		return errSink
	}
	return s.TarWriter.Put(name, parts...)
}

func (s *failingSink) PutStream(name string, size int64, r io.Reader) error {
	entries, _ := os.ReadDir(s.dir)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			s.seen = append(s.seen, fi)
		}
	}
	if name == s.fail {
		return errSink
	}
	return s.TarWriter.PutStream(name, size, r)
}

// TestSpill checks that the file Write spills audit.jsonl to is private while it lives and gone
// once Write returns, whether it succeeded, a sink failed before or at audit.jsonl, or the
// context was cancelled; and that the archive written from the spilled file (a StreamSink)
// holds byte for byte the files of the bundle built in memory (Build), with the same listing.
func TestSpill(t *testing.T) {
	l := newLine(t)
	ctx := context.Background()
	sel := export.Selection{WorkOrder: "WO-1"}
	mem, err := export.Build(ctx, l.st, sel, export.Options{Version: "v-test", TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	for _, c := range []struct {
		name, fail string
		ctx        context.Context
	}{{"success", "", ctx}, {"sink fails at a traveler", mem.Body.Units[0].Traveler, ctx},
		{"sink fails at audit.jsonl", export.AuditFile, ctx}, {"sink fails at the manifest", export.ManifestFile, ctx},
		{"cancelled", "", cancelled}} {
		t.Run(c.name, func(t *testing.T) {
			spill := t.TempDir()
			var archive bytes.Buffer
			sink := &failingSink{TarWriter: export.NewTarWriter(&archive), fail: c.fail, dir: spill}
			body, err := export.Write(c.ctx, l.st, sel, export.Options{Version: "v-test", TempDir: spill}, sink)
			if entries, _ := os.ReadDir(spill); len(entries) > 0 {
				t.Errorf("%d files left in the spill folder, %s first", len(entries), entries[0].Name())
			}
			for _, fi := range sink.seen {
				if fi.Mode().Perm() != 0o600 {
					t.Errorf("spill file %s has mode %v, want 0600", fi.Name(), fi.Mode().Perm())
				}
			}
			if c.fail != "" || c.ctx != ctx {
				if err == nil {
					t.Fatal("Write succeeded")
				}
				if c.fail != "" && !errors.Is(err, errSink) {
					t.Errorf("error %v, want the sink's", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := sink.Close(); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(body.Files, mem.Body.Files) || !reflect.DeepEqual(body.Audit, mem.Body.Audit) {
				t.Error("the archive's listing differs from the bundle built in memory")
			}
			tr := tar.NewReader(bytes.NewReader(archive.Bytes()))
			i := 0
			for ; ; i++ {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				data, err := io.ReadAll(tr)
				if err != nil {
					t.Fatal(err)
				}
				if i >= len(mem.Files) || h.Name != mem.Files[i].Path {
					t.Fatalf("entry %d is %s, not the in-memory bundle's", i, h.Name)
				}
				if h.Name == export.ManifestFile {
					// Its creation time differs: the signed bodies must agree otherwise.
					var got, want export.Manifest
					var gotBody, wantBody export.Body
					if json.Unmarshal(data, &got) != nil || json.Unmarshal(mem.Files[i].Data, &want) != nil ||
						json.Unmarshal(got.Body, &gotBody) != nil || json.Unmarshal(want.Body, &wantBody) != nil {
						t.Fatal("manifest does not decode")
					}
					gotBody.CreatedAt = wantBody.CreatedAt
					if !reflect.DeepEqual(gotBody, wantBody) {
						t.Error("the manifest's body differs from the in-memory bundle's")
					}
					continue
				}
				if !bytes.Equal(data, mem.Files[i].Data) {
					t.Errorf("%s differs from the in-memory bundle's", h.Name)
				}
			}
			if i != len(mem.Files) {
				t.Errorf("%d entries, the in-memory bundle has %d files", i, len(mem.Files))
			}
			p := filepath.Join(t.TempDir(), "bundle.tar")
			if err := os.WriteFile(p, archive.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			if rep := export.Verify(p, l.roots(t), l.key.Public()); !rep.OK() {
				t.Errorf("the archive fails:\n%s", rep)
			}
		})
	}
}

// TestVerifyReadsEveryFile checks that the files no unit check reads (here every unit's, the
// audit records failing) are still hashed, and that the files' problems come first in the
// report, in the manifest's order, before those of the audit records.
func TestVerifyReadsEveryFile(t *testing.T) {
	l := newLine(t)
	d := copyDir(t, l.dir)
	tr, cert := l.body.Units[0].Traveler, l.body.Units[1].Certificates[0]
	for _, name := range []string{tr, cert} {
		data := read(t, d, name)
		data[len(data)/2] ^= 1
		write(t, d, name, data)
	}
	audit := read(t, d, export.AuditFile)
	write(t, d, export.AuditFile, audit[:bytes.LastIndexByte(audit[:len(audit)-1], '\n')+1])
	rep := export.Verify(d, l.roots(t), l.key.Public())
	var order []string
	for _, p := range rep.Problems {
		for _, name := range []string{tr, cert, export.AuditFile} {
			if len(p) > len(name) && p[:len(name)+1] == name+":" {
				order = append(order, name)
			}
		}
	}
	if len(order) < 3 || order[0] != tr || order[1] != cert || order[2] != export.AuditFile {
		t.Errorf("problems name %v, want %s, %s, then %s:\n%s", order, tr, cert, export.AuditFile, rep)
	}
}
