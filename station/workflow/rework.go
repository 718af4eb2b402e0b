package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/store"
)

const stepRework = "rework"

// errAborted is the cancel cause of a unit aborted through the API.
var errAborted = errors.New("aborted by an operator")

// reworkCleanup removes what an earlier provisioning left in the TPM (both DevID keys and the
// IDevID NV index), journaled like any side effect. The profile is not known yet, so it uses
// the handles the unit record names and every profile's IDevID index.
func (u *unit) reworkCleanup(ctx context.Context) error {
	ref, err := u.r.cfg.Journal.BeginStep(ctx, u.serial, stepRework, []byte(`{"step":"rework"}`))
	if err != nil {
		return u.journalErr(err, "recording the rework intent")
	}
	done := map[string]string{}
	for role, k := range u.state.Keys {
		res, err := u.do(ctx, &agentv1.Command{Op: &agentv1.Command_Evict{Evict: &agentv1.EvictRequest{Handle: k.Handle, Auth: agentv1.Hierarchy_HIERARCHY_OWNER}}})
		if err != nil {
			return u.endFailed(ctx, ref, fail(CodeInstallFailed, err, "evicting the old %s key at %#x", role, k.Handle))
		}
		done["evict_"+role] = fmt.Sprint(res.GetEvict().GetExisted())
	}
	seen := map[uint32]bool{}
	for _, p := range u.r.cfg.Profiles {
		nv := p.IDevIDNV
		if seen[nv.Index] {
			continue
		}
		seen[nv.Index] = true
		res, err := u.do(ctx, &agentv1.Command{Op: &agentv1.Command_NvUndefine{NvUndefine: &agentv1.NVUndefineRequest{Index: nv.Index, Auth: nv.Auth}}})
		if err != nil {
			return u.endFailed(ctx, ref, fail(CodeInstallFailed, err, "removing the old IDevID NV index %#x", nv.Index))
		}
		done[fmt.Sprintf("undefine_%#x", nv.Index)] = fmt.Sprint(res.GetNvUndefine().GetExisted())
	}
	raw, _ := json.Marshal(done)
	if err := u.r.cfg.Journal.EndStep(ctx, ref, raw, ""); err != nil {
		return u.journalErr(err, "recording the rework result")
	}
	return nil
}

func (u *unit) endFailed(ctx context.Context, ref store.StepRef, err error) error {
	if errors.Is(err, errInterrupted) {
		return err
	}
	if endErr := u.r.cfg.Journal.EndStep(context.WithoutCancel(ctx), ref, nil, CodeOf(err)); endErr != nil {
		u.log.Error("recording a failed step", "step", ref.Step, "error", endErr)
	}
	return err
}
