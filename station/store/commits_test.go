package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
)

// observations counts what an Observer receives.
type observations []float64

func (o *observations) Observe(v float64) { *o = append(*o, v) }

// TestCommitsObserved checks every write that reached a commit is observed once, with a
// non-negative latency, and a write refused before the transaction is not.
func TestCommitsObserved(t *testing.T) {
	var obs observations
	s, err := Open(filepath.Join(t.TempDir(), "station.db"), Options{StationID: "st-a", Commits: &obs})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(obs) != 0 {
		t.Fatalf("opening observed %d commits", len(obs))
	}
	ctx := context.Background()
	for _, id := range []string{"WO-1", "WO-2"} {
		if _, err := s.CreateWorkOrder(ctx, WorkOrder{ID: id, Profile: "default", Serials: []string{"SN-" + id}}); err != nil {
			t.Fatal(err)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.CreateWorkOrder(cancelled, WorkOrder{ID: "WO-3", Profile: "default", Serials: []string{"SN-3"}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("write with a cancelled context: %v", err)
	}
	if len(obs) != 2 {
		t.Fatalf("%d commits observed, want 2", len(obs))
	}
	for _, v := range obs {
		if v < 0 {
			t.Errorf("negative commit latency %v", v)
		}
	}
}

// TestOutboxHead checks the head is 0 on an empty outbox and then the token of the newest event.
func TestOutboxHead(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "station.db"), Options{StationID: "st-a"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if head, err := s.OutboxHead(ctx); err != nil || head != 0 {
		t.Fatalf("empty outbox head %d, %v; want 0", head, err)
	}
	for _, id := range []string{"WO-1", "WO-2"} {
		if _, err := s.CreateWorkOrder(ctx, WorkOrder{ID: id, Profile: "default", Serials: []string{"SN-" + id}}); err != nil {
			t.Fatal(err)
		}
	}
	evs, last, err := s.OutboxAfter(ctx, 0, 0)
	if err != nil || len(evs) == 0 {
		t.Fatalf("outbox: %d events, %v", len(evs), err)
	}
	if head, err := s.OutboxHead(ctx); err != nil || head != last {
		t.Errorf("head %d, %v; want the newest event's token %d", head, err, last)
	}
}
