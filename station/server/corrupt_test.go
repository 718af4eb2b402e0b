package server

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/devid-station/devid/device-agent/agent"
	"github.com/devid-station/devid/station/store"
)

// damageUnitsPage overwrites the page type of the store's units bucket root page, as a torn
// write or a bad disk block would.
func damageUnitsPage(t *testing.T, path string, root uint64, pageSize int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{0, 0}, int64(root)*int64(pageSize)+8); err != nil { // flags follow the 8-byte page id
		t.Fatal(err)
	}
}

// unitsRoot returns the unit states bucket's root page and the page size of a closed store file.
func unitsRoot(t *testing.T, path string) (uint64, int) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var root uint64
	if err := db.View(func(tx *bolt.Tx) error {
		root = uint64(tx.Bucket([]byte("unit_states")).Root())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if root < 2 {
		t.Fatalf("unit_states bucket is inline (root %d)", root)
	}
	return root, db.Info().PageSize
}

// TestCorruptStore: a station whose store file has a damaged page refuses to start with
// STORE_CORRUPT, and a page damaged while it runs stops it (Fatal) with nothing issued for the
// unit that met it; before, bbolt panicked and took the station down.
func TestCorruptStore(t *testing.T) {
	l := newTestLine(t, lineOptions{})
	l.workOrder("WO-1", "SN-0001", "SN-0002")
	sim := l.manufacture(nil)
	if v := l.runUnit(context.Background(), "SN-0001", sim); !v.Passed {
		t.Fatalf("first unit: %+v", v)
	}
	issued := len(l.ca.Ledger())
	l.stop(false)
	path := l.file.StorePath
	root, pageSize := unitsRoot(t, path)

	// At run time: the page is damaged under the running station.
	l.start(nil)
	damageUnitsPage(t, path, root, pageSize)
	ctx, cancel := context.WithCancel(context.Background())
	agentDone := make(chan struct{})
	go func() {
		defer close(agentDone)
		_, _ = agent.Run(ctx, l.agentConfig("SN-0002"), sim)
	}()
	select {
	case err := <-l.srv.Fatal():
		if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), store.CodeStoreCorrupt) {
			t.Errorf("Fatal() = %v, want a %s error", err, store.CodeStoreCorrupt)
		}
	case <-time.After(time.Minute):
		t.Fatal("the station went on with a damaged store")
	}
	cancel()
	<-agentDone
	if _, err := l.srv.Store().CreateWorkOrder(context.Background(), store.WorkOrder{ID: "WO-2", Profile: "default", Serials: []string{"SN-0003"}, CreatedBy: "test"}); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("write after the damage: %v, want ErrCorrupt", err)
	}
	l.stop(true)
	if n := len(l.ca.Ledger()); n != issued {
		t.Errorf("the CAs issued %d certificates after the damage", n-issued)
	}

	// At start: the station refuses the file.
	rt, err := l.file.Validate(l.dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(rt, Options{Version: "test"})
	if err == nil {
		srv.Close(context.Background())
		t.Fatal("the station started on a corrupt store")
	}
	if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), store.CodeStoreCorrupt) {
		t.Fatalf("New: %v, want a %s error", err, store.CodeStoreCorrupt)
	}
}
