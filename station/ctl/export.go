package ctl

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/reports/export"
)

// exportCmd fetches a QA export into a new folder, or one archive when the name ends in .tar:
// export --work-order W | --serials a,b | --since T --until T, --out DIR|FILE.tar. The bundle
// lands in a temporary folder or file beside it, renamed once the whole bundle (manifest.json
// last) arrived.
func exportCmd(e *env, args []string) error {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	wo := fs.String("work-order", "", "")
	serials := fs.String("serials", "", "")
	since := fs.String("since", "", "")
	until := fs.String("until", "", "")
	out := fs.String("out", "", "")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if *out == "" {
		return usagef("export: --out DIR is required")
	}
	if _, err := os.Stat(*out); err == nil {
		return fmt.Errorf("export: %s exists", *out)
	}
	req := &stationv1.ExportBundleRequest{WorkOrder: *wo}
	if *serials != "" {
		req.Serials = strings.Split(*serials, ",")
	}
	for _, t := range []struct {
		flag string
		val  string
		to   **timestamppb.Timestamp
	}{{"since", *since, &req.Since}, {"until", *until, &req.Until}} {
		if t.val == "" {
			continue
		}
		v, err := time.Parse(time.RFC3339, t.val)
		if err != nil {
			return usagef("export: --%s: want RFC 3339 (2006-01-02T15:04:05Z): %v", t.flag, err)
		}
		*t.to = timestamppb.New(v)
	}
	ctx, cancel := e.call()
	defer cancel()
	stream, err := e.client.ExportBundle(ctx, req)
	if err != nil {
		return rpcErr(err)
	}
	var files int
	if strings.HasSuffix(*out, ".tar") {
		files, err = receiveArchive(*out, stream)
	} else {
		files, err = receiveFolder(*out, stream)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.out, "%s (%d files); verify it offline: devid-verify -bundle %s -roots ROOTS.pem -station-key KEY.pem\n", *out, files, *out)
	return nil
}

// chunkStream is the ExportBundle answer.
type chunkStream interface {
	Recv() (*stationv1.ExportChunk, error)
}

// receiveFolder writes the bundle into a temporary folder beside out, renamed to out once the
// whole bundle arrived. Each file is written as its chunks come.
func receiveFolder(out string, stream chunkStream) (int, error) {
	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(out)), "."+filepath.Base(out)+".*")
	if err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	defer os.RemoveAll(tmp)
	dir := &folderFiles{dir: tmp}
	defer dir.close()
	files, err := receiveBundle(stream, dir)
	if err != nil {
		return files, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return files, fmt.Errorf("export: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return files, fmt.Errorf("export: %w", err)
	}
	return files, nil
}

// receiveArchive writes the bundle as one archive (export.TarWriter) into a temporary file
// beside out, renamed to out once the whole bundle arrived. Each file goes into the archive
// as its chunks come, under the size the station announced (audit.jsonl, about 35 KB a unit,
// streamed when the station announces none): none is held whole.
func receiveArchive(out string, stream chunkStream) (int, error) {
	f, err := os.CreateTemp(filepath.Dir(filepath.Clean(out)), "."+filepath.Base(out)+".*")
	if err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	tw := export.NewTarWriter(f)
	files, err := receiveBundle(stream, &archiveFiles{tw: tw})
	if err != nil {
		return files, err
	}
	if err := tw.Close(); err != nil {
		return files, err
	}
	if err := f.Chmod(0o644); err != nil {
		return files, fmt.Errorf("export: %w", err)
	}
	if err := f.Close(); err != nil {
		return files, fmt.Errorf("export: %w", err)
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return files, fmt.Errorf("export: %w", err)
	}
	return files, nil
}

// bundleFiles is where receiveBundle writes the streamed files, one at a time.
type bundleFiles interface {
	// begin starts a file of size bytes (as the station announced it; -1: not known until
	// it ends) and returns where its bytes go.
	begin(name string, size int64) (io.Writer, error)
	// end ends the file begun last, once all its bytes came.
	end() error
}

// archiveFiles writes the files into an archive.
type archiveFiles struct {
	tw     *export.TarWriter
	stream io.WriteCloser // the file begun last, when its size was not announced
}

func (a *archiveFiles) begin(name string, size int64) (io.Writer, error) {
	if size >= 0 {
		return a.tw.Create(name, size)
	}
	w, err := a.tw.Stream(name)
	a.stream = w
	return w, err
}

func (a *archiveFiles) end() error {
	if a.stream == nil {
		return nil
	}
	err := a.stream.Close()
	a.stream = nil
	return err
}

// folderFiles writes the files under dir.
type folderFiles struct {
	dir string
	f   *os.File // the file begun last, until it ends
}

func (d *folderFiles) begin(name string, _ int64) (io.Writer, error) {
	f, err := export.CreateFile(d.dir, name)
	if err != nil {
		return nil, err
	}
	d.f = f
	return f, nil
}

func (d *folderFiles) end() error {
	f := d.f
	d.f = nil
	if err := f.Close(); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

// close closes a file left open by an error.
func (d *folderFiles) close() {
	if d.f != nil {
		_ = d.f.Close()
	}
}

// receiveBundle writes each streamed file into files as its chunks come and returns how many
// came. The bundle is complete when the last file is the manifest and every file has its
// announced size: the size of its first chunk, or of its end chunk when the first announced
// -1.
func receiveBundle(stream chunkStream, files bundleFiles) (int, error) {
	var name string
	var w io.Writer
	var got, size int64
	ended := false // the end chunk of a file announced with -1 came
	n := 0
	end := func() error {
		if name == "" {
			return nil
		}
		if size < 0 && !ended {
			return fmt.Errorf("export: %s: the file ended without its size", name)
		}
		if got != size {
			return fmt.Errorf("export: %s: got %d bytes, the station announced %d", name, got, size)
		}
		n++
		return files.end()
	}
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, rpcErr(err)
		}
		if c.GetPath() != name {
			if err := end(); err != nil {
				return n, err
			}
			name, got, size, ended = c.GetPath(), 0, c.GetSize(), false
			if size < -1 {
				return n, fmt.Errorf("export: %s: the station announced %d bytes", name, size)
			}
			if w, err = files.begin(name, size); err != nil {
				return n, err
			}
		}
		if name == "" {
			return n, errors.New("export: the station sent a chunk of no file")
		}
		data := c.GetData()
		switch {
		case ended:
			return n, fmt.Errorf("export: %s: a chunk after its end", name)
		case c.GetEnd() && (size != -1 || len(data) > 0):
			return n, fmt.Errorf("export: %s: an end chunk the station may not send", name)
		case c.GetEnd():
			size, ended = c.GetSize(), true
			continue
		}
		if size >= 0 && got+int64(len(data)) > size {
			return n, fmt.Errorf("export: %s: got %d bytes, the station announced %d", name, got+int64(len(data)), size)
		}
		if _, err := w.Write(data); err != nil {
			return n, err
		}
		got += int64(len(data))
	}
	if err := end(); err != nil {
		return n, err
	}
	if name != export.ManifestFile {
		return n, fmt.Errorf("export: the stream ended without %s: incomplete bundle", export.ManifestFile)
	}
	return n, nil
}
