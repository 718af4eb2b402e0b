package store

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"math/big"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/devid-station/devid/fixture/devpki"
	bolterrors "go.etcd.io/bbolt/errors"
)

// stepClock is a Clock that advances 1ms on every call.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func newStepClock() *stepClock {
	return &stepClock{t: time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC)}
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

const testStation = "station-test-1"

// openAt opens the store at path and closes it at the end of the test.
func openAt(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path, Options{StationID: testStation, Clock: newStepClock()})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	s.states.check = true // every remembered unit state is checked against its bytes
	t.Cleanup(func() {
		// Every write of every test is covered by the chain: a write that
		// bypasses the store's tracked buckets fails here.
		if !t.Failed() && s.Corrupt() == nil && !isTampered(path) {
			if _, err := s.VerifyChain(context.Background()); err != nil && !errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
				t.Errorf("store %s does not verify at the end of the test: %v", path, err)
			}
		}
		s.Close()
	})
	return s
}

// tampered names the store files a test broke on purpose; their stores are
// not verified at the end of the test.
var tampered sync.Map

func markTampered(path string) { tampered.Store(path, true) }

func isTampered(path string) bool { _, ok := tampered.Load(path); return ok }

// openTemp opens a new store in a temporary directory and returns its path.
func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "station.db")
	return openAt(t, path), path
}

func mustUnit(t *testing.T, s *Store, serial string, status Status) UnitState {
	t.Helper()
	u, err := s.UpdateUnit(context.Background(), serial, func(u *UnitState) error {
		u.Status = status
		u.Profile = "default"
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateUnit(%s): %v", serial, err)
	}
	return u
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if want == nil && err != nil {
		t.Fatalf("%s: unexpected error %v", what, err)
	}
	if want != nil && !errors.Is(err, want) {
		t.Fatalf("%s: error %v, want %v", what, err, want)
	}
}

// lastAudit returns the newest audit record.
func lastAudit(t *testing.T, s *Store) AuditEvent {
	t.Helper()
	ctx := context.Background()
	head, err := s.ChainHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := s.AuditAfter(ctx, head.Seq-1, 1)
	if err != nil || len(recs) != 1 {
		t.Fatalf("AuditAfter: %v (%d records)", err, len(recs))
	}
	return recs[0]
}

// issueLeaf returns the DER of a leaf certificate from ca with the serial number and subject
// serialNumber given.
func issueLeaf(t *testing.T, ca *devpki.CA, serial int64, unit string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(&x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{SerialNumber: unit},
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}, &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return cert.Raw
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// reencode returns a stored the way orig was stored: JSON (as schema 1 and
// older stations wrote records) or the canonical encoding (v1 or v2).
func reencode(orig []byte, a *AuditEvent) []byte {
	if len(orig) > 0 && orig[0] == '{' {
		data, err := json.Marshal(a)
		if err != nil {
			panic(err)
		}
		return data
	}
	return append(a.appendBody([]byte{orig[0]}), a.Hash...)
}
