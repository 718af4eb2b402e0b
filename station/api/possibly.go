package api

import (
	"bytes"
	"context"
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/station/reconcile"
)

// ListPossiblyIssued implements stationv1.StationServer.
func (s *Server) ListPossiblyIssued(ctx context.Context, req *stationv1.ListPossiblyIssuedRequest) (*stationv1.ListPossiblyIssuedResponse, error) {
	const method = "ListPossiblyIssued"
	entries, err := s.cfg.Store.PossiblyIssuedEntries(ctx, req.GetSerial(), !req.GetAll())
	if err != nil {
		return nil, s.err(method, err)
	}
	resp := &stationv1.ListPossiblyIssuedResponse{}
	for _, p := range entries {
		e := &stationv1.PossiblyIssued{Id: p.ID, Serial: p.Serial, Role: string(p.Role), Ca: p.CA,
			CsrSha256: p.CSRSHA256, PublicKeySha256: p.PublicKeySHA256, KeyName: p.KeyName,
			From: timestamppb.New(p.From), To: timestamppb.New(p.To), Closed: p.Closed,
			Resolution: p.Resolution, Certificates: p.Certificates}
		if p.Closed {
			e.ClosedAt = timestamppb.New(p.ClosedAt)
		}
		resp.Entries = append(resp.Entries, e)
	}
	return resp, nil
}

// ImportIssuanceLog implements stationv1.StationServer.
func (s *Server) ImportIssuanceLog(ctx context.Context, req *stationv1.ImportIssuanceLogRequest) (*stationv1.ImportIssuanceLogResponse, error) {
	const method = "ImportIssuanceLog"
	if req.GetCa() == "" {
		return nil, s.err(method, fmt.Errorf("ca is required: %w", ErrInvalidRequest))
	}
	log, err := reconcile.ParseLog(bytes.NewReader(req.GetLog()))
	if err != nil {
		return nil, s.err(method, fmt.Errorf("%w: %w", ErrInvalidRequest, err))
	}
	rep, err := reconcile.Import(ctx, s.cfg.Store, req.GetCa(), log)
	if err != nil {
		return nil, s.err(method, err)
	}
	c, _ := CallerFrom(ctx)
	s.log.Info("issuance log imported", "ca", req.GetCa(), "principal", c.Principal, "closed", rep.Closed, "recorded", rep.Recorded, "open", rep.Open)
	return &stationv1.ImportIssuanceLogResponse{Closed: uint32(rep.Closed), Recorded: uint32(rep.Recorded), Open: uint32(rep.Open)}, nil
}
