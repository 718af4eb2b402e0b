package api

import (
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/reports/export"
	"github.com/devid-station/devid/station/store"
)

// exportChunk is the most data one ExportChunk carries.
const exportChunk = 256 << 10

// ExportBundle implements stationv1.StationServer: it builds the QA export of the selection
// and streams its files as they are built, manifest.json last (the bundle is never held whole
// in memory).
func (s *Server) ExportBundle(req *stationv1.ExportBundleRequest, stream grpc.ServerStreamingServer[stationv1.ExportChunk]) error {
	const method = "ExportBundle"
	sel := export.Selection{WorkOrder: req.GetWorkOrder(), Serials: req.GetSerials()}
	if req.GetSince() != nil {
		sel.Since = req.GetSince().AsTime()
	}
	if req.GetUntil() != nil {
		sel.Until = req.GetUntil().AsTime()
	}
	_, err := export.Write(stream.Context(), s.cfg.Store, sel, export.Options{Version: s.cfg.Version, TempDir: s.cfg.ExportTempDir}, chunkSink{stream})
	var sendErr *streamError
	switch {
	case errors.As(err, &sendErr):
		return sendErr.err // the client went away: nothing to map
	case errors.Is(err, export.ErrSelection):
		return s.err(method, fmt.Errorf("%w: %w", err, ErrInvalidRequest))
	case errors.Is(err, export.ErrEmpty):
		return s.err(method, fmt.Errorf("%w: %w", err, store.ErrNotFound))
	case errors.Is(err, export.ErrNoKey):
		return s.err(method, fmt.Errorf("%w: %w", err, ErrUnavailable))
	case err != nil:
		return s.err(method, err)
	}
	return nil
}

// chunkSink sends each bundle file as ExportChunks of at most exportChunk bytes.
type chunkSink struct {
	stream grpc.ServerStreamingServer[stationv1.ExportChunk]
}

// streamError is a failed Send.
type streamError struct{ err error }

func (e *streamError) Error() string { return e.err.Error() }

func (c chunkSink) Put(name string, parts ...[]byte) error {
	size := 0
	for _, p := range parts {
		size += len(p)
	}
	first := true
	send := func(data []byte) error {
		ch := &stationv1.ExportChunk{Path: name, Data: data}
		if first {
			ch.Size, first = int64(size), false
		}
		if err := c.stream.Send(ch); err != nil {
			return &streamError{err}
		}
		return nil
	}
	for _, p := range parts {
		for off := 0; off < len(p); off += exportChunk {
			if err := send(p[off:min(off+exportChunk, len(p))]); err != nil {
				return err
			}
		}
	}
	if first { // an empty file is one empty chunk
		return send(nil)
	}
	return nil
}

// PutStream sends a file read from r (audit.jsonl, from the file the export spilled it to) as
// ExportChunks, a chunk at a time: chunkSink is an export.StreamSink.
func (c chunkSink) PutStream(name string, size int64, r io.Reader) error {
	sent := int64(0)
	for first := true; first || sent < size; first = false {
		// A new buffer a chunk: the message may still be read once Send returns.
		data := make([]byte, min(exportChunk, size-sent))
		if _, err := io.ReadFull(r, data); err != nil {
			return fmt.Errorf("reading %s: %w", name, err)
		}
		ch := &stationv1.ExportChunk{Path: name, Data: data}
		if first {
			ch.Size = size
		}
		if err := c.stream.Send(ch); err != nil {
			return &streamError{err}
		}
		sent += int64(len(data))
	}
	return nil
}
