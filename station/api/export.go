package api

import (
	"errors"
	"fmt"

	"google.golang.org/grpc"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/reports/export"
	"github.com/devid-station/devid/station/store"
)

// exportChunk is the most data one ExportChunk carries.
const exportChunk = 256 << 10

// ExportBundle implements stationv1.StationServer: it builds the QA export of the selection
// and streams its files, manifest.json last.
func (s *Server) ExportBundle(req *stationv1.ExportBundleRequest, stream grpc.ServerStreamingServer[stationv1.ExportChunk]) error {
	const method = "ExportBundle"
	sel := export.Selection{WorkOrder: req.GetWorkOrder(), Serials: req.GetSerials()}
	if req.GetSince() != nil {
		sel.Since = req.GetSince().AsTime()
	}
	if req.GetUntil() != nil {
		sel.Until = req.GetUntil().AsTime()
	}
	b, err := export.Build(stream.Context(), s.cfg.Store, sel, export.Options{Version: s.cfg.Version})
	switch {
	case errors.Is(err, export.ErrSelection):
		return s.err(method, fmt.Errorf("%w: %w", err, ErrInvalidRequest))
	case errors.Is(err, export.ErrEmpty):
		return s.err(method, fmt.Errorf("%w: %w", err, store.ErrNotFound))
	case errors.Is(err, export.ErrNoKey):
		return s.err(method, fmt.Errorf("%w: %w", err, ErrUnavailable))
	case err != nil:
		return s.err(method, err)
	}
	for _, f := range b.Files {
		for off := 0; off == 0 || off < len(f.Data); off += exportChunk {
			c := &stationv1.ExportChunk{Path: f.Path, Data: f.Data[off:min(off+exportChunk, len(f.Data))]}
			if off == 0 {
				c.Size = int64(len(f.Data))
			}
			if err := stream.Send(c); err != nil {
				return err
			}
		}
	}
	return nil
}
