package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bPossiblyIssued holds the possibly-issued entries by ID; it is created by the first
// OpenPossiblyIssued (older store files do not have it).
var bPossiblyIssued = []byte("possibly_issued")

// Audit actions of possibly-issued entries.
const (
	AuditActionPossiblyIssuedOpened = "possibly_issued.opened"
	AuditActionPossiblyIssuedClosed = "possibly_issued.closed"
)

// PossiblyIssued records an enrollment request that left the station but whose answer never
// reached the store: the CA may have issued a certificate for the key that nobody recorded. It
// stays open until a reconciliation asked the CA (or read its issuance log) and recorded every
// certificate the CA issued for the key or CSR.
type PossiblyIssued struct {
	// ID is "<serial>/<step>/<attempt>": the enrollment attempt whose answer was lost.
	ID      string `json:"id"`
	Serial  string `json:"serial"`
	Role    Role   `json:"role"`
	Step    string `json:"step"`
	Attempt uint64 `json:"attempt"`
	// CA is the station's name of the CA asked.
	CA string `json:"ca"`
	// CSRSHA256 is the hex SHA-256 of the CSR sent; KeyName the key's TPM Name (hex) and
	// PublicKeySHA256 the hex SHA-256 of its SubjectPublicKeyInfo.
	CSRSHA256       string `json:"csr_sha256"`
	KeyName         string `json:"key_name,omitempty"`
	PublicKeySHA256 string `json:"public_key_sha256"`
	// From and To bound when the CA may have issued: the request's intent and the moment the
	// station found its answer lost.
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// OpenedAt is when the entry was recorded; ClosedAt, Resolution and Certificates (hex
	// SHA-256 of the certificates the reconciliation recorded) are set when it closed.
	OpenedAt     time.Time `json:"opened_at"`
	Closed       bool      `json:"closed,omitempty"`
	ClosedAt     time.Time `json:"closed_at,omitzero"`
	Resolution   string    `json:"resolution,omitempty"`
	Certificates []string  `json:"certificates,omitempty"`
}

// PossiblyIssuedID is the ID of the entry of a step attempt.
func PossiblyIssuedID(ref StepRef) string {
	return fmt.Sprintf("%s/%s/%d", ref.Serial, ref.Step, ref.Attempt)
}

// OpenPossiblyIssued records p, open (ID and OpenedAt are filled in). Opening an entry of the
// same attempt again returns the recorded one. The unit must exist; the write is audited.
func (s *Store) OpenPossiblyIssued(ctx context.Context, p PossiblyIssued) (PossiblyIssued, error) {
	if err := checkSerial(p.Serial); err != nil {
		return PossiblyIssued{}, err
	}
	if p.Role != RoleIDevID && p.Role != RoleLDevID && p.Role != RoleIAK {
		return PossiblyIssued{}, fmt.Errorf("possibly issued: role %q: %w", p.Role, ErrInvalidArgument)
	}
	if !hex256RE.MatchString(p.PublicKeySHA256) || !hex256RE.MatchString(p.CSRSHA256) || p.CA == "" {
		return PossiblyIssued{}, fmt.Errorf("possibly issued: CA, CSR and key hashes are required: %w", ErrInvalidArgument)
	}
	p.ID = PossiblyIssuedID(StepRef{Serial: p.Serial, Step: p.Step, Attempt: p.Attempt})
	p.Closed, p.ClosedAt, p.Resolution, p.Certificates = false, time.Time{}, "", nil
	var out PossiblyIssued
	err := s.update(ctx, func(w *wtx) error {
		if _, err := w.loadUnit(p.Serial); err != nil {
			return skip(err)
		}
		b, err := w.tx.CreateBucketIfNotExists(bPossiblyIssued)
		if err != nil {
			return err
		}
		if ok, err := get(b, []byte(p.ID), &out); err != nil || ok {
			return err
		}
		out = p
		out.OpenedAt = w.now
		if err := put(b, []byte(out.ID), &out); err != nil {
			return err
		}
		return w.audit(AuditEvent{Serial: p.Serial, Action: AuditActionPossiblyIssuedOpened, Result: ResultOK,
			Fingerprints: []string{p.PublicKeySHA256},
			Details:      map[string]string{"id": p.ID, "ca": p.CA, "csr_sha256": p.CSRSHA256, "role": string(p.Role)}})
	})
	return out, err
}

// PossiblyIssuedEntries returns the entries of serial ("" for every unit), open ones only
// when open is set, oldest first. One unit's are read from its own keys (an entry's ID
// begins with its serial and a slash, which no serial holds), not from every unit's: a
// traveler reads them for each unit of a QA export.
func (s *Store) PossiblyIssuedEntries(ctx context.Context, serial string, open bool) ([]PossiblyIssued, error) {
	var out []PossiblyIssued
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bPossiblyIssued)
		if b == nil {
			return nil
		}
		each := func(k, v []byte) error {
			var p PossiblyIssued
			if err := json.Unmarshal(v, &p); err != nil {
				return fmt.Errorf("decoding possibly issued %s: %w", k, err)
			}
			if (serial == "" || p.Serial == serial) && (!open || !p.Closed) {
				out = append(out, p)
			}
			return nil
		}
		if serial == "" {
			return b.ForEach(each)
		}
		prefix := []byte(serial + "/")
		c := b.Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if err := each(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	slices.SortFunc(out, func(a, b PossiblyIssued) int {
		return cmp.Or(a.OpenedAt.Compare(b.OpenedAt), cmp.Compare(a.ID, b.ID))
	})
	return out, err
}

// ClosePossiblyIssued closes the entry id with a resolution, naming the certificates (hex
// SHA-256) the reconciliation recorded for it. Closing a closed entry is refused
// (ErrInvalidArgument); an unknown one is ErrNotFound. The write is audited.
func (s *Store) ClosePossiblyIssued(ctx context.Context, id, resolution string, certs []string) error {
	if resolution == "" {
		return fmt.Errorf("closing possibly issued %s without a resolution: %w", id, ErrInvalidArgument)
	}
	return s.update(ctx, func(w *wtx) error {
		b := w.tx.Bucket(bPossiblyIssued)
		var p PossiblyIssued
		ok := false
		if b != nil {
			var err error
			if ok, err = get(b, []byte(id), &p); err != nil {
				return err
			}
		}
		if !ok {
			return skip(fmt.Errorf("possibly issued %q: %w", id, ErrNotFound))
		}
		if p.Closed {
			return skip(fmt.Errorf("possibly issued %q is closed: %w", id, ErrInvalidArgument))
		}
		p.Closed, p.ClosedAt, p.Resolution, p.Certificates = true, w.now, resolution, slices.Clone(certs)
		if err := put(b, []byte(id), &p); err != nil {
			return err
		}
		return w.audit(AuditEvent{Serial: p.Serial, Action: AuditActionPossiblyIssuedClosed, Result: ResultOK,
			Fingerprints: append([]string{p.PublicKeySHA256}, certs...),
			Details:      map[string]string{"id": id, "resolution": resolution}})
	})
}
