package api

import (
	"context"
	"errors"
	"fmt"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/station/store"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// VerifyAudit implements stationv1.StationServer.
func (s *Server) VerifyAudit(ctx context.Context, _ *stationv1.VerifyAuditRequest) (*stationv1.VerifyAuditResponse, error) {
	const method = "VerifyAudit"
	rep, keySHA, err := s.cfg.Store.VerifyStation(ctx, nil)
	out := &stationv1.VerifyAuditResponse{Ok: err == nil, HeadSeq: rep.Head.Seq, HeadHash: rep.Head.Hash,
		Records: rep.Records, Values: rep.Values, Checkpoints: uint32(rep.Checkpoints), KeySha256: keySHA}
	if rep.Last != nil {
		out.LastCheckpointSeq = rep.Last.Seq
	}
	var cb *store.ChainBrokenError
	switch {
	case errors.As(err, &cb):
		out.ErrorCode, out.Reason, out.BadSeq, out.Bucket, out.Key = store.CodeAuditChainBroken, cb.Reason, cb.Seq, cb.Bucket, cb.Key
	case err != nil:
		return nil, s.err(method, err)
	}
	return out, nil
}

// GetUnitAudit implements stationv1.StationServer.
func (s *Server) GetUnitAudit(ctx context.Context, req *stationv1.GetUnitAuditRequest) (*stationv1.UnitAudit, error) {
	const method = "GetUnitAudit"
	if req.GetSerial() == "" {
		return nil, s.err(method, fmt.Errorf("serial is required: %w", ErrInvalidRequest))
	}
	recs, head, err := s.cfg.Store.UnitTrail(ctx, req.GetSerial())
	if err != nil {
		return nil, s.err(method, err)
	}
	out := &stationv1.UnitAudit{Serial: req.GetSerial(), HeadSeq: head.Seq}
	for _, r := range recs {
		out.Records = append(out.Records, &stationv1.AuditRecord{Seq: r.Seq, Time: timestamppb.New(r.Time), Principal: r.Principal,
			Action: r.Action, Result: r.Result, ErrorCode: r.ErrorCode, Details: r.Details, Hash: r.Hash,
			Writes: uint32(len(r.Writes)), CheckpointSeq: r.Checkpoint})
	}
	return out, nil
}
