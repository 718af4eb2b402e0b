package export

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// A bundle is a folder or one archive holding the same files: an uncompressed tar (POSIX
// ustar, or PAX for long names) of regular files only, manifest.json last. The archive is
// written in one pass (no file created a unit) and read in one (Verify of a file).

// TarWriter writes a bundle as one tar archive: a StreamSink of Write.
type TarWriter struct {
	f     *os.File
	base  int64       // f's offset when the archive began
	out   countWriter // f, counting what reached it
	buf   *bufio.Writer
	tw    *tar.Writer
	mtime time.Time
}

// NewTarWriter returns a TarWriter writing to f from its current offset. Close ends the
// archive. A file streamed into the archive (Stream) needs f to take WriteAt there: a regular
// file.
func NewTarWriter(f *os.File) *TarWriter {
	t := &TarWriter{f: f, out: countWriter{w: f}, mtime: time.Now().UTC().Truncate(time.Second)}
	t.base, _ = f.Seek(0, io.SeekCurrent) // a pipe: Stream fails at WriteAt
	t.buf = bufio.NewWriterSize(&t.out, 1<<20)
	t.tw = tar.NewWriter(t.buf)
	return t
}

// Put writes one file (0644: a bundle holds no secret).
func (t *TarWriter) Put(name string, parts ...[]byte) error {
	size := 0
	for _, p := range parts {
		size += len(p)
	}
	w, err := t.Create(name, int64(size))
	if err != nil {
		return err
	}
	for _, p := range parts {
		if _, err := w.Write(p); err != nil {
			return err
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
	if err := t.tw.WriteHeader(t.header(name, size)); err != nil {
		return nil, fmt.Errorf("export: archive: %w", err)
	}
	return archiveFile{t.tw}, nil
}

// header is the tar header of a bundle file of size bytes: POSIX ustar (PAX for a long name),
// GNU's numbers for a file of 8 GiB or more.
func (t *TarWriter) header(name string, size int64) *tar.Header {
	h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: t.mtime}
	if size >= 1<<33 {
		h.Format = tar.FormatGNU
	}
	return h
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

// Stream begins one file whose size is known once its bytes are written (0644) and returns
// where they go; Close ends it. Until then no other file begins. The file's header is written
// first with size 0 and rewritten in place by Close: a name of up to 100 bytes, so that the
// header is one block whatever the size.
func (t *TarWriter) Stream(name string) (io.WriteCloser, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	hdr, err := t.block(name, 0)
	if err != nil {
		return nil, err
	}
	if err := t.tw.Flush(); err != nil { // the file before, padded
		return nil, fmt.Errorf("export: archive: %w", err)
	}
	s := &tarStream{t: t, name: name, off: t.base + t.out.n + int64(t.buf.Buffered())}
	if _, err := t.buf.Write(hdr); err != nil {
		return nil, fmt.Errorf("export: archive: %w", err)
	}
	return s, nil
}

// block is the one-block header of a streamed file.
func (t *TarWriter) block(name string, size int64) ([]byte, error) {
	var b bytes.Buffer
	h := t.header(name, size)
	if h.Format == tar.FormatUnknown {
		h.Format = tar.FormatUSTAR
	}
	if err := tar.NewWriter(&b).WriteHeader(h); err != nil {
		return nil, fmt.Errorf("export: archive: %s: %w", name, err)
	}
	if b.Len() != blockSize {
		return nil, fmt.Errorf("export: archive: %s: the name is too long to stream", name)
	}
	return b.Bytes(), nil
}

// blockSize is a tar block's size.
const blockSize = 512

// tarStream is a file Stream began.
type tarStream struct {
	t      *TarWriter
	name   string
	off, n int64 // where its header is in f; how many bytes it holds
}

func (s *tarStream) Write(p []byte) (int, error) {
	n, err := s.t.buf.Write(p)
	s.n += int64(n)
	if err != nil {
		err = fmt.Errorf("export: archive: %w", err)
	}
	return n, err
}

// Close pads the file to a block and writes its header with its size.
func (s *tarStream) Close() error {
	hdr, err := s.t.block(s.name, s.n)
	if err != nil {
		return err
	}
	if _, err := s.t.buf.Write(make([]byte, -s.n&(blockSize-1))); err != nil {
		return fmt.Errorf("export: archive: %w", err)
	}
	if err := s.t.buf.Flush(); err != nil {
		return fmt.Errorf("export: archive: %w", err)
	}
	if _, err := s.t.f.WriteAt(hdr, s.off); err != nil {
		return fmt.Errorf("export: archive: %s: %w", s.name, err)
	}
	return nil
}

// countWriter counts what it writes to w.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
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
