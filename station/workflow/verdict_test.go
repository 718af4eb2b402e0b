package workflow_test

import (
	"context"
	"testing"
	"time"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// stallingAgent is a soft unit whose agent stops answering one kind of command: it waits for
// release, or for the station to give up (its context).
type stallingAgent struct {
	*softUnit
	stall   func(*agentv1.Command) bool
	stalled chan struct{} // receives each time the agent stalls
	release chan struct{}
}

func (a *stallingAgent) Do(ctx context.Context, cmd *agentv1.Command) (*agentv1.Result, error) {
	if a.stall(cmd) {
		select {
		case a.stalled <- struct{}{}:
		default:
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-a.release:
		}
	}
	return a.softUnit.Do(ctx, cmd)
}

func stallAt(u *softUnit, stall func(*agentv1.Command) bool) *stallingAgent {
	return &stallingAgent{softUnit: u, stall: stall, stalled: make(chan struct{}, 1), release: make(chan struct{})}
}

func isFinish(c *agentv1.Command) bool    { return c.GetFinish() != nil }
func isCreateKey(c *agentv1.Command) bool { return c.GetCreateKey() != nil }

// runWithin runs a, failing the test if Run does not return within a minute (a wait without a
// deadline).
func runWithin(t *testing.T, r *workflow.Runner, a workflow.Agent) workflow.Outcome {
	t.Helper()
	done := make(chan workflow.Outcome, 1)
	go func() { done <- r.Run(context.Background(), a) }()
	select {
	case out := <-done:
		return out
	case <-time.After(time.Minute):
		t.Fatal("Run did not return: a wait without a deadline")
		return workflow.Outcome{}
	}
}

// TestVerdictsHaveDeadlines has agents that never answer their verdict: the verdict to a
// provisioned unit that reconnects and the refusal of a second session of a busy serial both
// end within FinishTimeout, and the refused session writes nothing into the running unit's
// log.
func TestVerdictsHaveDeadlines(t *testing.T) {
	r, pki, st := newRunner(t, 1, func(c *workflow.Config) {
		c.FinishTimeout = 100 * time.Millisecond
		c.HandoverWait = 100 * time.Millisecond
	})
	ctx := context.Background()

	done := newSoftUnit(t, "SN-00000001", pki.EKIssuing)
	if out := r.Run(ctx, done); !out.Done {
		t.Fatalf("provisioning: %+v", out)
	}
	if out := runWithin(t, r, stallAt(done, isFinish)); !out.Done {
		t.Errorf("provisioned unit reconnecting: %+v", out)
	}

	victim := stallAt(newSoftUnit(t, "SN-00000002", pki.EKIssuing), isCreateKey)
	victimOut := make(chan workflow.Outcome, 1)
	go func() { victimOut <- r.Run(ctx, victim) }()
	<-victim.stalled // the victim's session runs, past its first checks
	evs, err := st.UnitEvents(ctx, "SN-00000002", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	second := stallAt(newSoftUnit(t, "SN-00000002", pki.EKIssuing), isFinish)
	if out := runWithin(t, r, second); !out.Refused || out.Code != workflow.CodeSerialBusy {
		t.Errorf("second session of a busy serial: %+v, want refused %s", out, workflow.CodeSerialBusy)
	}
	after, err := st.UnitEvents(ctx, "SN-00000002", 0, 0)
	if err != nil || len(after) != len(evs) {
		t.Errorf("the refused session wrote %d events into the running unit's log (%v)", len(after)-len(evs), err)
	}
	close(victim.release)
	if out := <-victimOut; !out.Done {
		t.Errorf("victim: %+v", out)
	}
	refusals, _, err := st.Refusals(ctx)
	if err != nil || len(refusals) != 1 || refusals[0].Code != workflow.CodeSerialBusy || refusals[0].Serial != "SN-00000002" {
		t.Errorf("refusals %+v (%v), want the one %s", refusals, err, workflow.CodeSerialBusy)
	}
	if u, err := st.Unit(ctx, "SN-00000002"); err != nil || u.Status != store.StatusDone {
		t.Errorf("victim unit %+v, %v", u, err)
	}
}
