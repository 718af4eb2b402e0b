package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"

	"github.com/devid-station/devid/station/workflow"
)

// FieldCheck is a profile's field check ([profile.field_check]): once the unit is verified,
// the station uses its LDevID as the field stack will.
type FieldCheck struct {
	// Mode is "off" (the default), "handshake" or "reenroll".
	Mode string `toml:"mode"`
	// URL is the handshake's https URL; its server must ask for a client certificate.
	URL string `toml:"url"`
	// TrustAnchors are PEM files of the roots the handshake endpoint's server certificate
	// must chain to.
	TrustAnchors []string `toml:"trust_anchors"`
}

func (f *FieldCheck) validate(abs func(string) string) (workflow.FieldCheck, error) {
	fc := workflow.FieldCheck{Mode: f.Mode}
	switch f.Mode {
	case "", workflow.FieldCheckOff, workflow.FieldCheckReenroll:
		if f.URL != "" || len(f.TrustAnchors) > 0 {
			return fc, fmt.Errorf("url and trust_anchors are for mode %q only (%q re-enrolls at the LDevID's CA)", workflow.FieldCheckHandshake, workflow.FieldCheckReenroll)
		}
		if fc.Mode == "" {
			fc.Mode = workflow.FieldCheckOff
		}
		return fc, nil
	case workflow.FieldCheckHandshake:
	default:
		return fc, fmt.Errorf("mode %q: want %s, %s or %s", f.Mode, workflow.FieldCheckOff, workflow.FieldCheckHandshake, workflow.FieldCheckReenroll)
	}
	u, err := url.Parse(f.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		return fc, fmt.Errorf("url %q: want an https URL without user information", f.URL)
	}
	if len(f.TrustAnchors) == 0 {
		return fc, errors.New("trust_anchors is required for a handshake")
	}
	fc.URL, fc.Roots = f.URL, x509.NewCertPool()
	for _, path := range f.TrustAnchors {
		certs, err := loadCerts(abs(path))
		if err != nil {
			return fc, fmt.Errorf("trust_anchors: %w", err)
		}
		for _, c := range certs {
			fc.Roots.AddCert(c)
		}
	}
	return fc, nil
}
