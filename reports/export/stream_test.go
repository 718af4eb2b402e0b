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
	"slices"
	"strings"
	"testing"

	"github.com/devid-station/devid/reports/export"
)

// failingSink is a TarWriter that fails at the file named fail, as Put or Stream (a full
// disk, a client gone).
type failingSink struct {
	*export.TarWriter
	fail string
}

var errSink = errors.New("the sink refuses")

func (s *failingSink) Put(name string, parts ...[]byte) error {
	if name == s.fail {
		return errSink
	}
	return s.TarWriter.Put(name, parts...)
}

func (s *failingSink) Stream(name string) (io.WriteCloser, error) {
	if name == s.fail {
		return nil, errSink
	}
	return s.TarWriter.Stream(name)
}

// TestStream checks that the archive Write streams audit.jsonl into (a StreamSink) holds byte
// for byte the files of the bundle built in memory (Build), with the same listing, and that
// Write fails with the sink's error when the sink fails before, at or after audit.jsonl, or
// when the context was cancelled.
func TestStream(t *testing.T) {
	l := newLine(t)
	ctx := context.Background()
	sel := export.Selection{WorkOrder: "WO-1"}
	mem, err := export.Build(ctx, l.st, sel, export.Options{Version: "v-test"})
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
			p := filepath.Join(t.TempDir(), "bundle.tar")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			sink := &failingSink{TarWriter: export.NewTarWriter(f), fail: c.fail}
			body, err := export.Write(c.ctx, l.st, sel, export.Options{Version: "v-test"}, sink)
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
			archive, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			tr := tar.NewReader(bytes.NewReader(archive))
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
			if rep := export.Verify(p, l.roots(t), l.key.Public()); !rep.OK() {
				t.Errorf("the archive fails:\n%s", rep)
			}
		})
	}
}

// TestVerifyReadsEveryFile checks that the files no unit check reads (here every unit's, the
// audit records failing) are still hashed, and that the files' problems come first in the
// report, in the manifest's order (audit.jsonl first), before those of the audit records.
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
		for _, prefix := range []string{tr + ":", cert + ":", export.AuditFile + ":", export.AuditFile + " record"} {
			if strings.HasPrefix(p, prefix) {
				order = append(order, prefix)
			}
		}
	}
	want := []string{export.AuditFile + ":", tr + ":", cert + ":", export.AuditFile + " record"}
	if len(order) < len(want) || !slices.Equal(order[:len(want)], want) {
		t.Errorf("problems begin %q, want %q:\n%s", order, want, rep)
	}
}
