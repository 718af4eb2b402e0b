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

// tarEntry is where a file's bytes are in an archive.
type tarEntry struct {
	off, size int64
}

// indexTar lists where each file of a bundle archive of size bytes lies, reading its headers
// only (the bytes of a file are skipped, not read). Problems (an entry that is not a regular
// file, a name that leaves the bundle, a name twice) are reported through fail and the entry
// skipped; an archive that does not read stops there, keeping what came before.
func indexTar(f io.ReadSeeker, size int64, fail func(string, ...any)) map[string]tarEntry {
	files := map[string]tarEntry{}
	r := &seekBuffer{f: f, br: bufio.NewReaderSize(f, 64<<10)}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			fail("archive: %v", err)
			return files
		}
		_, twice := files[h.Name]
		switch nameErr := checkName(h.Name); {
		case h.Typeflag == tar.TypeDir:
			continue // a folder of the bundle: its files come as entries of their own
		case h.Typeflag != tar.TypeReg:
			fail("%s: not a regular file in the archive", h.Name)
			continue
		case nameErr != nil:
			fail("%s: the name leaves the bundle", h.Name)
			continue
		case twice:
			fail("%s: twice in the archive", h.Name)
			continue
		}
		if h.Size < 0 || h.Size > size {
			fail("%s: %d bytes, larger than the archive", h.Name, h.Size)
			return files
		}
		// Next has read the header: the file's bytes start here.
		if r.pos+h.Size > size {
			fail("%s: archive: %v", h.Name, io.ErrUnexpectedEOF)
			return files
		}
		files[h.Name] = tarEntry{off: r.pos, size: h.Size}
	}
}

// seekBuffer reads f through a buffer and knows its position; archive/tar skips a file's
// bytes by seeking it (within the buffer when they are there).
type seekBuffer struct {
	f   io.ReadSeeker
	br  *bufio.Reader
	pos int64
}

func (s *seekBuffer) Read(p []byte) (int, error) {
	n, err := s.br.Read(p)
	s.pos += int64(n)
	return n, err
}

// Seek moves on from the current position only (what archive/tar asks).
func (s *seekBuffer) Seek(off int64, whence int) (int64, error) {
	switch {
	case whence != io.SeekCurrent || off < 0:
		return 0, errors.New("export: archive: seeking back")
	case off <= int64(s.br.Buffered()):
		n, err := s.br.Discard(int(off))
		s.pos += int64(n)
		return s.pos, err
	}
	if _, err := s.f.Seek(s.pos+off, io.SeekStart); err != nil {
		return 0, err
	}
	s.br.Reset(s.f)
	s.pos += off
	return s.pos, nil
}
