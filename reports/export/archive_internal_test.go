package export

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tarFile is a file of a test archive, put whole or streamed.
type tarFile struct {
	name   string
	data   []byte
	stream bool
}

// TestTarStream checks that a file streamed into an archive (Stream, its size unknown until
// Close) reads back with its bytes and size among files put whole, wherever the archive
// begins in its file and whatever the streamed file's size.
func TestTarStream(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef\n"), 1<<17) // beyond the 1 MiB buffer
	for _, c := range []struct {
		name   string
		prefix int // bytes in the file before the archive
		files  []tarFile
	}{
		{name: "between two files", files: []tarFile{{"a.json", []byte("abc"), false}, {"audit.jsonl", []byte(strings.Repeat("x", 1000)), true}, {"c/d.pem", []byte("pem"), false}}},
		{name: "empty, first", files: []tarFile{{"audit.jsonl", nil, true}, {"manifest.json", []byte("{}"), false}}},
		{name: "one block exactly, last", files: []tarFile{{"a", []byte("a"), false}, {"audit.jsonl", bytes.Repeat([]byte("y"), blockSize), true}}},
		{name: "larger than the buffer, after a prefix", prefix: 1000, files: []tarFile{{"a", []byte("a"), false}, {"audit.jsonl", big, true}, {"b", []byte("b"), false}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "a.tar")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write(make([]byte, c.prefix)); err != nil {
				t.Fatal(err)
			}
			tw := NewTarWriter(f)
			for _, fl := range c.files {
				if !fl.stream {
					if err := tw.Put(fl.name, fl.data); err != nil {
						t.Fatal(err)
					}
					continue
				}
				w, err := tw.Stream(fl.name)
				if err != nil {
					t.Fatal(err)
				}
				for rest := fl.data; len(rest) > 0; { // in uneven pieces
					n := min(len(rest), 777)
					if _, err := w.Write(rest[:n]); err != nil {
						t.Fatal(err)
					}
					rest = rest[n:]
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if err := tw.Close(); err != nil {
				t.Fatal(err)
			}
			archive, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			tr := tar.NewReader(bytes.NewReader(archive[c.prefix:]))
			for _, fl := range c.files {
				h, err := tr.Next()
				if err != nil {
					t.Fatalf("%s: %v", fl.name, err)
				}
				data, err := io.ReadAll(tr)
				if err != nil {
					t.Fatal(err)
				}
				if h.Name != fl.name || h.Size != int64(len(fl.data)) || !bytes.Equal(data, fl.data) {
					t.Errorf("entry %s of %d bytes, want %s of %d", h.Name, h.Size, fl.name, len(fl.data))
				}
			}
			if h, err := tr.Next(); err != io.EOF {
				t.Errorf("after the files: %v, %v; want the end of the archive", h, err)
			}
		})
	}
}

// TestTarStreamHeader checks the streamed file's one-block header: its size read back for a
// file beyond ustar's 8 GiB, and a name too long for one block refused.
func TestTarStreamHeader(t *testing.T) {
	tw := &TarWriter{}
	for _, size := range []int64{0, 1<<33 - 1, 1 << 33, 1 << 40} {
		b, err := tw.block(AuditFile, size)
		if err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		h, err := tar.NewReader(bytes.NewReader(b)).Next()
		if err != nil || h.Size != size || h.Name != AuditFile || len(b) != blockSize {
			t.Errorf("%d bytes: header of %d bytes reads %v, %v", size, len(b), h, err)
		}
	}
	if _, err := tw.block(strings.Repeat("a", 101), 1); err == nil {
		t.Error("a 101-byte name streamed")
	}
}

// TestTarStreamPipe checks that a file streamed into an archive that cannot be rewritten in
// place (a pipe) fails at Close instead of leaving a wrong size.
func TestTarStreamPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	go func() { _, _ = io.Copy(io.Discard, r) }()
	s, err := NewTarWriter(w).Stream(AuditFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("x\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err == nil {
		t.Error("Close succeeded on a pipe")
	}
}
