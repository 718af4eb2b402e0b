package export

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"
)

// A bundle is a folder or one archive holding the same files: an uncompressed tar (POSIX
// ustar, or PAX for long names) of regular files only, manifest.json last. The archive is
// written in one pass (no file created a unit) and read in one (Verify of a file).

// TarWriter writes a bundle as one tar archive: a Sink of Write.
type TarWriter struct {
	buf   *bufio.Writer
	tw    *tar.Writer
	mtime time.Time
}

// NewTarWriter returns a TarWriter writing to w. Close ends the archive.
func NewTarWriter(w io.Writer) *TarWriter {
	buf := bufio.NewWriterSize(w, 1<<20)
	return &TarWriter{buf: buf, tw: tar.NewWriter(buf), mtime: time.Now().UTC().Truncate(time.Second)}
}

// Put writes one file (0644: a bundle holds no secret).
func (t *TarWriter) Put(name string, parts ...[]byte) error {
	if err := checkName(name); err != nil {
		return err
	}
	size := 0
	for _, p := range parts {
		size += len(p)
	}
	if err := t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(size), Mode: 0o644, ModTime: t.mtime}); err != nil {
		return fmt.Errorf("export: archive: %w", err)
	}
	for _, p := range parts {
		if _, err := t.tw.Write(p); err != nil {
			return fmt.Errorf("export: archive: %w", err)
		}
	}
	return nil
}

// Create begins one file of size bytes (0644) and returns where its bytes go: exactly size of
// them, before the next file. A file streamed into the archive is never held whole.
func (t *TarWriter) Create(name string, size int64) (io.Writer, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if err := t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: t.mtime}); err != nil {
		return nil, fmt.Errorf("export: archive: %w", err)
	}
	return archiveFile{t.tw}, nil
}

// archiveFile is a file Create began.
type archiveFile struct{ tw *tar.Writer }

func (f archiveFile) Write(p []byte) (int, error) {
	n, err := f.tw.Write(p)
	if err != nil {
		err = fmt.Errorf("export: archive: %w", err)
	}
	return n, err
}

// PutStream writes one file of size bytes read from r: TarWriter is a StreamSink.
func (t *TarWriter) PutStream(name string, size int64, r io.Reader) error {
	w, err := t.Create(name, size)
	if err != nil {
		return err
	}
	n, err := io.CopyBuffer(w, r, make([]byte, 256<<10))
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("export: archive: %s: %d bytes, want %d", name, n, size)
	}
	return nil
}

// Close writes the end of the archive and flushes it; it does not close the writer beneath.
func (t *TarWriter) Close() error {
	if err := t.tw.Close(); err != nil {
		return fmt.Errorf("export: archive: %w", err)
	}
	if err := t.buf.Flush(); err != nil {
		return fmt.Errorf("export: archive: %w", err)
	}
	return nil
}

// checkName checks that a bundle file name is a clean relative slash path that stays inside
// the bundle.
func checkName(name string) error {
	if !fs.ValidPath(name) || name == "." {
		return fmt.Errorf("export: file name %q is not a local path", name)
	}
	return nil
}

// readTar reads every file of a bundle archive of size bytes. Problems (an entry that is not a
// regular file, a name that leaves the bundle, a name twice) are reported through fail and the
// entry skipped; an archive that does not read stops there, keeping what came before.
func readTar(r io.Reader, size int64, fail func(string, ...any)) map[string][]byte {
	files := map[string][]byte{}
	tr := tar.NewReader(bufio.NewReaderSize(r, 1<<20))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			fail("archive: %v", err)
			return files
		}
		switch nameErr := checkName(h.Name); {
		case h.Typeflag == tar.TypeDir:
			continue // a folder of the bundle: its files come as entries of their own
		case h.Typeflag != tar.TypeReg:
			fail("%s: not a regular file in the archive", h.Name)
			continue
		case nameErr != nil:
			fail("%s: the name leaves the bundle", h.Name)
			continue
		case files[h.Name] != nil:
			fail("%s: twice in the archive", h.Name)
			continue
		}
		// An entry cannot be larger than the archive: a forged size allocates no more.
		if h.Size < 0 || h.Size > size {
			fail("%s: %d bytes, larger than the archive", h.Name, h.Size)
			return files
		}
		data := make([]byte, h.Size)
		if _, err := io.ReadFull(tr, data); err != nil {
			fail("%s: archive: %v", h.Name, err)
			return files
		}
		files[h.Name] = data
	}
}
