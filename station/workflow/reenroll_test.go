package workflow_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/devid-station/devid/station/reconcile"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// losingReenrollCA issues re-enrollments like instantCA, after the TPM signed for the client
// certificate as a TLS handshake would, but loses the first re-enrollment's answer: it issues,
// then either sends the request again (OnRetry, as the EST client does after a lost answer)
// or fails as an unreachable CA. It keeps a ledger of what it issued and searches it by key.
type losingReenrollCA struct {
	*instantCA
	retry bool

	mu     sync.Mutex
	lost   bool
	ledger []reconcile.Issued
}

func (c *losingReenrollCA) Enroll(ctx context.Context, req workflow.EnrollRequest) (*workflow.Issued, error) {
	if !req.Reenroll {
		return c.instantCA.Enroll(ctx, req)
	}
	digest := sha256.Sum256([]byte("handshake"))
	if _, err := req.ClientCert.Key.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
		return nil, err
	}
	issued, err := c.instantCA.Enroll(ctx, req)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	sum := sha256.Sum256(req.CSR)
	c.ledger = append(c.ledger, reconcile.Issued{DER: issued.Leaf.Raw, CSRSHA256: hex.EncodeToString(sum[:]), Time: time.Now()})
	if c.lost {
		return issued, nil
	}
	c.lost = true
	if !c.retry {
		return nil, errors.New("connection reset by peer")
	}
	if req.OnRetry != nil {
		req.OnRetry()
	}
	issued, err = c.instantCA.Enroll(ctx, req)
	if err == nil {
		c.ledger = append(c.ledger, reconcile.Issued{DER: issued.Leaf.Raw, CSRSHA256: hex.EncodeToString(sum[:]), Time: time.Now()})
	}
	return issued, err
}

func (c *losingReenrollCA) SearchByKey(_ context.Context, publicKeySHA256 string) ([]reconcile.Issued, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []reconcile.Issued
	for _, e := range c.ledger {
		if leaf, err := x509.ParseCertificate(e.DER); err == nil && workflow.PublicKeySHA256(leaf.PublicKey) == publicKeySHA256 {
			out = append(out, e)
		}
	}
	return out, nil
}

// TestReenrollLostAnswerPossiblyIssued loses the answer of the field check's re-enrollment
// after the CA issued: once when the EST client sends the request again (the step passes with
// the second certificate), once when the CA then looks unavailable (FIELD_CHECK_UNAVAILABLE).
// Either way the store holds an open possibly-issued entry for the LDevID key naming the CSR
// sent, and a reconciliation with the CA records the certificate nobody knew and closes it.
func TestReenrollLostAnswerPossiblyIssued(t *testing.T) {
	for _, tc := range []struct {
		name  string
		retry bool
		code  string
	}{
		{"answer lost then retried", true, ""},
		{"answer lost then unavailable", false, workflow.CodeFieldCheckUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ca *losingReenrollCA
			r, pki, st := newRunner(t, 1, func(c *workflow.Config) {
				ca = &losingReenrollCA{instantCA: c.Issuers["customer"].(*instantCA), retry: tc.retry}
				c.Issuers["customer"] = ca
				c.Profiles["default"].FieldCheck = workflow.FieldCheck{Mode: workflow.FieldCheckReenroll}
			})
			const serial = "SN-00000001"
			out := r.Run(context.Background(), newSoftUnit(t, serial, pki.EKIssuing))
			if out.Done != (tc.code == "") || out.Code != tc.code {
				t.Fatalf("outcome %+v, want code %q", out, tc.code)
			}
			ctx := context.Background()
			open, err := st.PossiblyIssuedEntries(ctx, serial, true)
			if err != nil {
				t.Fatal(err)
			}
			first := ca.ledger[0]
			leaf, err := x509.ParseCertificate(first.DER)
			if err != nil {
				t.Fatal(err)
			}
			if len(open) != 1 || open[0].Step != workflow.StepFieldCheck || open[0].Role != store.RoleLDevID || open[0].CA != "customer" ||
				open[0].CSRSHA256 != first.CSRSHA256 || open[0].PublicKeySHA256 != workflow.PublicKeySHA256(leaf.PublicKey) {
				t.Fatalf("open possibly-issued entries %+v; want one of field_check for the LDevID key and the CSR %s", open, first.CSRSHA256)
			}
			sum := sha256.Sum256(first.DER)
			lostSHA := hex.EncodeToString(sum[:])
			if _, err := st.CertificateBySHA256(ctx, lostSHA); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("the lost certificate is known before reconciliation: %v", err)
			}
			rep, err := reconcile.Search(ctx, st, "customer", ca, time.Now().Add(time.Hour))
			if err != nil || rep.Closed != 1 || rep.Recorded != 1 || rep.Open != 0 {
				t.Fatalf("reconciliation %+v, %v; want the entry closed with one certificate recorded", rep, err)
			}
			u, err := st.Unit(ctx, serial)
			if err != nil {
				t.Fatal(err)
			}
			var ref *store.CertRef
			for i, c := range u.Certificates {
				if c.SHA256 == lostSHA {
					ref = &u.Certificates[i]
				}
			}
			if ref == nil || ref.Role != store.RoleLDevID || !(ref.Status == store.CertDuplicate || ref.Status == "" && ref.Duplicate) {
				t.Errorf("the unit's record of the reconciled certificate %+v; want an LDevID duplicate of the active one", ref)
			}
			for _, e := range ca.ledger {
				sum := sha256.Sum256(e.DER)
				if _, err := st.CertificateBySHA256(ctx, hex.EncodeToString(sum[:])); err != nil {
					t.Errorf("certificate %x issued by the CA unknown to the store: %v", sum[:8], err)
				}
			}
			if open, err := st.PossiblyIssuedEntries(ctx, serial, true); err != nil || len(open) != 0 {
				t.Errorf("open entries after reconciliation: %+v, %v", open, err)
			}
		})
	}
}
