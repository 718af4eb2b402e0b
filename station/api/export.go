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
	_, err := export.Write(stream.Context(), s.cfg.Store, sel, export.Options{Version: s.cfg.Version}, chunkSink{stream})
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

// Stream sends a file as it is written (audit.jsonl, as the export encodes it) as
// ExportChunks of exportChunk bytes, the first announcing size -1 and the last (end) its
// size: chunkSink is an export.StreamSink.
func (c chunkSink) Stream(name string) (io.WriteCloser, error) {
	return &chunkStream{c: c, name: name}, nil
}

// chunkStream is a file Stream began.
type chunkStream struct {
	c    chunkSink
	name string
	buf  []byte // the chunk being filled
	sent int64  // bytes sent before buf
}

func (s *chunkStream) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if s.buf == nil {
			// A new buffer a chunk: the message may still be read once Send returns.
			s.buf = make([]byte, 0, exportChunk)
		}
		k := copy(s.buf[len(s.buf):cap(s.buf)], p)
		s.buf, p = s.buf[:len(s.buf)+k], p[k:]
		if len(s.buf) == cap(s.buf) {
			if err := s.send(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

// send sends the chunk filled so far (an empty one when nothing was sent yet).
func (s *chunkStream) send() error {
	ch := &stationv1.ExportChunk{Path: s.name, Data: s.buf}
	if s.sent == 0 {
		ch.Size = -1
	}
	if err := s.c.stream.Send(ch); err != nil {
		return &streamError{err}
	}
	s.sent += int64(len(s.buf))
	s.buf = nil
	return nil
}

// Close sends what is left and the end chunk with the file's size.
func (s *chunkStream) Close() error {
	if len(s.buf) > 0 || s.sent == 0 {
		if err := s.send(); err != nil {
			return err
		}
	}
	if err := s.c.stream.Send(&stationv1.ExportChunk{Path: s.name, Size: s.sent, End: true}); err != nil {
		return &streamError{err}
	}
	return nil
}
