package store

import (
	"context"
	"fmt"
)

// SeedUnit is a unit as Seed writes it: its state and step records as they stand.
type SeedUnit struct {
	State UnitState
	// Steps are written under their Step and Attempt as given.
	Steps []StepRecord
}

// Seed writes units as they stand, each with its step records and its unit.created event, in
// one transaction with an audit record (store.write, detail seeded) per unit, index included.
// It is for load tests and benchmarks, which need a store of many units far faster than the
// workflow writes them. A serial that exists already, or an invalid one, refuses the whole
// call and nothing is written.
func (s *Store) Seed(ctx context.Context, units []SeedUnit) error {
	for _, su := range units {
		if err := checkSerial(su.State.Serial); err != nil {
			return err
		}
		if !su.State.Status.valid() {
			return fmt.Errorf("unit %q: status %q: %w", su.State.Serial, su.State.Status, ErrInvalidArgument)
		}
		for _, rec := range su.Steps {
			if err := checkStep(rec.Step); err != nil {
				return err
			}
		}
	}
	return s.update(ctx, func(w *wtx) error {
		states, steps := w.tx.Bucket(bUnitStates), w.tx.Bucket(bStepRecords)
		for _, su := range units {
			u := su.State
			if states.Get([]byte(u.Serial)) != nil {
				return fmt.Errorf("seeding unit %q: it exists", u.Serial)
			}
			for _, rec := range su.Steps {
				rec.Serial = u.Serial
				if err := put(steps, stepKey(u.Serial, rec.Step, rec.Attempt), &rec); err != nil {
					return err
				}
			}
			if err := w.event(Event{Serial: u.Serial, Type: EventUnitCreated, Status: StatusPending}); err != nil {
				return err
			}
			if err := w.saveUnit(&u); err != nil {
				return err
			}
			if err := w.audit(AuditEvent{Serial: u.Serial, Action: AuditActionWrite, Details: map[string]string{"seeded": string(u.Status)}}); err != nil {
				return err
			}
			if err := w.flush(); err != nil {
				return err
			}
		}
		return nil
	})
}
