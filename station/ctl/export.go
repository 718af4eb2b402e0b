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
// whole bundle arrived.
func receiveFolder(out string, stream chunkStream) (int, error) {
	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(out)), "."+filepath.Base(out)+".*")
	if err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	defer os.RemoveAll(tmp)
	files, err := receiveBundle(stream, func(name string, data []byte) error { return export.WriteFile(tmp, name, data) })
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
// beside out, renamed to out once the whole bundle arrived.
func receiveArchive(out string, stream chunkStream) (int, error) {
	f, err := os.CreateTemp(filepath.Dir(filepath.Clean(out)), "."+filepath.Base(out)+".*")
	if err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	tw := export.NewTarWriter(f)
	files, err := receiveBundle(stream, func(name string, data []byte) error { return tw.Put(name, data) })
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

// receiveBundle hands each streamed file to put and returns how many came. The bundle is
// complete when the last file is the manifest and every file has its announced size.
func receiveBundle(stream chunkStream, put func(name string, data []byte) error) (int, error) {
	var name string
	var data []byte
	var size int64
	n := 0
	flush := func() error {
		if name == "" {
			return nil
		}
		if int64(len(data)) != size {
			return fmt.Errorf("export: %s: got %d bytes, the station announced %d", name, len(data), size)
		}
		n++
		return put(name, data)
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
			if err := flush(); err != nil {
				return n, err
			}
			name, data, size = c.GetPath(), nil, c.GetSize()
		}
		data = append(data, c.GetData()...)
	}
	if err := flush(); err != nil {
		return n, err
	}
	if name != export.ManifestFile {
		return n, fmt.Errorf("export: the stream ended without %s: incomplete bundle", export.ManifestFile)
	}
	return n, nil
}
