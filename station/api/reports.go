package api

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"google.golang.org/grpc"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/reports/reportdir"
)

// reportChunk is the size of one ReportChunk's data.
const reportChunk = 256 << 10

// GetReport implements stationv1.StationServer: it streams a file of the reports folder.
func (s *Server) GetReport(req *stationv1.GetReportRequest, stream grpc.ServerStreamingServer[stationv1.ReportChunk]) error {
	const method = "GetReport"
	if s.cfg.ReportsDir == "" {
		return s.err(method, fmt.Errorf("reports: the station has no reports_dir: %w", ErrUnavailable))
	}
	if req.GetId() == "" {
		return s.err(method, fmt.Errorf("id is required: %w", ErrInvalidRequest))
	}
	var path string
	switch k, f := req.GetKind(), req.GetFormat(); {
	case k == "traveler" && (f == "pdf" || f == "html"):
		html, pdf := reportdir.TravelerFiles(s.cfg.ReportsDir, req.GetId())
		path = map[string]string{"html": html, "pdf": pdf}[f]
	case k == "lot" && (f == "pdf" || f == "html" || f == "csv"):
		html, pdf, csv := reportdir.LotFiles(s.cfg.ReportsDir, req.GetId())
		path = map[string]string{"html": html, "pdf": pdf, "csv": csv}[f]
	default:
		return s.err(method, fmt.Errorf("report %q format %q: want traveler pdf|html or lot pdf|html|csv: %w",
			k, f, ErrInvalidRequest))
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return s.err(method, fmt.Errorf("%s %s: no %s written (a traveler when the unit ends, a lot report when the work order closes): %w",
			req.GetKind(), req.GetId(), req.GetFormat(), ErrNoReport))
	}
	if err != nil {
		return s.err(method, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return s.err(method, err)
	}
	buf := make([]byte, reportChunk)
	for sent := false; ; sent = true {
		n, rerr := io.ReadFull(f, buf)
		end := errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF)
		if rerr != nil && !end {
			return s.err(method, rerr)
		}
		if n > 0 || !sent { // an empty file still gets its naming chunk
			c := &stationv1.ReportChunk{Data: buf[:n]}
			if !sent {
				c.FileName, c.Size = filepath.Base(path), fi.Size()
			}
			if err := stream.Send(c); err != nil {
				return err
			}
		}
		if end {
			return nil
		}
	}
}
