package workflow

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/devid-station/devid/station/journal"
	"github.com/devid-station/devid/station/store"
)

// PublicKeySHA256 is the lowercase hex SHA-256 of pub's DER SubjectPublicKeyInfo ("" when pub
// cannot be encoded).
func PublicKeySHA256(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// possiblyIssued records that the enrollment attempt ref (its intent raw, journaled at from)
// may have made the CA issue a certificate nobody recorded: its answer was lost, or the request
// failed after it left. The entry stays open until a reconciliation closes it.
func (u *unit) possiblyIssued(ctx context.Context, ref store.StepRef, raw []byte, from time.Time) error {
	var in journal.Intent
	if err := json.Unmarshal(raw, &in); err != nil {
		return fmt.Errorf("reading the intent of %s: %w", ref.Step, err)
	}
	// An intent journaled before intents named the key: the key step of this session found
	// the same key (another Name is KEY_CHANGED), and the CSR step's result is restored. The
	// field check's intent never names them: its re-enrollment's CSR is made within the step
	// (reenrollCSR); after a restart that CSR is unknown and the entry names the key's CSR of
	// its enrollment, the same key (reconciliation matches certificates by key).
	if k := u.keys[roleFor(ref.Step)]; k != nil && k.key != nil {
		if in.PublicKeySHA256 == "" {
			in.KeyName, in.PublicKeySHA256 = hex.EncodeToString(k.key.Name), PublicKeySHA256(k.key.PublicKey)
		}
		csr := k.csr
		if ref.Step == StepFieldCheck && len(u.reenrollCSR) > 0 {
			csr = u.reenrollCSR
		}
		if in.CSRSHA256 == "" && len(csr) > 0 {
			sum := sha256.Sum256(csr)
			in.CSRSHA256 = hex.EncodeToString(sum[:])
		}
		if in.CA == "" {
			in.CA = k.profile.Issuer
		}
	}
	ctx, cancel := recording(ctx)
	defer cancel()
	p, err := u.r.cfg.Journal.OpenPossiblyIssued(ctx, store.PossiblyIssued{
		Serial: u.serial, Role: store.Role(roleFor(ref.Step)), Step: ref.Step, Attempt: ref.Attempt,
		CA: in.CA, CSRSHA256: in.CSRSHA256, KeyName: in.KeyName, PublicKeySHA256: in.PublicKeySHA256,
		From: from, To: u.r.cfg.Clock.Now()})
	if err != nil {
		return fmt.Errorf("recording a possibly issued certificate: %w", err)
	}
	u.log.Warn("a certificate may have been issued that the store does not know; reconcile with the CA",
		"step", ref.Step, "id", p.ID, "ca", p.CA)
	return nil
}
