package workflow

import (
	"context"
	"crypto/x509"
	"errors"

	"github.com/devid-station/devid/station/store"
)

// recorded finds the active certificate the store already holds for role's key: the station
// recorded it, then stopped before the enrollment's result was saved. Resume uses it instead of
// enrolling again (a second request would get a second certificate from a CA that does not
// deduplicate). A recorded certificate that does not pass the checks of a fresh answer is
// marked refused and not used.
func (u *unit) recorded(ctx context.Context, role string) (*Issued, bool, error) {
	k := u.keys[role]
	st, err := u.r.cfg.Journal.Unit(ctx, u.serial)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, false, nil
		}
		return nil, false, fail(CodeInternal, err, "reading the unit's certificates")
	}
	for i := len(st.Certificates) - 1; i >= 0; i-- {
		c := st.Certificates[i]
		if c.Role != k.role || c.Current() != store.CertActive {
			continue
		}
		rec, err := u.r.cfg.Journal.CertificateBySHA256(ctx, c.SHA256)
		if err != nil {
			return nil, false, fail(CodeInternal, err, "reading the recorded %s certificate", role)
		}
		leaf, err := x509.ParseCertificate(rec.DER)
		if err != nil || !publicKeyEqual(leaf.PublicKey, k.key.PublicKey) {
			continue // another key's certificate: rework cleanup decides about it
		}
		issued := &Issued{Leaf: leaf}
		for _, der := range rec.Chain {
			ca, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, false, fail(CodeInternal, err, "reading the chain of the recorded %s certificate", role)
			}
			issued.Chain = append(issued.Chain, ca)
		}
		if err := u.checkIssued(role, issued, rec.RecordedAt); err != nil {
			u.refuseCert(ctx, rec.DER, err.Error())
			continue
		}
		return issued, true, nil
	}
	return nil, false, nil
}

// chainDER is the DER of each certificate of chain.
func chainDER(chain []*x509.Certificate) [][]byte {
	out := make([][]byte, len(chain))
	for i, c := range chain {
		out[i] = c.Raw
	}
	return out
}
