package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"math/big"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// issuerSerialKey returns the issuer + serial index key of a certificate and
// its parts.
func issuerSerialKey(rawIssuer []byte, serial *big.Int) (key []byte, issuerHash, serialHex string) {
	h := sha256.Sum256(rawIssuer)
	issuerHash, serialHex = hex.EncodeToString(h[:]), serial.Text(16)
	return []byte("iss/" + issuerHash + "/" + serialHex), issuerHash, serialHex
}

func shaKey(sha string) []byte { return []byte("sha256/" + sha) }

// RecordCertificate indexes a certificate issued to the unit serial (which
// must exist) in role, by issuer + serial number and by SHA-256, and adds it
// to the unit's certificates, active. Recording the same DER again returns the
// existing record. A second, different certificate for the same unit and
// role while another is active is recorded too, with Duplicate set and status
// CertDuplicate, and the event and audit record say so. A certificate already recorded for another unit or role, or a new
// certificate reusing a recorded issuer + serial number, is refused. chain, the CA's
// certificates that came with it (issuing CA first), is kept with it.
func (s *Store) RecordCertificate(ctx context.Context, serial string, role Role, der []byte, chain ...[]byte) (CertRecord, error) {
	if err := checkSerial(serial); err != nil {
		return CertRecord{}, err
	}
	if role != RoleIDevID && role != RoleLDevID && role != RoleIAK {
		return CertRecord{}, fmt.Errorf("certificate role %q: %w", role, ErrInvalidArgument)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return CertRecord{}, fmt.Errorf("parsing certificate: %w: %w", ErrInvalidArgument, err)
	}
	issKey, issuerHash, serialHex := issuerSerialKey(cert.RawIssuer, cert.SerialNumber)
	sha := digest(der)
	var out CertRecord
	err = s.update(ctx, func(w *wtx) error {
		u, err := w.loadUnit(serial)
		if err != nil {
			return skip(err)
		}
		idx := w.tx.Bucket(bCertIndex)
		a := AuditEvent{Serial: serial, Action: EventCertRecorded, Fingerprints: []string{sha},
			Details: map[string]string{"role": string(role), "issuer_hash": issuerHash, "serial_hex": serialHex}}
		var existing CertRecord
		if ok, err := get(idx, shaKey(sha), &existing); err != nil {
			return err
		} else if ok {
			if existing.Serial == serial && existing.Role == role {
				out = existing
				return nil
			}
			a.Details["recorded_serial"], a.Details["recorded_role"] = existing.Serial, string(existing.Role)
			return w.refuse(a, fmt.Errorf("certificate %s: %w", sha, ErrCertBoundElsewhere))
		}
		if idx.Get(issKey) != nil {
			return w.refuse(a, fmt.Errorf("certificate %s: issuer %s serial %s: %w", sha, issuerHash, serialHex, ErrCertSerialReused))
		}
		rec := CertRecord{Serial: serial, Role: role, SHA256: sha, IssuerHash: issuerHash, SerialHex: serialHex,
			DER: der, Chain: chain, RecordedAt: w.now}
		status := CertActive
		for _, c := range u.Certificates {
			if c.Role == role && c.Current() == CertActive {
				rec.Duplicate, status = true, CertDuplicate
			}
		}
		// One copy of the record, under its SHA-256; the issuer + serial number key refers to it.
		if err := put(idx, shaKey(sha), &rec); err != nil {
			return err
		}
		if err := idx.Put(issKey, shaKey(sha)); err != nil {
			return err
		}
		ref := CertRef{Role: role, SHA256: sha, IssuerHash: issuerHash, SerialHex: serialHex, Duplicate: rec.Duplicate, Status: status}
		if rec.Duplicate {
			ref.Reason = "another " + string(role) + " certificate was active when this one was issued"
		}
		u.Certificates = append(u.Certificates, ref)
		if err := w.saveUnit(&u); err != nil {
			return err
		}
		data := map[string]string{"role": string(role), "sha256": sha}
		if rec.Duplicate {
			data["duplicate"] = "true"
			a.Details["duplicate"] = "true"
		}
		if err := w.event(Event{Serial: serial, Type: EventCertRecorded, Status: u.Status, Data: data}); err != nil {
			return err
		}
		out = rec
		a.Result = ResultOK
		return w.audit(a)
	})
	if err != nil {
		return CertRecord{}, err
	}
	return out, nil
}

// CertificateBySHA256 returns the certificate whose DER has the hex SHA-256
// sha, or ErrNotFound.
func (s *Store) CertificateBySHA256(ctx context.Context, sha string) (CertRecord, error) {
	return s.certificate(ctx, shaKey(sha))
}

// CertificateByIssuerSerial returns the certificate with the raw issuer DN
// (x509.Certificate.RawIssuer) and serial number, or ErrNotFound.
func (s *Store) CertificateByIssuerSerial(ctx context.Context, rawIssuer []byte, serial *big.Int) (CertRecord, error) {
	key, _, _ := issuerSerialKey(rawIssuer, serial)
	return s.certificate(ctx, key)
}

func (s *Store) certificate(ctx context.Context, key []byte) (CertRecord, error) {
	var rec CertRecord
	err := s.view(ctx, func(tx *bolt.Tx) error {
		idx := tx.Bucket(bCertIndex)
		if v := idx.Get(key); len(v) > 0 && v[0] != '{' {
			// An issuer + serial number key refers to the record under its SHA-256 (records
			// written before schema 4 hold a copy).
			if !bytes.HasPrefix(v, shaKey("")) {
				return fmt.Errorf("certificate %s: index entry %q: %w", key, v, errStateFormat)
			}
			key = v
		}
		data := idx.Get(key)
		if data == nil {
			return fmt.Errorf("certificate %s: %w", key, ErrNotFound)
		}
		// get's encoding/json value and errors, without its reflection (recjson.go).
		if err := decodeCertRecord(data, &rec); err != nil {
			return fmt.Errorf("decoding %s: %w", key, err)
		}
		return nil
	})
	return rec, err
}

// SetCertificateStatus sets the status and reason of the unit's certificate sha
// (CertSuperseded after a rework, CertRefused when the station refused a CA's
// answer, or CertActive). The certificate stays in the unit's history; the
// change is audited and sent as an event. Setting the same status again is a
// no-op.
func (s *Store) SetCertificateStatus(ctx context.Context, serial, sha string, status CertStatus, reason string) error {
	if err := checkSerial(serial); err != nil {
		return err
	}
	switch status {
	case CertActive, CertSuperseded, CertRefused, CertDuplicate:
	default:
		return fmt.Errorf("certificate status %q: %w", status, ErrInvalidArgument)
	}
	if status != CertActive && reason == "" {
		return fmt.Errorf("certificate status %s without a reason: %w", status, ErrInvalidArgument)
	}
	return s.update(ctx, func(w *wtx) error {
		u, err := w.loadUnit(serial)
		if err != nil {
			return skip(err)
		}
		i := slices.IndexFunc(u.Certificates, func(c CertRef) bool { return c.SHA256 == sha })
		if i < 0 {
			return skip(fmt.Errorf("certificate %s of unit %q: %w", sha, serial, ErrNotFound))
		}
		c := &u.Certificates[i]
		if c.Current() == status && c.Reason == reason {
			return nil
		}
		c.Status, c.Reason = status, reason
		if err := w.saveUnit(&u); err != nil {
			return err
		}
		data := map[string]string{"role": string(c.Role), "sha256": sha, "status": string(status), "reason": reason}
		if err := w.event(Event{Serial: serial, Type: EventCertStatus, Status: u.Status, Data: data}); err != nil {
			return err
		}
		return w.audit(AuditEvent{Serial: serial, Action: EventCertStatus, Result: ResultOK, Fingerprints: []string{sha}, Details: data})
	})
}
