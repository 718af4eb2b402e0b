package api_test

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/station/api"
	"github.com/devid-station/devid/station/api/apitest"
)

// TestRoleBindings binds roles by certificate fingerprint and by SAN URI as well as by
// CommonName, over real mTLS: the fingerprint wins over the URI, the URI over the CommonName,
// and a certificate whose URIs are bound to two roles has none.
func TestRoleBindings(t *testing.T) {
	var current atomic.Pointer[api.RoleTable] // set below, once the certificates exist
	e := apitest.Start(t, api.Config{Roles: func(c *x509.Certificate) (api.Role, bool) { return current.Load().Lookup(c) }})
	pki := e.PKI
	mustURL := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	const (
		mesURI   = "spiffe://factory.example/mes/line-1"
		adminURI = "spiffe://factory.example/admin/desk"
	)
	// CN says qa; the URI says mes.
	byURI := pki.ClientFrom(t, &x509.Certificate{Subject: pkix.Name{CommonName: apitest.QA}, URIs: []*url.URL{mustURL(mesURI)}})
	// CN says qa and the URI says mes; the fingerprint says admin.
	byFingerprint := pki.ClientFrom(t, &x509.Certificate{Subject: pkix.Name{CommonName: apitest.QA}, URIs: []*url.URL{mustURL(mesURI)}})
	// No CommonName at all, only a URI.
	uriOnly := pki.ClientFrom(t, &x509.Certificate{URIs: []*url.URL{mustURL(mesURI)}})
	// Two URIs bound to different roles.
	conflicting := pki.ClientFrom(t, &x509.Certificate{Subject: pkix.Name{CommonName: apitest.QA}, URIs: []*url.URL{mustURL(mesURI), mustURL(adminURI)}})
	// A URI nobody bound: the CommonName decides.
	unboundURI := pki.ClientFrom(t, &x509.Certificate{Subject: pkix.Name{CommonName: apitest.QA}, URIs: []*url.URL{mustURL("spiffe://factory.example/other")}})

	table := api.RoleTable{
		Fingerprints: map[string]api.Role{api.Fingerprint(byFingerprint.Leaf): api.RoleAdmin},
		URIs:         map[string]api.Role{mesURI: api.RoleMES, adminURI: api.RoleAdmin},
		CommonNames:  apitest.Roles.CommonNames,
	}
	if err := table.Validate(); err != nil {
		t.Fatal(err)
	}
	current.Store(&table)
	if err := (api.RoleTable{URIs: map[string]api.Role{"factory/mes": api.RoleMES}}).Validate(); err == nil {
		t.Error("a relative URI binding validates")
	}
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		role api.Role
	}{
		{"uri over common name", byURI.Leaf, api.RoleMES},
		{"fingerprint over uri", byFingerprint.Leaf, api.RoleAdmin},
		{"uri only", uriOnly.Leaf, api.RoleMES},
		{"uris bound to two roles", conflicting.Leaf, ""},
		{"unbound uri, common name", unboundURI.Leaf, api.RoleQA},
	} {
		r, ok := table.Lookup(tc.cert)
		if r != tc.role || ok != (tc.role != "") {
			t.Errorf("%s: Lookup = %q %v, want %q", tc.name, r, ok, tc.role)
		}
	}

	// Through the API: CreateWorkOrder is for mes and admin.
	for i, tc := range []struct {
		name string
		cert tls.Certificate
		want codes.Code
	}{
		{"mes by uri", byURI, codes.OK},
		{"admin by fingerprint", byFingerprint, codes.OK},
		{"mes by uri without a common name", uriOnly, codes.OK},
		{"conflicting uris", conflicting, codes.PermissionDenied},
		{"qa by common name", unboundURI, codes.PermissionDenied},
	} {
		id := fmt.Sprintf("WO-%d", i)
		_, err := stationv1.NewStationClient(e.Conn(t, &tc.cert)).CreateWorkOrder(t.Context(),
			&stationv1.CreateWorkOrderRequest{Id: id, Profile: "default", Serials: []string{"SN-" + id}})
		if code(err) != tc.want {
			t.Errorf("%s: CreateWorkOrder = %v, want %v", tc.name, err, tc.want)
		}
	}
}
