package api

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/reports/traveler"
	"github.com/devid-station/devid/station/journal"
	"github.com/devid-station/devid/station/store"
)

// MaxReasonBytes bounds the reason of an abort, a rework, an EK release or a work order's
// closing, all recorded in the audit trail.
const MaxReasonBytes = 1024

// checkReason checks the reason of a mutating call: at most MaxReasonBytes of valid UTF-8,
// and not empty when required.
func checkReason(reason string, required bool) error {
	switch {
	case required && strings.TrimSpace(reason) == "":
		return fmt.Errorf("a reason is required: %w", ErrInvalidRequest)
	case len(reason) > MaxReasonBytes:
		return fmt.Errorf("the reason has %d bytes, more than %d: %w", len(reason), MaxReasonBytes, ErrInvalidRequest)
	case !utf8.ValidString(reason):
		return fmt.Errorf("the reason is not valid UTF-8: %w", ErrInvalidRequest)
	}
	return nil
}

// minRateSpan is the shortest span GetStatus measures units per hour over.
const minRateSpan = time.Minute

// GetUnit implements stationv1.StationServer.
func (s *Server) GetUnit(ctx context.Context, req *stationv1.GetUnitRequest) (*stationv1.Unit, error) {
	const method = "GetUnit"
	if req.GetSerial() == "" {
		return nil, s.err(method, fmt.Errorf("serial is required: %w", ErrInvalidRequest))
	}
	u, err := s.cfg.Store.Unit(ctx, req.GetSerial())
	if err != nil {
		return nil, s.err(method, err)
	}
	pb, err := s.unitProto(ctx, u, s.running())
	return pb, s.err(method, err)
}

// ListUnits implements stationv1.StationServer: units in serial order, a page at a time, from
// the store's cursor over its units (Store.ListUnits). The page token is opaque (pageToken).
func (s *Server) ListUnits(ctx context.Context, req *stationv1.ListUnitsRequest) (*stationv1.ListUnitsResponse, error) {
	const method = "ListUnits"
	after, err := parsePageToken(req)
	if err != nil {
		return nil, s.err(method, err)
	}
	running := s.running()
	// Brief: a page reads each unit's listing row, not its state or its verify_ek record.
	q := store.UnitQuery{After: after, Limit: pageSize(req.GetPageSize()), WorkOrder: req.GetWorkOrder(),
		ErrorCode: req.GetErrorCode(), Brief: true}
	if want := req.GetStatus(); want != stationv1.UnitStatus_UNIT_STATUS_UNSPECIFIED {
		q.Statuses = storeStatuses(want)
		q.Keep = func(u *store.UnitState) bool { return unitStatus(*u, running) == want }
	}
	units, more, err := s.cfg.Store.ListUnits(ctx, q)
	if err != nil {
		return nil, s.err(method, err)
	}
	resp := &stationv1.ListUnitsResponse{Units: make([]*stationv1.Unit, 0, len(units))}
	for _, l := range units {
		pb, err := s.unitProto(ctx, l.Unit, running)
		if err != nil {
			return nil, s.err(method, err)
		}
		resp.Units = append(resp.Units, pb)
	}
	if more {
		resp.NextPageToken = pageToken(req, units[len(units)-1].Unit.Serial)
	}
	return resp, nil
}

// storeStatuses are the store statuses an API status can come from.
func storeStatuses(st stationv1.UnitStatus) []store.Status {
	switch st {
	case stationv1.UnitStatus_UNIT_STATUS_RUNNING:
		return []store.Status{store.StatusRunning}
	case stationv1.UnitStatus_UNIT_STATUS_WAITING:
		return store.InFlightStatuses
	case stationv1.UnitStatus_UNIT_STATUS_DONE:
		return []store.Status{store.StatusDone}
	case stationv1.UnitStatus_UNIT_STATUS_FAILED:
		return []store.Status{store.StatusFailed, store.StatusAborted}
	case stationv1.UnitStatus_UNIT_STATUS_HOLD:
		return []store.Status{store.StatusHold}
	case stationv1.UnitStatus_UNIT_STATUS_SCRAPPED:
		return []store.Status{store.StatusScrapped}
	}
	return []store.Status{""} // an unknown status matches no unit
}

// AbortUnit implements stationv1.StationServer.
func (s *Server) AbortUnit(ctx context.Context, req *stationv1.AbortUnitRequest) (*stationv1.Unit, error) {
	const method = "AbortUnit"
	c, _ := CallerFrom(ctx)
	if err := checkReason(req.GetReason(), true); err != nil {
		return nil, s.err(method, err)
	}
	switch {
	case req.GetSerial() == "":
		return nil, s.err(method, fmt.Errorf("serial is required: %w", ErrInvalidRequest))
	case s.cfg.Runner == nil:
		return nil, s.err(method, fmt.Errorf("aborting units: %w", ErrUnavailable))
	}
	if _, err := s.cfg.Store.Unit(ctx, req.GetSerial()); err != nil {
		return nil, s.err(method, err)
	}
	u, err := s.cfg.Runner.Abort(ctx, req.GetSerial(), c.Principal, req.GetReason())
	if err != nil {
		return nil, s.err(method, err)
	}
	s.log.Info("unit aborted", "serial", u.Serial, "principal", c.Principal, "reason", req.GetReason())
	pb, err := s.unitProto(ctx, u, s.running())
	return pb, s.err(method, err)
}

// AuthorizeRework implements stationv1.StationServer. Only a unit that ended (done, failed
// or aborted) can be reworked.
func (s *Server) AuthorizeRework(ctx context.Context, req *stationv1.AuthorizeReworkRequest) (*stationv1.Unit, error) {
	const method = "AuthorizeRework"
	c, _ := CallerFrom(ctx)
	if err := checkReason(req.GetReason(), true); err != nil {
		return nil, s.err(method, err)
	}
	switch {
	case req.GetSerial() == "":
		return nil, s.err(method, fmt.Errorf("serial is required: %w", ErrInvalidRequest))
	}
	u, err := s.cfg.Store.Unit(ctx, req.GetSerial())
	if err != nil {
		return nil, s.err(method, err)
	}
	if u.Status != store.StatusDone && u.Status != store.StatusFailed && u.Status != store.StatusAborted {
		return nil, s.err(method, fmt.Errorf("unit %q is %s: %w", u.Serial, u.Status, ErrUnitNotEnded))
	}
	u, err = s.cfg.Store.AuthorizeRework(ctx, req.GetSerial(), c.Principal, req.GetReason())
	if err != nil {
		return nil, s.err(method, err)
	}
	s.log.Info("rework authorized", "serial", u.Serial, "principal", c.Principal, "reason", req.GetReason())
	pb, err := s.unitProto(ctx, u, s.running())
	return pb, s.err(method, err)
}

// DecideHold implements stationv1.StationServer: QA's or an admin's decision on a unit on
// hold, recorded in the audit trail by the store.
func (s *Server) DecideHold(ctx context.Context, req *stationv1.DecideHoldRequest) (*stationv1.Unit, error) {
	const method = "DecideHold"
	c, _ := CallerFrom(ctx)
	decisions := map[stationv1.HoldDecision]string{
		stationv1.HoldDecision_HOLD_DECISION_REWORK: store.DecisionRework,
		stationv1.HoldDecision_HOLD_DECISION_SCRAP:  store.DecisionScrap,
	}
	decision, ok := decisions[req.GetDecision()]
	switch {
	case req.GetSerial() == "":
		return nil, s.err(method, fmt.Errorf("serial is required: %w", ErrInvalidRequest))
	case !ok:
		return nil, s.err(method, fmt.Errorf("decision must be rework or scrap: %w", ErrInvalidRequest))
	case req.GetReason() == "":
		return nil, s.err(method, fmt.Errorf("a reason is required: %w", ErrInvalidRequest))
	}
	u, err := s.cfg.Store.DecideHold(ctx, req.GetSerial(), c.Principal, decision, req.GetReason())
	if err != nil {
		return nil, s.err(method, err)
	}
	s.log.Info("hold decided", "serial", u.Serial, "principal", c.Principal, "decision", decision, "reason", req.GetReason())
	pb, err := s.unitProto(ctx, u, s.running())
	return pb, s.err(method, err)
}

// ReleaseEK implements stationv1.StationServer: an admin releases the binding of a unit to
// its EK, with a reason (the store records it in the unit's events and the audit trail).
func (s *Server) ReleaseEK(ctx context.Context, req *stationv1.ReleaseEKRequest) (*stationv1.Unit, error) {
	const method = "ReleaseEK"
	c, _ := CallerFrom(ctx)
	if err := checkReason(req.GetReason(), true); err != nil {
		return nil, s.err(method, err)
	}
	switch {
	case req.GetSerial() == "":
		return nil, s.err(method, fmt.Errorf("serial is required: %w", ErrInvalidRequest))
	}
	running := s.running()
	if running[req.GetSerial()] {
		return nil, s.err(method, fmt.Errorf("unit %q: %w", req.GetSerial(), ErrUnitInSession))
	}
	u, err := s.cfg.Store.ReleaseEK(ctx, req.GetSerial(), req.GetReason())
	if err != nil {
		return nil, s.err(method, err)
	}
	s.log.Info("EK binding released", "serial", u.Serial, "principal", c.Principal, "reason", req.GetReason())
	pb, err := s.unitProto(ctx, u, running)
	return pb, s.err(method, err)
}

// ListRefusals implements stationv1.StationServer.
func (s *Server) ListRefusals(ctx context.Context, req *stationv1.ListRefusalsRequest) (*stationv1.ListRefusalsResponse, error) {
	const method = "ListRefusals"
	refusals, total, err := s.cfg.Store.Refusals(ctx)
	if err != nil {
		return nil, s.err(method, err)
	}
	resp := &stationv1.ListRefusalsResponse{Total: total}
	for _, r := range refusals {
		if req.GetSerial() != "" && r.Serial != req.GetSerial() {
			continue
		}
		resp.Refusals = append(resp.Refusals, &stationv1.Refusal{Seq: r.Seq, Time: timestamppb.New(r.Time), Peer: r.Peer,
			Serial: r.Serial, BootId: r.BootID, Code: r.Code, Message: r.Message, Fingerprints: r.Fingerprints})
	}
	return resp, nil
}

// GetTraveler implements stationv1.StationServer.
func (s *Server) GetTraveler(ctx context.Context, req *stationv1.GetTravelerRequest) (*stationv1.Traveler, error) {
	const method = "GetTraveler"
	if req.GetSerial() == "" {
		return nil, s.err(method, fmt.Errorf("serial is required: %w", ErrInvalidRequest))
	}
	rec, err := traveler.Build(ctx, s.cfg.Store, req.GetSerial())
	if err != nil {
		return nil, s.err(method, err)
	}
	b, err := rec.JSON()
	if err != nil {
		return nil, s.err(method, err)
	}
	return &stationv1.Traveler{Serial: rec.Serial, Json: b}, nil
}

// GetStatus implements stationv1.StationServer.
func (s *Server) GetStatus(ctx context.Context, _ *stationv1.GetStatusRequest) (*stationv1.Status, error) {
	const method = "GetStatus"
	now := s.cfg.Clock.Now()
	st := &stationv1.Status{
		StationId: s.cfg.StationID, Version: s.cfg.Version, UnitsPerStep: map[string]uint32{},
		WindowMinutes: uint32(math.Round(s.cfg.StatusWindow.Minutes())),
	}
	if s.cfg.Agents != nil {
		st.AgentsConnected = uint32(s.cfg.Agents.Connected())
	}
	if s.cfg.CAs != nil {
		for _, h := range s.cfg.CAs() {
			st.Cas = append(st.Cas, &stationv1.CAHealth{Name: h.Name, Breaker: h.Breaker, Requests: h.Requests,
				Errors: h.Errors, P50Ms: ms(h.P50.Seconds()), P95Ms: ms(h.P95.Seconds())})
		}
	}
	running := s.running()
	err := s.index.forEach(ctx, store.UnitQuery{}, func(u store.UnitState) bool {
		switch unitStatus(u, running) {
		case stationv1.UnitStatus_UNIT_STATUS_RUNNING:
			st.UnitsPerStep[u.CurrentStep]++
		case stationv1.UnitStatus_UNIT_STATUS_DONE:
			st.UnitsDone++
		case stationv1.UnitStatus_UNIT_STATUS_FAILED, stationv1.UnitStatus_UNIT_STATUS_HOLD, stationv1.UnitStatus_UNIT_STATUS_SCRAPPED:
			st.UnitsFailed++
		}
		return true
	})
	if err != nil {
		return nil, s.err(method, err)
	}
	// The rate is measured over the window, or over the store's life when it is shorter.
	span := s.cfg.StatusWindow
	if created, err := s.cfg.Store.CreatedAt(ctx); err == nil && now.Sub(created) < span {
		span = max(now.Sub(created), minRateSpan)
	}
	done, err := s.index.doneSince(ctx, now.Add(-span))
	if err != nil {
		return nil, s.err(method, err)
	}
	st.UnitsPerHour = float64(done) * 3600 / span.Seconds()
	return st, nil
}

// ms converts seconds to milliseconds.
func ms(sec float64) float64 { return sec * 1000 }

// running returns the serials the runner drives now, or nil without a runner.
func (s *Server) running() map[string]bool {
	if s.cfg.Runner == nil {
		return nil
	}
	m := map[string]bool{}
	for _, serial := range s.cfg.Runner.Running() {
		m[serial] = true
	}
	return m
}

// unitStatus maps a store status to the API's: a unit marked running that no session drives
// waits for its agent to reconnect (without a runner, running counts as running).
func unitStatus(u store.UnitState, running map[string]bool) stationv1.UnitStatus {
	switch u.Status {
	case store.StatusRunning:
		if running == nil || running[u.Serial] {
			return stationv1.UnitStatus_UNIT_STATUS_RUNNING
		}
		return stationv1.UnitStatus_UNIT_STATUS_WAITING
	case store.StatusPending:
		return stationv1.UnitStatus_UNIT_STATUS_WAITING
	case store.StatusDone:
		return stationv1.UnitStatus_UNIT_STATUS_DONE
	case store.StatusFailed, store.StatusAborted:
		return stationv1.UnitStatus_UNIT_STATUS_FAILED
	case store.StatusHold:
		return stationv1.UnitStatus_UNIT_STATUS_HOLD
	case store.StatusScrapped:
		return stationv1.UnitStatus_UNIT_STATUS_SCRAPPED
	}
	return stationv1.UnitStatus_UNIT_STATUS_UNSPECIFIED
}

// unitProto converts u (a full state or a listing row). The EK certificate digest and fixture
// slot are the unit's own (UnitState.EKCertSHA256, FixtureSlot) when the workflow recorded
// them; for a unit that has none (written before they were recorded, reopened by a rework
// whose EK verification has not passed, or whose EK verification did not lead to its
// authorization) they come from its latest verify_ek step record, unless that record is
// older than the unit's latest rework (currentVerifyEK).
func (s *Server) unitProto(ctx context.Context, u store.UnitState, running map[string]bool) (*stationv1.Unit, error) {
	if u.EKCertSHA256 != "" || u.FixtureSlot != "" || u.Steps[journal.StepVerifyEK].Attempts == 0 {
		return unitProtoWith(u, running, nil), nil
	}
	rec, err := s.currentVerifyEK(ctx, u)
	if err != nil {
		return nil, err
	}
	return unitProtoWith(u, running, rec), nil
}

// currentVerifyEK returns the unit's latest verify_ek record when it belongs to the unit's
// current provisioning: nil when it has none, or when the record began before the unit's
// latest rework step (the rework superseded that EK verification; store.UpdateUnit cleared
// what it recorded on the unit). A record that began at the same instant as the rework is
// counted as the superseded one's: an EK is never shown that might not be the current one.
func (s *Server) currentVerifyEK(ctx context.Context, u store.UnitState) (*store.StepRecord, error) {
	rec, ok, err := s.cfg.Store.LatestStep(ctx, u.Serial, journal.StepVerifyEK)
	if err != nil || !ok {
		return nil, err
	}
	if u.Steps[journal.StepRework].Attempts > 0 {
		rw, ok, err := s.cfg.Store.LatestStep(ctx, u.Serial, journal.StepRework)
		if err != nil {
			return nil, err
		}
		if ok && !rec.BeganAt.After(rw.BeganAt) {
			return nil, nil
		}
	}
	return &rec, nil
}

// unitProtoWith converts u given its latest verify_ek record (nil: none, or not needed).
func unitProtoWith(u store.UnitState, running map[string]bool, verifyEK *store.StepRecord) *stationv1.Unit {
	pb := &stationv1.Unit{
		Serial: u.Serial, WorkOrder: u.WorkOrderID, Profile: u.Profile, Status: unitStatus(u, running),
		Step: u.CurrentStep, ErrorCode: u.ErrorCode, ErrorMessage: u.ErrorMessage,
		Attempts: uint32(u.Steps[journal.StepVerifyEK].Attempts), StartTime: timestamppb.New(u.CreatedAt),
		UpdateTime: timestamppb.New(u.UpdatedAt), FixtureSlot: u.FixtureSlot, EkSha256: u.EKCertSHA256,
	}
	if rec := verifyEK; rec != nil {
		pb.FixtureSlot = fixtureSlot(rec.Intent)
		if rec.Ended && rec.ErrorCode == "" {
			var res journal.VerifyEKResult
			if json.Unmarshal(rec.Result, &res) == nil {
				pb.EkSha256 = res.CertSHA256
			}
		}
	}
	return pb
}

// fixtureSlot reads the slot the agent claimed from a verify_ek intent; "" when absent. It
// decodes only the Hello's fixture_slot of the identify report (journal.Identify: protojson
// with proto field names, or in older records encoding/json of the generated structs, whose
// tags are the same names), not the whole report: a listing reads it for every unit.
func fixtureSlot(intent []byte) string {
	var in struct {
		Identify string `json:"identify"`
	}
	if json.Unmarshal(intent, &in) != nil || in.Identify == "" {
		return ""
	}
	var id struct {
		Hello struct {
			FixtureSlot string `json:"fixture_slot"`
		} `json:"hello"`
	}
	if json.Unmarshal([]byte(in.Identify), &id) != nil {
		return ""
	}
	return id.Hello.FixtureSlot
}
