package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/devid-station/devid/fixture/devpki"
	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/ekcert"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// noCA is an Issuer the tests' units never reach.
type noCA struct{}

func (noCA) Enroll(context.Context, workflow.EnrollRequest) (*workflow.Issued, error) {
	return nil, errors.New("no CA in the API tests")
}

func (noCA) Roots() *x509.CertPool { return x509.NewCertPool() }

// newRunner is a real workflow runner over st with the "default" profile and a dev TPM vendor,
// whose EK certificates testEK issues.
func newRunner(t *testing.T, st *store.Store) (*workflow.Runner, *devpki.PKI) {
	t.Helper()
	pki, err := devpki.New(devpki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key := workflow.KeyProfile{Algorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, Handle: 0x81020000, Issuer: "maker",
		Subject: workflow.Subject{CommonName: "{serial}"}}
	profile := &workflow.Profile{Name: "default", IDevID: key, LDevID: key, LDevIDAuth: workflow.AuthStationRA,
		IDevIDNV: workflow.NVProfile{Index: 0x01C90000, Auth: agentv1.Hierarchy_HIERARCHY_PLATFORM}, LDevIDCertPath: "/etc/devid/ldevid.pem"}
	r, err := workflow.New(workflow.Config{Journal: st, EKRoots: pki.TPMVendorBundle(), EKIntermediates: pki.EKIntermediates(),
		Profiles: map[string]*workflow.Profile{"default": profile}, Issuers: map[string]workflow.Issuer{"maker": noCA{}}})
	if err != nil {
		t.Fatal(err)
	}
	return r, pki
}

// testEK is a software EK with a certificate of the dev TPM vendor: it passes the station's
// first checks.
func testEK(t *testing.T, pki *devpki.PKI) *agentv1.EndorsementKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.EKIssuing.IssueEKCert(&k.PublicKey, ekcert.TPMIdentity{Manufacturer: "id:534F4654", Model: "soft", Version: "id:00010000"}, devpki.EKCertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tmpl := tpm2.ECCEKTemplate
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: k.X.FillBytes(make([]byte, 32))},
		Y: tpm2.TPM2BECCParameter{Buffer: k.Y.FillBytes(make([]byte, 32))},
	})
	return &agentv1.EndorsementKey{Algorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, PublicArea: tpm2.Marshal(tmpl), Certificate: cert}
}

// blockingAgent is an agent whose unit passes the first checks and then never answers until
// its session ends: a unit stuck in a step. It answers the final verdict at once.
type blockingAgent struct {
	serial string
	ek     *agentv1.EndorsementKey
	asked  chan struct{} // receives once per command the agent blocks on
}

func (a blockingAgent) Hello() *agentv1.Hello {
	return &agentv1.Hello{HardwareSerial: a.serial, FileRoots: []string{"/etc"}}
}

func (a blockingAgent) Peer() string { return "test" }

func (a blockingAgent) Admit(context.Context) error { return nil }

func (a blockingAgent) Do(ctx context.Context, cmd *agentv1.Command) (*agentv1.Result, error) {
	switch {
	case cmd.GetFinish() != nil:
		return &agentv1.Result{}, nil
	case cmd.GetInfo() != nil:
		return &agentv1.Result{Id: cmd.GetId(), Op: &agentv1.Result_Info{Info: &agentv1.InfoResult{}}}, nil
	case cmd.GetReadEk() != nil:
		return &agentv1.Result{Id: cmd.GetId(), Op: &agentv1.Result_ReadEk{ReadEk: &agentv1.ReadEKResult{Keys: []*agentv1.EndorsementKey{a.ek}}}}, nil
	}
	select {
	case a.asked <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return nil, ctx.Err()
}
