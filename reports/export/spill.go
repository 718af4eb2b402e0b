package export

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
)

// StreamSink is a Sink that also takes a file as a reader of known size: Write hands it
// audit.jsonl that way, from the temporary file it spilled the records to, so that neither
// Write nor the sink holds the largest file in memory. A Sink that is not a StreamSink gets
// audit.jsonl read into memory (a Bundle holds it anyway).
type StreamSink interface {
	Sink
	// PutStream writes one file of size bytes read from r, which holds exactly that many.
	PutStream(name string, size int64, r io.Reader) error
}

// spillFile is the temporary file audit.jsonl goes to while Write builds the rest.
type spillFile struct {
	f    *os.File
	w    *bufio.Writer
	name string
}

// newSpill creates the spill file in dir (os.TempDir() when empty), mode 0600. Where the
// system allows it the name is removed at once, so that not even a crash leaves the file
// behind; remove removes it otherwise.
func newSpill(dir string) (*spillFile, error) {
	f, err := os.CreateTemp(dir, ".devid-export-audit-*.jsonl")
	if err != nil {
		return nil, fmt.Errorf("export: spilling %s: %w", AuditFile, err)
	}
	s := &spillFile{f: f, w: bufio.NewWriterSize(f, 1<<20), name: f.Name()}
	if os.Remove(s.name) == nil {
		s.name = ""
	}
	return s, nil
}

// flush writes what the spill file's buffer holds.
func (s *spillFile) flush() error {
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("export: spilling %s: %w", AuditFile, err)
	}
	return nil
}

// putTo hands the spilled file, size bytes, to sink as name: as a stream to a StreamSink,
// read whole for another.
func (s *spillFile) putTo(sink Sink, name string, size int64) error {
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	r := io.LimitReader(s.f, size)
	if ss, ok := sink.(StreamSink); ok {
		return ss.PutStream(name, size, r)
	}
	var buf bytes.Buffer
	buf.Grow(int(size))
	if _, err := buf.ReadFrom(r); err != nil {
		return err
	}
	if int64(buf.Len()) != size {
		return fmt.Errorf("the spilled file holds %d bytes, not %d", buf.Len(), size)
	}
	return sink.Put(name, buf.Bytes())
}

// remove closes the spill file and removes it if its name is still there.
func (s *spillFile) remove() {
	_ = s.f.Close()
	if s.name != "" {
		_ = os.Remove(s.name)
	}
}
