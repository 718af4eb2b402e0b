package server

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devid-station/devid/station/store"
	bolt "go.etcd.io/bbolt"
)

// TestStartVerifiesTheAuditChain stops a station, edits a stored work order in its file, and
// checks that the station refuses to start naming the record, and that an admin's override
// starts it with the reason in the chain.
func TestStartVerifiesTheAuditChain(t *testing.T) {
	l := newTestLine(t, lineOptions{})
	l.workOrder("WO-1", "SN-0001")
	l.stop(false)
	path := l.file.StorePath
	keyPath := filepath.Join(filepath.Dir(path), "audit-key.pem")
	if st, err := os.Stat(keyPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("audit key %s: %v, %v; want a 0600 file", keyPath, st, err)
	}
	if _, err := os.Stat(path + ".checkpoint"); err != nil {
		t.Fatalf("no checkpoint saved at shutdown: %v", err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("work_orders"))
		return b.Put([]byte("WO-1"), bytes.Replace(b.Get([]byte("WO-1")), []byte(`"SN-0001"`), []byte(`"SN-0009"`), 1))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	rt, err := l.file.Validate(l.dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(rt, Options{Version: "test"})
	if err == nil {
		srv.Close(context.Background())
		t.Fatal("the station started on an edited store")
	}
	if !errors.Is(err, store.ErrChainBroken) || !strings.Contains(err.Error(), store.CodeAuditChainBroken) ||
		!strings.Contains(err.Error(), `bucket work_orders key "WO-1"`) {
		t.Fatalf("New: %v, want %s naming work_orders WO-1", err, store.CodeAuditChainBroken)
	}

	const reason = "QA-123: work order edited by hand, see deviation report"
	srv, err = New(rt, Options{Version: "test", AuditOverride: reason})
	if err != nil {
		t.Fatalf("New with an override: %v", err)
	}
	defer srv.Close(context.Background())
	recs, err := srv.Store().AuditAfter(context.Background(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range recs {
		if a.Action == store.AuditActionOverride && a.Details["reason"] == reason && strings.Contains(a.Details["failure"], "WO-1") {
			found = true
		}
	}
	if !found {
		t.Error("the override and its reason are not in the audit chain")
	}
}
