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

// exportCmd fetches a QA export into a new folder: export --work-order W | --serials a,b |
// --since T --until T, --out DIR. The files land in a temporary folder beside DIR, renamed to
// DIR once the whole bundle (manifest.json last) arrived.
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
	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(*out)), "."+filepath.Base(*out)+".*")
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer os.RemoveAll(tmp)
	files, err := receiveBundle(tmp, stream)
	if err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := os.Rename(tmp, *out); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	fmt.Fprintf(e.out, "%s (%d files); verify it offline: devid-verify -bundle %s -roots ROOTS.pem -station-key KEY.pem\n", *out, files, *out)
	return nil
}

// receiveBundle writes the streamed files under dir and returns how many came. The bundle is
// complete when the last file is the manifest and every file has its announced size.
func receiveBundle(dir string, stream interface {
	Recv() (*stationv1.ExportChunk, error)
}) (int, error) {
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
		return export.WriteFile(dir, name, data)
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
