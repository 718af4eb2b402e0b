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
		ub, u, err := w.s.loadUnit(w.tx, serial)
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
		if err := w.saveUnit(ub, &u); err != nil {
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
