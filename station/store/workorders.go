package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

func (wo *WorkOrder) validate() error {
	bad := func(what string) error {
		return fmt.Errorf("work order %q: %s: %w", wo.ID, what, ErrInvalidArgument)
	}
	switch {
	case wo.ID == "" || len(wo.ID) > 128:
		return bad("id")
	case wo.Profile == "":
		return bad("profile")
	case (len(wo.Serials) == 0) == (wo.Range == nil):
		return bad("exactly one of serials and range")
	case wo.Range != nil && (wo.Range.From > wo.Range.To || wo.Range.Width < 0 || wo.Range.Width > 19):
		return bad("range")
	}
	for _, s := range wo.Serials {
		if err := checkSerial(s); err != nil {
			return fmt.Errorf("work order %q: %w", wo.ID, err)
		}
	}
	return nil
}

// sameContent reports whether two work orders authorize the same thing.
func (wo *WorkOrder) sameContent(o *WorkOrder) bool {
	if wo.Profile != o.Profile || !slices.Equal(wo.Serials, o.Serials) || (wo.Range == nil) != (o.Range == nil) {
		return false
	}
	return wo.Range == nil || *wo.Range == *o.Range
}

// CreateWorkOrder stores a new open work order. ID, Profile and either
// Serials or Range are taken from wo; CreatedBy (the principal of ctx, as the
// audit trail and the event name it, whatever wo says), CreatedAt and Status
// are filled in. Creating an identical work order again returns the
// stored one; another with the same id is refused with ErrWorkOrderExists.
func (s *Store) CreateWorkOrder(ctx context.Context, wo WorkOrder) (WorkOrder, error) {
	if err := wo.validate(); err != nil {
		return WorkOrder{}, err
	}
	var out WorkOrder
	err := s.update(ctx, func(w *wtx) error {
		b := w.tx.Bucket(bWorkOrders)
		a := AuditEvent{Action: EventWorkOrderCreated, Details: map[string]string{"work_order": wo.ID, "profile": wo.Profile}}
		var existing WorkOrder
		if ok, err := get(b, []byte(wo.ID), &existing); err != nil {
			return err
		} else if ok {
			if existing.sameContent(&wo) {
				out = existing
				return nil
			}
			return w.refuse(a, fmt.Errorf("work order %q: %w", wo.ID, ErrWorkOrderExists))
		}
		n := wo
		n.Status, n.CreatedBy, n.CreatedAt, n.ClosedBy, n.ClosedAt = WorkOrderOpen, w.principal, w.now, "", time.Time{}
		if err := put(b, []byte(n.ID), &n); err != nil {
			return err
		}
		if err := w.event(Event{Type: EventWorkOrderCreated, Data: a.Details}); err != nil {
			return err
		}
		out = n
		a.Result = ResultOK
		return w.audit(a)
	})
	if err != nil {
		return WorkOrder{}, err
	}
	return out, nil
}

// CloseWorkOrder closes an open work order; closing a closed one is a no-op.
// Units already authorized keep their state; Authorize no longer matches it. A reason, when
// given, is recorded in the closing event and its audit record.
func (s *Store) CloseWorkOrder(ctx context.Context, id, reason string) (WorkOrder, error) {
	var out WorkOrder
	err := s.update(ctx, func(w *wtx) error {
		b := w.tx.Bucket(bWorkOrders)
		if ok, err := get(b, []byte(id), &out); err != nil {
			return err
		} else if !ok {
			return skip(fmt.Errorf("work order %q: %w", id, ErrNotFound))
		}
		if out.Status == WorkOrderClosed {
			return nil
		}
		out.Status, out.ClosedBy, out.ClosedAt = WorkOrderClosed, w.principal, w.now
		if err := put(b, []byte(id), &out); err != nil {
			return err
		}
		details := map[string]string{"work_order": id}
		if reason != "" {
			details["reason"] = reason
		}
		if err := w.event(Event{Type: EventWorkOrderClosed, Data: details}); err != nil {
			return err
		}
		return w.audit(AuditEvent{Action: EventWorkOrderClosed, Result: ResultOK, Details: details})
	})
	if err != nil {
		return WorkOrder{}, err
	}
	return out, nil
}

// WorkOrder returns the work order id, or ErrNotFound.
func (s *Store) WorkOrder(ctx context.Context, id string) (WorkOrder, error) {
	var wo WorkOrder
	err := s.view(ctx, func(tx *bolt.Tx) error {
		ok, err := get(tx.Bucket(bWorkOrders), []byte(id), &wo)
		if err == nil && !ok {
			err = fmt.Errorf("work order %q: %w", id, ErrNotFound)
		}
		return err
	})
	return wo, err
}

// WorkOrders returns every work order, ordered by id.
func (s *Store) WorkOrders(ctx context.Context) ([]WorkOrder, error) {
	var out []WorkOrder
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bWorkOrders).ForEach(func(k, v []byte) error {
			var wo WorkOrder
			if err := json.Unmarshal(v, &wo); err != nil {
				return fmt.Errorf("decoding work order %q: %w", k, err)
			}
			out = append(out, wo)
			return nil
		})
	})
	return out, err
}

// Authorize returns the first open work order (by id) for profile that
// contains serial. It returns ErrNotAuthorized when there is none, or when
// the unit is done or aborted and has no pending rework authorization. It
// reads only; the workflow records its decision.
func (s *Store) Authorize(ctx context.Context, serial, profile string) (WorkOrder, error) {
	var out WorkOrder
	err := s.view(ctx, func(tx *bolt.Tx) error {
		found := false
		err := tx.Bucket(bWorkOrders).ForEach(func(k, v []byte) error {
			if found {
				return nil
			}
			var wo WorkOrder
			if err := json.Unmarshal(v, &wo); err != nil {
				return fmt.Errorf("decoding work order %q: %w", k, err)
			}
			if wo.Status == WorkOrderOpen && wo.Profile == profile && wo.Contains(serial) {
				out, found = wo, true
			}
			return nil
		})
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("serial %q profile %q: no open work order: %w", serial, profile, ErrNotAuthorized)
		}
		if tx.Bucket(bUnitStates).Get([]byte(serial)) == nil {
			return nil
		}
		u, err := s.loadUnit(tx, serial)
		if err != nil {
			return err
		}
		if u.Status.closed() && u.Rework == nil {
			return fmt.Errorf("serial %q is %s and has no rework authorization: %w", serial, u.Status, ErrNotAuthorized)
		}
		return nil
	})
	if err != nil {
		return WorkOrder{}, err
	}
	return out, nil
}

// AuthorizeRework lets the unit serial, which must exist, be provisioned
// again: by names the operator who authorized it and reason says why. The
// authorization is consumed when the workflow reopens the unit (UpdateUnit
// from done or aborted). A pending authorization is replaced; the audit log
// keeps both.
func (s *Store) AuthorizeRework(ctx context.Context, serial, by, reason string) (UnitState, error) {
	if err := checkSerial(serial); err != nil {
		return UnitState{}, err
	}
	if by == "" || reason == "" {
		return UnitState{}, fmt.Errorf("rework of %q: by and reason: %w", serial, ErrInvalidArgument)
	}
	var out UnitState
	err := s.update(ctx, func(w *wtx) error {
		u, err := w.loadUnit(serial)
		if err != nil {
			return skip(err)
		}
		if u.Status == StatusScrapped {
			return skip(fmt.Errorf("rework of %q: the unit is scrapped: %w", serial, ErrUnitClosed))
		}
		u.Rework = &Rework{By: by, Reason: reason, AuthorizedAt: w.now}
		if err := w.saveUnit(&u); err != nil {
			return err
		}
		details := map[string]string{"by": by, "reason": reason}
		if err := w.event(Event{Serial: serial, Type: EventReworkAuthorized, Status: u.Status, Data: details}); err != nil {
			return err
		}
		out = u
		return w.audit(AuditEvent{Serial: serial, Action: EventReworkAuthorized, Result: ResultOK,
			Fingerprints: unitFingerprints(&u), Details: details})
	})
	if err != nil {
		return UnitState{}, err
	}
	return out, nil
}

// Hold decisions (DecideHold).
const (
	// DecisionRework authorizes a held unit's rework: it is provisioned again on its next
	// connection, its TPM objects removed first.
	DecisionRework = "rework"
	// DecisionScrap scraps a held unit for good.
	DecisionScrap = "scrap"
)

// DecideHold records QA's or an admin's decision on a unit on hold: DecisionRework
// authorizes a rework (the unit stays on hold until it reconnects), DecisionScrap marks it
// scrapped. by, decision and reason go into the audit trail and the unit's events. A unit that
// is not on hold gives ErrNotOnHold; an unknown one ErrNotFound.
func (s *Store) DecideHold(ctx context.Context, serial, by, decision, reason string) (UnitState, error) {
	if err := checkSerial(serial); err != nil {
		return UnitState{}, err
	}
	if by == "" || reason == "" || (decision != DecisionRework && decision != DecisionScrap) {
		return UnitState{}, fmt.Errorf("hold decision on %q: by, reason and decision %q (rework or scrap): %w", serial, decision, ErrInvalidArgument)
	}
	var out UnitState
	err := s.update(ctx, func(w *wtx) error {
		u, err := w.loadUnit(serial)
		if err != nil {
			return skip(err)
		}
		if u.Status != StatusHold {
			return skip(fmt.Errorf("hold decision on %q: the unit is %s, not on hold: %w", serial, u.Status, ErrNotOnHold))
		}
		details := map[string]string{"by": by, "decision": decision, "reason": reason, "error_code": u.ErrorCode}
		if decision == DecisionScrap {
			u.Status = StatusScrapped
		} else {
			u.Rework = &Rework{By: by, Reason: reason, AuthorizedAt: w.now}
		}
		if err := w.saveUnit(&u); err != nil {
			return err
		}
		if err := w.event(Event{Serial: serial, Type: EventHoldDecided, Status: u.Status, ErrorCode: u.ErrorCode, Data: details}); err != nil {
			return err
		}
		out = u
		return w.audit(AuditEvent{Serial: serial, Action: EventHoldDecided, Result: ResultOK,
			Fingerprints: unitFingerprints(&u), Details: details})
	})
	if err != nil {
		return UnitState{}, err
	}
	return out, nil
}
