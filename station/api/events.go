package api

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/station/store"
)

// WatchEvents implements stationv1.StationServer. The token of an event is its outbox
// sequence number in decimal (clients treat it as opaque). The stream replays the stored
// events after the token, then, with follow, reads the outbox every PollInterval until the
// client goes away or the server shuts down (codes.Unavailable: resume from the last token).
func (s *Server) WatchEvents(req *stationv1.WatchEventsRequest, stream grpc.ServerStreamingServer[stationv1.Event]) error {
	const method = "WatchEvents"
	ctx := stream.Context()
	var token uint64
	if t := req.GetAfterToken(); t != "" {
		var err error
		if token, err = strconv.ParseUint(t, 10, 64); err != nil {
			return s.err(method, fmt.Errorf("after_token %q: %w", t, ErrInvalidRequest))
		}
	}
	var tick *time.Ticker
	for {
		evs, next, err := s.cfg.Store.OutboxAfter(ctx, token, outboxBatch)
		if err != nil {
			return s.err(method, err)
		}
		for _, ev := range evs {
			if req.GetSerial() != "" && ev.Serial != req.GetSerial() {
				continue
			}
			if err := stream.Send(eventProto(ev)); err != nil {
				return err
			}
		}
		token = next
		if len(evs) == outboxBatch {
			continue // more stored events to replay
		}
		if !req.GetFollow() {
			return nil
		}
		if tick == nil {
			tick = time.NewTicker(s.cfg.PollInterval)
			defer tick.Stop()
		}
		select {
		case <-ctx.Done():
			return s.err(method, ctx.Err())
		case <-s.stopping:
			return s.err(method, ErrShuttingDown)
		case <-tick.C:
		}
	}
}

// eventProto converts a store event. The error code is the event's, or the "code" the
// workflow puts in the data of unit.failed; the principal is the one the store recorded with
// the event (the audit trail's), for events stored before it was recorded the "by" of the data
// or "station"; an event without a message is summarized by its data.
func eventProto(ev store.Event) *stationv1.Event {
	pb := &stationv1.Event{
		Token: strconv.FormatUint(ev.Seq, 10), Time: timestamppb.New(ev.Time), Serial: ev.Serial,
		Kind: ev.Type, Step: ev.Step, ErrorCode: ev.ErrorCode, Message: ev.Message, Principal: ev.Principal,
	}
	if pb.ErrorCode == "" {
		pb.ErrorCode = ev.Data["code"]
	}
	if pb.Principal == "" {
		pb.Principal = cmp.Or(ev.Data["by"], store.PrincipalStation)
	}
	if pb.Message == "" && len(ev.Data) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(ev.Data)) {
			parts = append(parts, k+"="+ev.Data[k])
		}
		pb.Message = strings.Join(parts, " ")
	}
	return pb
}
