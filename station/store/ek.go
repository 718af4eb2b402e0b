package store

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// EKFingerprint returns the fingerprint the store indexes EKs by: the
// lowercase hex SHA-256 of the EK public key DER (SubjectPublicKeyInfo).
func EKFingerprint(publicKeyDER []byte) string { return digest(publicKeyDER) }

// BindEK binds the EK fingerprint fp to the unit serial, which must exist.
// Binding the same pair again is a no-op. An EK bound to another serial is
// refused with an *EKBoundError (ErrEKBoundElsewhere); a unit bound to
// another EK is refused with ErrEKMismatch. Refusals are audited.
func (s *Store) BindEK(ctx context.Context, fp, serial string) error {
	if !hex256RE.MatchString(fp) {
		return fmt.Errorf("EK fingerprint %q: %w", fp, ErrInvalidArgument)
	}
	if err := checkSerial(serial); err != nil {
		return err
	}
	return s.update(ctx, func(w *wtx) error {
		u, err := w.loadUnit(serial)
		if err != nil {
			return skip(err)
		}
		idx := w.tx.Bucket(bEKIndex)
		bound := string(idx.Get([]byte(fp)))
		if bound == serial && u.EKFingerprint == fp {
			return nil
		}
		a := AuditEvent{Serial: serial, Action: EventEKBound, Fingerprints: []string{fp}}
		if bound != "" && bound != serial {
			a.Details = map[string]string{"bound_serial": bound}
			return w.refuse(a, &EKBoundError{Fingerprint: fp, Serial: bound})
		}
		if u.EKFingerprint != "" && u.EKFingerprint != fp {
			a.Details = map[string]string{"unit_ek": u.EKFingerprint}
			return w.refuse(a, fmt.Errorf("unit %q has EK %s: %w", serial, u.EKFingerprint, ErrEKMismatch))
		}
		if err := idx.Put([]byte(fp), []byte(serial)); err != nil {
			return err
		}
		u.EKFingerprint = fp
		if err := w.saveUnit(&u); err != nil {
			return err
		}
		if err := w.event(Event{Serial: serial, Type: EventEKBound, Status: u.Status,
			Data: map[string]string{"ek_fingerprint": fp}}); err != nil {
			return err
		}
		a.Result = ResultOK
		return w.audit(a)
	})
}

// UnitByEK returns the serial the EK fingerprint is bound to, or ErrNotFound.
func (s *Store) UnitByEK(ctx context.Context, fp string) (string, error) {
	var serial string
	err := s.view(ctx, func(tx *bolt.Tx) error {
		serial = string(tx.Bucket(bEKIndex).Get([]byte(fp)))
		if serial == "" {
			return fmt.Errorf("EK %s: %w", fp, ErrNotFound)
		}
		return nil
	})
	return serial, err
}

// ReleaseEK removes the binding of the unit serial to its EK, so that the EK may be bound
// again (to this serial or another) once its TPM proves possession anew: an RMA, or a unit
// that booted with a wrong serial. reason is required; the release is recorded as an event of
// the unit and in the audit chain with the caller's principal. A unit without a binding is
// refused with ErrNotFound.
func (s *Store) ReleaseEK(ctx context.Context, serial, reason string) (UnitState, error) {
	if err := checkSerial(serial); err != nil {
		return UnitState{}, err
	}
	if reason == "" {
		return UnitState{}, fmt.Errorf("releasing the EK of %q: reason: %w", serial, ErrInvalidArgument)
	}
	var out UnitState
	err := s.update(ctx, func(w *wtx) error {
		u, err := w.loadUnit(serial)
		if err != nil {
			return skip(err)
		}
		fp := u.EKFingerprint
		if fp == "" {
			return skip(fmt.Errorf("unit %q has no EK binding: %w", serial, ErrNotFound))
		}
		idx := w.tx.Bucket(bEKIndex)
		// An empty value is no binding (nothing is deleted; the audit chain keeps the history).
		if string(idx.Get([]byte(fp))) == serial {
			if err := idx.Put([]byte(fp), nil); err != nil {
				return err
			}
		}
		u.EKFingerprint = ""
		if err := w.saveUnit(&u); err != nil {
			return err
		}
		details := map[string]string{"ek_fingerprint": fp, "reason": reason, "by": w.principal}
		if err := w.event(Event{Serial: serial, Type: EventEKReleased, Status: u.Status, Data: details}); err != nil {
			return err
		}
		out = u
		return w.audit(AuditEvent{Serial: serial, Action: EventEKReleased, Result: ResultOK,
			Fingerprints: []string{fp}, Details: details})
	})
	if err != nil {
		return UnitState{}, err
	}
	return out, nil
}
