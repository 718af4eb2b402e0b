package api

import (
	"cmp"
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/station/store"
)

const (
	defaultPageSize = 100
	maxPageSize     = 1000
	// maxExpandedSerials bounds the serials a work order with several ranges (or ranges and
	// serials) expands to: the store holds either a serial list or a single range.
	maxExpandedSerials = 100000
)

// pageSize applies the default and the maximum.
func pageSize(n uint32) int {
	switch {
	case n == 0:
		return defaultPageSize
	case n > maxPageSize:
		return maxPageSize
	}
	return int(n)
}

// CreateWorkOrder implements stationv1.StationServer.
func (s *Server) CreateWorkOrder(ctx context.Context, req *stationv1.CreateWorkOrderRequest) (*stationv1.WorkOrder, error) {
	const method = "CreateWorkOrder"
	wo, err := s.workOrderFromRequest(req)
	if err != nil {
		return nil, s.err(method, err)
	}
	out, err := s.cfg.Store.CreateWorkOrder(ctx, wo)
	if err != nil {
		return nil, s.err(method, err)
	}
	return s.workOrderProto(ctx, out, nil)
}

// workOrderFromRequest validates req into a store work order. Individual serials, one range,
// or (expanded into serials) any mix of them.
func (s *Server) workOrderFromRequest(req *stationv1.CreateWorkOrderRequest) (store.WorkOrder, error) {
	wo := store.WorkOrder{ID: req.GetId(), Profile: req.GetProfile()}
	switch {
	case wo.ID == "":
		return wo, fmt.Errorf("work order id is required: %w", ErrInvalidRequest)
	case wo.Profile == "":
		return wo, fmt.Errorf("profile is required: %w", ErrInvalidRequest)
	case s.cfg.Profiles != nil && !slices.Contains(s.cfg.Profiles, wo.Profile):
		return wo, fmt.Errorf("profile %q is not configured at this station: %w", wo.Profile, ErrInvalidRequest)
	case len(req.GetSerials()) == 0 && len(req.GetRanges()) == 0:
		return wo, fmt.Errorf("work order %q: serials or ranges are required: %w", wo.ID, ErrInvalidRequest)
	}
	var ranges []store.SerialRange
	for _, r := range req.GetRanges() {
		w := r.GetWidth()
		if r.GetFirst() > r.GetLast() || w > 19 || (w > 0 && len(strconv.FormatUint(r.GetLast(), 10)) > int(w)) {
			return wo, fmt.Errorf("work order %q: range %s%d-%d width %d: %w", wo.ID, r.GetPrefix(), r.GetFirst(), r.GetLast(), r.GetWidth(), ErrInvalidRequest)
		}
		ranges = append(ranges, store.SerialRange{Prefix: r.GetPrefix(), From: r.GetFirst(), To: r.GetLast(), Width: int(r.GetWidth())})
	}
	if len(ranges) == 1 && len(req.GetSerials()) == 0 {
		wo.Range = &ranges[0]
		return wo, nil
	}
	seen := map[string]bool{}
	add := func(serial string) error {
		if seen[serial] {
			return nil
		}
		if len(seen) == maxExpandedSerials {
			return fmt.Errorf("work order %q: more than %d serials: use a single range: %w", wo.ID, maxExpandedSerials, ErrInvalidRequest)
		}
		seen[serial] = true
		wo.Serials = append(wo.Serials, serial)
		return nil
	}
	for _, serial := range req.GetSerials() {
		if err := add(serial); err != nil {
			return wo, err
		}
	}
	for _, r := range ranges {
		for n := r.From; ; n++ {
			if err := add(rangeSerial(r, n)); err != nil {
				return wo, err
			}
			if n == r.To {
				break
			}
		}
	}
	return wo, nil
}

// rangeSerial returns the n-th serial of r.
func rangeSerial(r store.SerialRange, n uint64) string {
	return fmt.Sprintf("%s%0*d", r.Prefix, r.Width, n)
}

// GetWorkOrder implements stationv1.StationServer.
func (s *Server) GetWorkOrder(ctx context.Context, req *stationv1.GetWorkOrderRequest) (*stationv1.WorkOrder, error) {
	const method = "GetWorkOrder"
	if req.GetId() == "" {
		return nil, s.err(method, fmt.Errorf("work order id is required: %w", ErrInvalidRequest))
	}
	wo, err := s.cfg.Store.WorkOrder(ctx, req.GetId())
	if err != nil {
		return nil, s.err(method, err)
	}
	pb, err := s.workOrderProto(ctx, wo, nil)
	return pb, s.err(method, err)
}

// CloseWorkOrder implements stationv1.StationServer.
func (s *Server) CloseWorkOrder(ctx context.Context, req *stationv1.CloseWorkOrderRequest) (*stationv1.WorkOrder, error) {
	const method = "CloseWorkOrder"
	if req.GetId() == "" {
		return nil, s.err(method, fmt.Errorf("work order id is required: %w", ErrInvalidRequest))
	}
	if err := checkReason(req.GetReason(), false); err != nil {
		return nil, s.err(method, err)
	}
	wo, err := s.cfg.Store.CloseWorkOrder(ctx, req.GetId(), req.GetReason())
	if err != nil {
		return nil, s.err(method, err)
	}
	pb, err := s.workOrderProto(ctx, wo, nil)
	return pb, s.err(method, err)
}

// ListWorkOrders implements stationv1.StationServer: newest first, then by id.
func (s *Server) ListWorkOrders(ctx context.Context, req *stationv1.ListWorkOrdersRequest) (*stationv1.ListWorkOrdersResponse, error) {
	const method = "ListWorkOrders"
	var after *woCursor
	if t := req.GetPageToken(); t != "" {
		c, err := parseWOCursor(t)
		if err != nil {
			return nil, s.err(method, err)
		}
		after = &c
	}
	all, err := s.cfg.Store.WorkOrders(ctx)
	if err != nil {
		return nil, s.err(method, err)
	}
	want := req.GetStatus()
	all = slices.DeleteFunc(all, func(wo store.WorkOrder) bool {
		return want != stationv1.WorkOrderStatus_WORK_ORDER_STATUS_UNSPECIFIED && workOrderStatus(wo.Status) != want
	})
	slices.SortFunc(all, func(a, b store.WorkOrder) int { return cursorOf(a).compare(cursorOf(b)) })
	if after != nil {
		i := slices.IndexFunc(all, func(wo store.WorkOrder) bool { return cursorOf(wo).compare(*after) > 0 })
		if i < 0 {
			i = len(all)
		}
		all = all[i:]
	}
	resp := &stationv1.ListWorkOrdersResponse{}
	n := pageSize(req.GetPageSize())
	if len(all) > n {
		all = all[:n]
		resp.NextPageToken = cursorOf(all[n-1]).String()
	}
	ids := make([]string, len(all))
	for i, wo := range all {
		ids[i] = wo.ID
	}
	counts, err := s.workOrderCounts(ctx, ids...)
	if err != nil {
		return nil, s.err(method, err)
	}
	for _, wo := range all {
		pb, err := s.workOrderProto(ctx, wo, counts)
		if err != nil {
			return nil, s.err(method, err)
		}
		resp.WorkOrders = append(resp.WorkOrders, pb)
	}
	return resp, nil
}

// woCursor is a position in the work order listing: newest first, then by id.
type woCursor struct {
	created time.Time
	id      string
}

func cursorOf(wo store.WorkOrder) woCursor { return woCursor{created: wo.CreatedAt, id: wo.ID} }

func (c woCursor) compare(o woCursor) int {
	if r := o.created.Compare(c.created); r != 0 {
		return r
	}
	return cmp.Compare(c.id, o.id)
}

// String encodes the cursor as an opaque page token.
func (c woCursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.created.UnixNano(), 10) + ":" + c.id))
}

func parseWOCursor(token string) (woCursor, error) {
	bad := fmt.Errorf("page token %q: %w", token, ErrInvalidRequest)
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return woCursor{}, bad
	}
	ns, id, ok := strings.Cut(string(raw), ":")
	if !ok {
		return woCursor{}, bad
	}
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return woCursor{}, bad
	}
	return woCursor{created: time.Unix(0, n).UTC(), id: id}, nil
}

// woCounts counts units per work order: done and failed.
type woCounts map[string]*[2]uint64

// workOrderCounts counts the done and failed units of each work order of ids, walking only
// that work order's units (the unit index's entries of the work order), not the whole store.
func (s *Server) workOrderCounts(ctx context.Context, ids ...string) (woCounts, error) {
	counts := woCounts{}
	for _, id := range ids {
		if counts[id] != nil {
			continue
		}
		c := new([2]uint64)
		counts[id] = c
		err := s.index.forEach(ctx, store.UnitQuery{WorkOrder: id}, func(u store.UnitState) bool {
			switch u.Status {
			case store.StatusDone:
				c[0]++
			case store.StatusFailed, store.StatusAborted, store.StatusHold, store.StatusScrapped:
				c[1]++
			}
			return true
		})
		if err != nil {
			return nil, err
		}
	}
	return counts, nil
}

// workOrderProto converts wo; counts are computed when nil.
func (s *Server) workOrderProto(ctx context.Context, wo store.WorkOrder, counts woCounts) (*stationv1.WorkOrder, error) {
	if counts == nil {
		var err error
		if counts, err = s.workOrderCounts(ctx, wo.ID); err != nil {
			return nil, err
		}
	}
	pb := &stationv1.WorkOrder{
		Id: wo.ID, Profile: wo.Profile, Serials: wo.Serials, Status: workOrderStatus(wo.Status),
		CreatedBy: wo.CreatedBy, CreateTime: timestamppb.New(wo.CreatedAt), UnitsTotal: uint64(len(wo.Serials)),
	}
	if r := wo.Range; r != nil {
		pb.Ranges = []*stationv1.SerialRange{{Prefix: r.Prefix, First: r.From, Last: r.To, Width: uint32(r.Width)}}
		pb.UnitsTotal = r.To - r.From + 1
	}
	if !wo.ClosedAt.IsZero() {
		pb.CloseTime = timestamppb.New(wo.ClosedAt)
	}
	if c := counts[wo.ID]; c != nil {
		pb.UnitsDone, pb.UnitsFailed = c[0], c[1]
	}
	return pb, nil
}

func workOrderStatus(s store.WorkOrderStatus) stationv1.WorkOrderStatus {
	switch s {
	case store.WorkOrderOpen:
		return stationv1.WorkOrderStatus_WORK_ORDER_STATUS_OPEN
	case store.WorkOrderClosed:
		return stationv1.WorkOrderStatus_WORK_ORDER_STATUS_CLOSED
	}
	return stationv1.WorkOrderStatus_WORK_ORDER_STATUS_UNSPECIFIED
}
