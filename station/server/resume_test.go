package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devid-station/devid/device-agent/agent"
	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/station/config"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

var errStationDown = errors.New("station is down")

// boundaryJournal counts step boundaries (a committed step intent, result, or both at once)
// and calls at() at boundary number stopAt, right after that commit. Once down, every further
// write fails as it would in a dead process.
type boundaryJournal struct {
	workflow.Journal
	stopAt int
	count  atomic.Int64
	down   atomic.Bool
	at     func()
}

func (j *boundaryJournal) boundary() {
	if int(j.count.Add(1)) == j.stopAt && j.at != nil {
		j.at()
	}
}

func (j *boundaryJournal) BeginStep(ctx context.Context, serial, step string, intent []byte) (store.StepRef, error) {
	if j.down.Load() {
		return store.StepRef{}, errStationDown
	}
	ref, err := j.Journal.BeginStep(ctx, serial, step, intent)
	if err == nil {
		j.boundary()
	}
	return ref, err
}

func (j *boundaryJournal) EndStep(ctx context.Context, ref store.StepRef, result []byte, code string) error {
	if j.down.Load() {
		return errStationDown
	}
	err := j.Journal.EndStep(ctx, ref, result, code)
	if err == nil {
		j.boundary()
	}
	return err
}

func (j *boundaryJournal) Advance(ctx context.Context, end store.StepRef, result []byte, step string, intent []byte) (store.StepRef, error) {
	if j.down.Load() {
		return store.StepRef{}, errStationDown
	}
	ref, err := j.Journal.Advance(ctx, end, result, step, intent)
	if err == nil {
		j.boundary()
	}
	return ref, err
}

func (j *boundaryJournal) UpdateUnit(ctx context.Context, serial string, fn func(*store.UnitState) error) (store.UnitState, error) {
	if j.down.Load() {
		return store.UnitState{}, errStationDown
	}
	return j.Journal.UpdateUnit(ctx, serial, fn)
}

func (j *boundaryJournal) RecordCertificate(ctx context.Context, serial string, role store.Role, der []byte, chain ...[]byte) (store.CertRecord, error) {
	if j.down.Load() {
		return store.CertRecord{}, errStationDown
	}
	return j.Journal.RecordCertificate(ctx, serial, role, der, chain...)
}

func (j *boundaryJournal) BindEK(ctx context.Context, fp, serial string) error {
	if j.down.Load() {
		return errStationDown
	}
	return j.Journal.BindEK(ctx, fp, serial)
}

// boundaries is the number of step boundaries of one unit's run: the first intent, then the
// result of each step written with the next one's intent (Advance), then the last result. A
// profile without an IAK journals nothing for the IAK steps (boundaries); one with an IAK runs
// them all (iakBoundaries).
var (
	iakBoundaries = len(workflow.Steps) + 1
	boundaries    = iakBoundaries - iakSteps()
)

// iakSteps counts the workflow's IAK steps.
func iakSteps() int {
	n := 0
	for _, d := range workflow.Table {
		if d.Role == string(store.RoleIAK) {
			n++
		}
	}
	return n
}

// TestResumeAfterStationCrash stops the station hard at every step boundary of a unit's run,
// starts a new station on the same store file, and lets the unit's agent reconnect: the unit
// completes, and every certificate the CA issued is in the store. The boundaries after the
// first round are those of a profile with an IAK.
func TestResumeAfterStationCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("resume at every boundary: skipped in -short")
	}
	for n := 1; n <= boundaries+iakBoundaries; n++ {
		k, last, name, configure, certs := n, boundaries, fmt.Sprintf("boundary %02d", n), func(*config.File) {}, 2
		if n > boundaries {
			k, last = n-boundaries, iakBoundaries
			name, configure, certs = fmt.Sprintf("iak boundary %02d", k), withIAK, 3
		}
		t.Run(name, func(t *testing.T) {
			var l *testLine
			crashed := make(chan struct{})
			j := &boundaryJournal{stopAt: k}
			dead := make(chan struct{})
			t.Cleanup(func() { close(dead) })
			j.at = func() {
				// The process dies right after this commit: nothing more is written or sent,
				// and this goroutine never goes on.
				j.down.Store(true)
				l.stop(true)
				close(crashed)
				<-dead
			}
			l = newTestLine(t, lineOptions{configure: configure, wrap: func(inner workflow.Journal) workflow.Journal { j.Journal = inner; return j }})
			l.workOrder("WO-1", "SN-0001")
			sim := l.manufacture(nil, tpm.ECCP256)

			verdict := make(chan agent.Verdict, 1)
			go func() { verdict <- l.runUnit(context.Background(), "SN-0001", sim) }()
			var v agent.Verdict
			got := false
			select {
			case <-crashed:
			case v = <-verdict:
				// Only the last boundary comes after the verdict was sent.
				if k != last {
					t.Fatalf("unit finished (%+v) before boundary %d", v, k)
				}
				got = true
				<-crashed
			case <-time.After(time.Minute):
				t.Fatal("no crash")
			}
			l.start(nil) // a new station process on the same store and port
			if !got {
				select {
				case v = <-verdict:
				case <-time.After(time.Minute):
					t.Fatal("the unit did not complete after the restart")
				}
			}
			if !v.Passed {
				t.Fatalf("verdict: %+v", v)
			}
			if u := l.unit("SN-0001"); u.Status != store.StatusDone {
				t.Fatalf("unit %+v", u)
			}
			if n := len(l.ca.Ledger()); n != certs {
				t.Errorf("the CA issued %d certificates, want %d", n, certs)
			}
			l.issuedAllKnown(l.srv.Store())
		})
	}
}

// TestResumeAfterAgentKilled kills the unit's agent at every step boundary and starts a new one
// on the same TPM (the unit rebooted): the unit completes with no second certificate.
func TestResumeAfterAgentKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("resume at every boundary: skipped in -short")
	}
	for k := 1; k <= boundaries; k++ {
		t.Run(fmt.Sprintf("boundary %02d", k), func(t *testing.T) {
			var (
				mu       sync.Mutex
				killFunc context.CancelFunc
			)
			j := &boundaryJournal{stopAt: k}
			killed := make(chan struct{})
			j.at = func() {
				mu.Lock()
				killFunc()
				mu.Unlock()
				close(killed)
			}
			l := newTestLine(t, lineOptions{wrap: func(inner workflow.Journal) workflow.Journal { j.Journal = inner; return j }})
			l.workOrder("WO-1", "SN-0001")
			sim := l.manufacture(nil, tpm.ECCP256)

			ctx, cancel := context.WithCancel(context.Background())
			mu.Lock()
			killFunc = cancel
			mu.Unlock()
			first := make(chan error, 1)
			go func() {
				v, err := agent.Run(ctx, l.agentConfig("SN-0001"), sim)
				if err == nil {
					err = fmt.Errorf("first agent got a verdict: %+v", v)
				}
				first <- err
			}()
			// After the last boundary the verdict was already sent: the agent may have it before
			// the kill, or the kill finds it delivered.
			delivered := func(err error) bool {
				return k == boundaries && err != nil && strings.Contains(err.Error(), "Passed:true")
			}
			var firstErr error
			select {
			case <-killed:
				firstErr = <-first
			case firstErr = <-first:
				// Cancelled by the kill (both cases ready at once), or done before it.
				if !delivered(firstErr) && !errors.Is(firstErr, context.Canceled) {
					t.Fatalf("before boundary %d: %v", k, firstErr)
				}
				select {
				case <-killed:
				case <-time.After(time.Minute):
					t.Fatal("no kill")
				}
			case <-time.After(time.Minute):
				t.Fatal("no kill")
			}
			if !errors.Is(firstErr, context.Canceled) && !delivered(firstErr) {
				t.Fatalf("killed agent: %v", firstErr)
			}
			if v := l.runUnit(context.Background(), "SN-0001", sim); !v.Passed {
				t.Fatalf("verdict of the restarted agent: %+v", v)
			}
			if n := len(l.ca.Ledger()); n != 2 {
				t.Errorf("the CA issued %d certificates, want 2", n)
			}
			l.issuedAllKnown(l.srv.Store())
		})
	}
}
