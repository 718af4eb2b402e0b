// Package reconcile closes possibly-issued entries: enrollments whose answer never reached the
// store. It learns which certificates a CA issued for an entry's key or CSR, by asking the CA's
// issuance search or from the CA's issuance log, records each one against the unit (superseded,
// or duplicate when the unit holds another active certificate of the role) and closes the entry.
package reconcile

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/devid-station/devid/station/store"
)

// Store is what reconciliation needs of the station's store.
type Store interface {
	PossiblyIssuedEntries(ctx context.Context, serial string, open bool) ([]store.PossiblyIssued, error)
	ClosePossiblyIssued(ctx context.Context, id, resolution string, certs []string) error
	CertificateBySHA256(ctx context.Context, sha string) (store.CertRecord, error)
	RecordCertificate(ctx context.Context, serial string, role store.Role, der []byte, chain ...[]byte) (store.CertRecord, error)
	SetCertificateStatus(ctx context.Context, serial, sha string, status store.CertStatus, reason string) error
}

// Issued is one certificate a CA says it issued.
type Issued struct {
	// DER is the certificate.
	DER []byte
	// CSRSHA256 is the hex SHA-256 of the CSR it was issued for, when the CA tells.
	CSRSHA256 string
	// Time is when the CA issued it (zero when unknown).
	Time time.Time
}

// Searcher asks a CA which certificates it issued for a key (hex SHA-256 of its
// SubjectPublicKeyInfo).
type Searcher interface {
	SearchByKey(ctx context.Context, publicKeySHA256 string) ([]Issued, error)
}

// Report counts what a reconciliation did.
type Report struct {
	// Closed entries, and the certificates recorded for them that the store did not know.
	Closed, Recorded int
	// Open is the number of entries of the CA still open afterwards.
	Open int
}

// Search reconciles the open entries of CA ca by asking s for each entry's key. Entries whose
// window ends after settled stay open: the CA may still be working on a request whose caller
// is gone, and a search now would close the entry before that certificate exists.
func Search(ctx context.Context, st Store, ca string, s Searcher, settled time.Time) (Report, error) {
	var rep Report
	entries, err := open(ctx, st, ca)
	if err != nil {
		return rep, err
	}
	var errs []error
	for _, p := range entries {
		if p.To.After(settled) {
			rep.Open++
			continue
		}
		issued, err := s.SearchByKey(ctx, p.PublicKeySHA256)
		if err != nil {
			errs = append(errs, fmt.Errorf("searching CA %s for %s: %w", ca, p.ID, err))
			rep.Open++
			continue
		}
		n, err := settle(ctx, st, p, issued, "asked CA "+ca)
		if err != nil {
			errs = append(errs, err)
			rep.Open++
			continue
		}
		rep.Closed++
		rep.Recorded += n
	}
	return rep, errors.Join(errs...)
}

// Import reconciles the open entries of CA ca with log, the CA's issuance log. An entry closes
// when the log holds a certificate for its key or CSR, or when the log reaches past the
// entry's window (the CA issued nothing for it); otherwise it stays open.
func Import(ctx context.Context, st Store, ca string, log []Issued) (Report, error) {
	var rep Report
	entries, err := open(ctx, st, ca)
	if err != nil {
		return rep, err
	}
	var last time.Time
	for _, e := range log {
		if e.Time.After(last) {
			last = e.Time
		}
	}
	var errs []error
	for _, p := range entries {
		var found []Issued
		for _, e := range log {
			if e.CSRSHA256 == p.CSRSHA256 || keyOf(e.DER) == p.PublicKeySHA256 {
				found = append(found, e)
			}
		}
		if len(found) == 0 && !last.After(p.To) {
			rep.Open++
			continue
		}
		n, err := settle(ctx, st, p, found, "issuance log of CA "+ca)
		if err != nil {
			errs = append(errs, err)
			rep.Open++
			continue
		}
		rep.Closed++
		rep.Recorded += n
	}
	return rep, errors.Join(errs...)
}

func open(ctx context.Context, st Store, ca string) ([]store.PossiblyIssued, error) {
	all, err := st.PossiblyIssuedEntries(ctx, "", true)
	if err != nil {
		return nil, fmt.Errorf("listing possibly issued certificates: %w", err)
	}
	var out []store.PossiblyIssued
	for _, p := range all {
		if p.CA == ca {
			out = append(out, p)
		}
	}
	return out, nil
}

// settle records the certificates issued for entry p's key that the store does not know yet,
// and closes p. It returns how many it recorded.
func settle(ctx context.Context, st Store, p store.PossiblyIssued, issued []Issued, source string) (int, error) {
	var shas []string
	recorded := 0
	for _, e := range issued {
		c, err := x509.ParseCertificate(e.DER)
		if err != nil {
			return recorded, fmt.Errorf("%s: certificate from %s: %w", p.ID, source, err)
		}
		if keyOf(c.Raw) != p.PublicKeySHA256 {
			continue // a CSR hash match for another key is not this unit's certificate
		}
		sha := digest(c.Raw)
		shas = append(shas, sha)
		if _, err := st.CertificateBySHA256(ctx, sha); err == nil {
			continue
		} else if !errors.Is(err, store.ErrNotFound) {
			return recorded, fmt.Errorf("%s: %w", p.ID, err)
		}
		rec, err := st.RecordCertificate(ctx, p.Serial, p.Role, c.Raw)
		if err != nil {
			return recorded, fmt.Errorf("%s: recording certificate %s: %w", p.ID, sha, err)
		}
		recorded++
		if !rec.Duplicate {
			// Never installed: nobody uses it, whatever the unit holds now.
			if err := st.SetCertificateStatus(ctx, p.Serial, sha, store.CertSuperseded,
				"issued for an enrollment whose answer was lost; found by reconciliation ("+source+")"); err != nil {
				return recorded, fmt.Errorf("%s: %w", p.ID, err)
			}
		}
	}
	res := fmt.Sprintf("reconciled with the %s: %d certificate(s) issued for the key", source, len(shas))
	if err := st.ClosePossiblyIssued(ctx, p.ID, res, shas); err != nil {
		return recorded, fmt.Errorf("closing %s: %w", p.ID, err)
	}
	return recorded, nil
}

// keyOf is the hex SHA-256 of the SubjectPublicKeyInfo of the certificate der ("" when it does
// not parse).
func keyOf(der []byte) string {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return ""
	}
	return digest(c.RawSubjectPublicKeyInfo)
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
