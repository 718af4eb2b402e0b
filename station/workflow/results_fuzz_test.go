package workflow_test

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// tamperedUnit is a softUnit whose answer to its at-th command (from 0) is replaced by res: the
// soft unit still runs the command, so that its state follows what the station asked.
type tamperedUnit struct {
	*softUnit
	at, seen int
	res      *agentv1.Result
}

func (u *tamperedUnit) Do(ctx context.Context, cmd *agentv1.Command) (res *agentv1.Result, err error) {
	defer func() {
		// The fake itself cannot answer some commands after a tampered answer (a key it
		// never made): that is the agent's transport failing, not the station.
		if p := recover(); p != nil {
			res, err = nil, fmt.Errorf("soft unit: %v", p)
		}
	}()
	res, err = u.softUnit.Do(ctx, cmd)
	if u.seen++; u.seen-1 == u.at {
		res = proto.Clone(u.res).(*agentv1.Result)
		res.Id = cmd.GetId()
		return res, nil
	}
	return res, err
}

// FuzzAgentResult runs the real workflow (its checks, a real store, in-process CAs) against a
// soft unit that answers one of its commands with arbitrary result bytes, as an agent on the
// line may: the station never panics, a unit that did not pass failed with a stable code
// other than INTERNAL or was interrupted, and a unit that passed is recorded done.
func FuzzAgentResult(f *testing.F) {
	r, pki, st := newRunner(f, 1)
	// Seeds: the soft unit's own answers, so each command's result type is a starting point.
	rec := &recordingUnit{softUnit: newSoftUnit(f, "SN-00000000", pki.EKIssuing)}
	if out := r.Run(context.Background(), rec); !out.Done {
		f.Fatalf("the soft unit fails: %+v", out)
	}
	for i, res := range rec.results {
		b, err := proto.Marshal(res)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), b)
	}
	f.Add(uint8(1), []byte{})
	n := 0
	f.Fuzz(func(t *testing.T, at uint8, data []byte) {
		var res agentv1.Result
		if err := proto.Unmarshal(data, &res); err != nil {
			return
		}
		n++
		serial := fmt.Sprintf("SN-%08d", n)
		u := &tamperedUnit{softUnit: newSoftUnit(t, serial, pki.EKIssuing), at: int(at), res: &res}
		out := r.Run(context.Background(), u)
		switch {
		case out.Done:
			if s, err := st.Unit(context.Background(), serial); err != nil || s.Status != store.StatusDone {
				t.Fatalf("unit passed but is recorded %q, %v", s.Status, err)
			}
		case out.Interrupted, out.Refused && out.Code != "":
		case out.Code == "" || out.Code == workflow.CodeInternal:
			t.Fatalf("command %d answered %v: outcome %+v", at, &res, out)
		}
	})
}

// recordingUnit is a softUnit that keeps its answers.
type recordingUnit struct {
	*softUnit
	results []*agentv1.Result
}

func (u *recordingUnit) Do(ctx context.Context, cmd *agentv1.Command) (*agentv1.Result, error) {
	res, err := u.softUnit.Do(ctx, cmd)
	if err == nil {
		u.results = append(u.results, res)
	}
	return res, err
}
