package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/station/api"
	"github.com/devid-station/devid/station/config"
)

// TestRolesFromConfig binds API roles by SAN URI and by certificate fingerprint in the
// configuration and calls the running station's API with such certificates over mTLS.
func TestRolesFromConfig(t *testing.T) {
	l := newTestLine(t, lineOptions{})
	client := func(tmpl *x509.Certificate) tls.Certificate {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.KeyUsage, tmpl.ExtKeyUsage = x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		cert, err := l.pki.MakerRoot.Issue(tmpl, &key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	}
	uri, err := url.Parse("spiffe://factory.example/mes/line-2")
	if err != nil {
		t.Fatal(err)
	}
	byURI := client(&x509.Certificate{Subject: pkix.Name{CommonName: "line-2"}, URIs: []*url.URL{uri}})
	byFingerprint := client(&x509.Certificate{Subject: pkix.Name{CommonName: "desk"}})
	unbound := client(&x509.Certificate{Subject: pkix.Name{CommonName: "desk"}}) // same name, other certificate
	l.file.API.Roles = []config.RoleBinding{
		{URI: uri.String(), Role: "mes"},
		{Fingerprint: api.Fingerprint(byFingerprint.Leaf), Role: "admin"},
	}
	l.stop(false)
	l.start(nil)

	for i, tc := range []struct {
		name string
		cert tls.Certificate
		want codes.Code
	}{
		{"mes by SAN URI", byURI, codes.OK},
		{"admin by fingerprint", byFingerprint, codes.OK},
		{"same CommonName, unbound certificate", unbound, codes.PermissionDenied},
	} {
		cc, err := grpc.NewClient(l.srv.APIAddr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			MinVersion: tls.VersionTLS13, RootCAs: l.stationCA, ServerName: "127.0.0.1", Certificates: []tls.Certificate{tc.cert}})))
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("WO-%d", i)
		_, err = stationv1.NewStationClient(cc).CreateWorkOrder(t.Context(), &stationv1.CreateWorkOrderRequest{
			Id: id, Profile: "default", Serials: []string{"SN-" + id}})
		cc.Close()
		if status.Code(err) != tc.want {
			t.Errorf("%s: CreateWorkOrder = %v, want %v", tc.name, err, tc.want)
		}
	}
}
