package ctl_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devid-station/devid/station/api"
	"github.com/devid-station/devid/station/api/apitest"
	"github.com/devid-station/devid/station/ctl"
	"github.com/devid-station/devid/station/store"
)

// liveRunner is the workflow runner with the set of serials it drives replaced by the test's:
// the API reports those units as running.
type liveRunner struct {
	api.Runner
	mu      sync.Mutex
	serials []string
}

func (r *liveRunner) Running() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.serials)
}

func (r *liveRunner) drive(serial string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.serials = append(r.serials, serial)
}

// beginStep puts serial into step as the workflow would: running, that step begun.
func beginStep(t *testing.T, st *store.Store, serial, step string) {
	t.Helper()
	ctx := t.Context()
	if _, err := st.UpdateUnit(ctx, serial, func(u *store.UnitState) error { u.Status = store.StatusRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := st.BeginStep(ctx, serial, step, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
}

func TestWatch(t *testing.T) {
	live := &liveRunner{}
	f := newFixtureRunner(t, func(r api.Runner) api.Runner { live.Runner = r; return live })
	writeUnits(t, f.env.Store) // SN-0001 done, SN-0002 failed, SN-0003 waiting
	beginStep(t, f.env.Store, "SN-0010", "verify_ek")
	live.drive("SN-0010")

	out := f.mustRun(t, apitest.Operator, "watch", "--count", "2", "--interval", "100ms")
	if got := strings.Count(out, "station st-ctl (v-ctl)"); got != 2 {
		t.Errorf("watch --count 2 drew %d frames:\n%s", got, out)
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("escape codes in output that is not a terminal:\n%q", out)
	}
	for _, want := range []string{"in flight 1", "done 1", "failed 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("watch lacks %q:\n%s", want, out)
		}
	}
	frame := out[:strings.Index(out[1:], "station st-ctl")+1]
	units := frame[strings.Index(frame, "SERIAL"):]
	if column(t, units, 1, "SERIAL") != "SN-0010" || column(t, units, 1, "STEP") != "verify_ek" || len(rows(units)) != 2 {
		t.Errorf("units in flight: want only SN-0010 in verify_ek:\n%s", units)
	}

	// Until interrupted, each frame shows the line as it is then.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var buf syncBuffer
	done := make(chan error, 1)
	go func() {
		args := append(append([]string(nil), f.flags[apitest.Operator]...), "watch", "--interval", "100ms")
		done <- ctl.Run(ctx, args, &buf)
	}()
	waitOutput(t, &buf, "SN-0010")
	beginStep(t, f.env.Store, "SN-0011", "idevid_key")
	live.drive("SN-0011")
	waitOutput(t, &buf, "in flight 2")
	last := buf.String()
	last = last[strings.LastIndex(last, "station st-ctl"):]
	if !strings.Contains(last, "SN-0011") || !strings.Contains(last, "idevid_key") {
		t.Errorf("latest frame lacks the new unit:\n%s", last)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("watch ended with %v after an interrupt", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not stop when interrupted")
	}
}

func TestWatchUsage(t *testing.T) {
	f := newFixture(t)
	for _, args := range [][]string{
		{"-o", "json", "watch"},
		{"watch", "--interval", "1ms"},
		{"watch", "--count", "-1"},
		{"watch", "extra"},
	} {
		if _, err := f.run(t, apitest.QA, args...); ctl.ExitCode(err) != 2 {
			t.Errorf("stationctl %v: %v, want a usage error", args, err)
		}
	}
}

// waitOutput waits until buf holds want.
func waitOutput(t *testing.T, buf *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(buf.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("watch never showed %q:\n%s", want, buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
