package est_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"github.com/devid-station/devid/ca-client/secret"
	"log/slog"
	"time"

	"github.com/devid-station/devid/ca-client/est"
)

// Example shows a Client for a maker CA with basic auth and a TPM-backed
// TLS client key, and how a caller maps its errors.
func Example() {
	var (
		tlsRoot, deviceRoot *x509.Certificate // from the station's CA profile
		stationCert         *x509.Certificate
		tpmKey              crypto.Signer // any signer, e.g. a TPM key
		csrDER              []byte
	)
	c, err := est.New(est.Config{
		BaseURL:         "https://ca.example:8443",
		Label:           "idevid",
		TrustAnchors:    []*x509.Certificate{tlsRoot},
		IssuerAnchors:   []*x509.Certificate{deviceRoot},
		Auth:            est.Basic{User: "station-7", Password: secret.New("from the secret store")},
		ClientCert:      &est.ClientCertificate{Chain: []*x509.Certificate{stationCert}, Key: tpmKey},
		PendingDeadline: 2 * time.Minute,
		Logger:          slog.Default(),
	})
	if err != nil {
		return
	}
	res, err := c.Enroll(context.Background(), csrDER)
	var rej *est.RejectedError
	switch {
	case errors.As(err, &rej):
		slog.Error("CA refused", "status", rej.Status, "message", rej.Message)
	case errors.Is(err, est.ErrPendingTimeout), errors.Is(err, est.ErrUnavailable):
		slog.Warn("try later", "error", err)
	case errors.Is(err, est.ErrBadResponse):
		slog.Error("CA answer failed verification", "error", err)
	case err == nil:
		slog.Info("issued", "subject", res.Leaf.Subject.String(), "attempts", res.Attempts)
	}
}
