package workflow

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"sync"
	"time"
)

// chainVerifier verifies certificate chains with crypto/x509 (ExtKeyUsageAny) and remembers
// the intermediates it saw verified to a root pool: every unit's EK certificate and DevID
// certificates are issued by the same few intermediates, and checking an intermediate's
// signature again for each unit is most of the cost of a chain.
//
// A remembered intermediate is the trust anchor of the next chains through it only where that
// finds what the whole chain would: crypto/x509 then checks the leaf's signature by the
// intermediate, the leaf's validity and critical extensions, and the verifier itself checks
// the intermediate's and the root's validity. What a root
// could add about a leaf beyond that (its name constraints, RFC 5280 policy processing that a
// policy constraint or mapping can make fail) rules the shortcut out: such chains, and every
// chain that does not verify through a remembered intermediate, are verified whole. The
// intermediate was checked as a CA within its root's path length in the whole chain it was
// learned from, which is the same chain. It is safe for concurrent use.
type chainVerifier struct {
	mu sync.Mutex
	m  map[anchorKey]*anchor
	// hits counts chains verified through a remembered intermediate (for tests).
	hits int
}

// anchorKey names a remembered intermediate by its SHA-256 and the root pool it chains to.
type anchorKey struct {
	sum   [sha256.Size]byte
	roots *x509.CertPool
}

// anchor is a remembered intermediate: the tail of the chains through it (the intermediate,
// then its root), and a pool holding the intermediate alone.
type anchor struct {
	tail []*x509.Certificate
	pool *x509.CertPool
}

// anchorsMax bounds the remembered intermediates; the memo starts over when full (a line uses
// a handful).
const anchorsMax = 256

// verify returns a chain from leaf through intermediates to roots at now, as
// leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, CurrentTime: now,
// KeyUsages: ExtKeyUsageAny}) would (its first chain).
func (v *chainVerifier) verify(leaf *x509.Certificate, roots *x509.CertPool, intermediates []*x509.Certificate, now time.Time) ([]*x509.Certificate, error) {
	if !hasPolicyRules(leaf) {
		for _, c := range intermediates {
			if !bytes.Equal(c.RawSubject, leaf.RawIssuer) || bytes.Equal(c.Raw, leaf.Raw) {
				continue
			}
			a := v.get(anchorKey{sha256.Sum256(c.Raw), roots})
			if a == nil || !validAt(a.tail[0], now) || !validAt(a.tail[1], now) {
				continue
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: a.pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
				v.mu.Lock()
				v.hits++
				v.mu.Unlock()
				return append([]*x509.Certificate{leaf}, a.tail...), nil
			}
		}
	}
	pool := x509.NewCertPool()
	for _, c := range intermediates {
		pool.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return nil, err
	}
	for _, ch := range chains {
		if len(ch) == 3 && !hasNameConstraints(ch[1]) && !hasNameConstraints(ch[2]) && !hasPolicyRules(ch[1]) && !hasPolicyRules(ch[2]) {
			v.put(anchorKey{sha256.Sum256(ch[1].Raw), roots}, ch[1:])
		}
	}
	return chains[0], nil
}

func (v *chainVerifier) get(k anchorKey) *anchor {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.m[k]
}

func (v *chainVerifier) put(k anchorKey, tail []*x509.Certificate) {
	pool := x509.NewCertPool()
	pool.AddCert(tail[0])
	a := &anchor{tail: append([]*x509.Certificate(nil), tail...), pool: pool}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil || len(v.m) >= anchorsMax {
		v.m = map[anchorKey]*anchor{}
	}
	v.m[k] = a
}

// validAt reports whether now is within c's validity, as crypto/x509 checks it.
func validAt(c *x509.Certificate, now time.Time) bool {
	return !now.Before(c.NotBefore) && !now.After(c.NotAfter)
}

// hasNameConstraints reports whether c constrains the names below it.
func hasNameConstraints(c *x509.Certificate) bool {
	return len(c.PermittedDNSDomains) > 0 || len(c.ExcludedDNSDomains) > 0 ||
		len(c.PermittedIPRanges) > 0 || len(c.ExcludedIPRanges) > 0 ||
		len(c.PermittedEmailAddresses) > 0 || len(c.ExcludedEmailAddresses) > 0 ||
		len(c.PermittedURIDomains) > 0 || len(c.ExcludedURIDomains) > 0 || c.PermittedDNSDomainsCritical
}

// hasPolicyRules reports whether c carries what can make RFC 5280 policy processing fail
// (require an explicit policy, map or inhibit mapping policies), which depends on the whole
// path.
func hasPolicyRules(c *x509.Certificate) bool {
	return c.RequireExplicitPolicy > 0 || c.RequireExplicitPolicyZero || c.InhibitPolicyMapping > 0 ||
		c.InhibitPolicyMappingZero || len(c.PolicyMappings) > 0 || c.InhibitAnyPolicy > 0 || c.InhibitAnyPolicyZero
}
