package ctl

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
)

// reportCmd fetches a report file: report traveler SERIAL | report lot WORK_ORDER, with
// --format and --out (a file, a folder, or - for stdout; default: the file's own name in the
// current folder).
func reportCmd(e *env, args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	format := fs.String("format", "pdf", "")
	out := fs.String("out", "", "")
	pos, err := parse(fs, args, 2)
	if err != nil {
		return err
	}
	if pos[0] != "traveler" && pos[0] != "lot" {
		return usagef("report: %q: want traveler SERIAL or lot WORK_ORDER", pos[0])
	}
	ctx, cancel := e.call()
	defer cancel()
	stream, err := e.client.GetReport(ctx, &stationv1.GetReportRequest{Kind: pos[0], Id: pos[1], Format: *format})
	if err != nil {
		return rpcErr(err)
	}
	first, err := stream.Recv()
	if err != nil {
		return rpcErr(err)
	}
	name := filepath.Base(first.GetFileName())
	if name == "." || name == ".." || name == string(filepath.Separator) {
		return fmt.Errorf("the station named the report %q", first.GetFileName())
	}
	if *out == "-" {
		n, err := copyChunks(e.out, first, stream)
		if err != nil {
			return err
		}
		return checkSize(name, n, first.GetSize())
	}
	path := *out
	if fi, err := os.Stat(path); path == "" || (err == nil && fi.IsDir()) {
		path = filepath.Join(path, name)
	}
	n, err := writeReport(path, first, stream)
	if err != nil {
		return fmt.Errorf("writing the report %s: %w", path, err)
	}
	fmt.Fprintf(e.out, "%s (%d bytes)\n", path, n)
	return nil
}

type chunks interface {
	Recv() (*stationv1.ReportChunk, error)
}

func checkSize(name string, got, announced int64) error {
	if got != announced {
		return fmt.Errorf("report %s: got %d bytes, the station announced %d", name, got, announced)
	}
	return nil
}

// writeReport writes the chunks to path (mode 0644) through a temporary file and a rename, so
// that a broken stream or a short file leaves no partial report.
func writeReport(path string, first *stationv1.ReportChunk, stream chunks) (int64, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return 0, err
	}
	n, err := copyChunks(f, first, stream)
	if err == nil {
		err = checkSize(filepath.Base(path), n, first.GetSize())
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return n, err
}

// copyChunks writes the data of first and every following chunk to w.
func copyChunks(w io.Writer, first *stationv1.ReportChunk, stream chunks) (int64, error) {
	var n int64
	for c := first; ; {
		k, err := w.Write(c.GetData())
		n += int64(k)
		if err != nil {
			return n, err
		}
		if c, err = stream.Recv(); errors.Is(err, io.EOF) {
			return n, nil
		} else if err != nil {
			return n, rpcErr(err)
		}
	}
}
