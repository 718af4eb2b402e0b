package store

import "crypto"

// AuditSigner returns the station's audit key, the signer of the chain's
// checkpoints (nil without one), so that documents the station vouches for
// beside the chain (a QA export's manifest) carry the same key's signature.
func (s *Store) AuditSigner() crypto.Signer {
	if s.cp == nil {
		return nil
	}
	return s.cp.opts.Signer
}

// ComputeHash returns the hash a's record carries when it is intact: the
// SHA-256 of its canonical encoding (PrevHash included). Offline checkers and
// tamper tests recompute it; VerifyRecords compares it.
func (a *AuditEvent) ComputeHash() []byte { return a.computeHash() }
