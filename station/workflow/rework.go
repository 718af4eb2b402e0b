package workflow

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/attest"
	"github.com/devid-station/devid/station/journal"
	"github.com/devid-station/devid/station/store"
)

const stepRework = journal.StepRework

// errAborted is the cancel cause of a unit aborted through the API.
var errAborted = errors.New("aborted by an operator")

// reworkCleanup prepares a reworked unit. A still-valid IDevID whose key and NV certificate are
// still in the TPM (checked against what the store recorded) is kept, and its steps' results
// stay valid; otherwise the IDevID key and NV index are removed and the certificate is marked
// superseded. The LDevID key, the LDevID file and the onboarding configuration are always
// removed and the LDevID certificate superseded: what is gone is issued again. Journaled like
// any side effect; afterwards the unit's results are reloaded.
func (u *unit) reworkCleanup(ctx context.Context) error {
	ref, err := u.r.cfg.Journal.BeginStep(ctx, u.serial, stepRework, []byte(`{"step":"rework"}`))
	if err != nil {
		return u.journalErr(err, "recording the rework intent")
	}
	p := u.r.cfg.Profiles[u.state.Profile]
	res := journal.ReworkResult{IDevID: journal.ReworkKept, Done: map[string]string{}}
	why, err := u.idevidIntact(ctx, p)
	if err != nil {
		return u.endFailed(ctx, ref, err)
	}
	if why != "" {
		res.IDevID, res.Reason = journal.ReworkReissued, why
	}
	profiles := []*Profile{p}
	if p == nil {
		profiles = slices.Collect(maps.Values(u.r.cfg.Profiles))
	}
	roles := []string{roleLDevID}
	if why != "" {
		roles = append(roles, roleIDevID)
	}
	for _, role := range roles {
		k, ok := u.state.Keys[role]
		if !ok {
			continue
		}
		r, err := u.do(ctx, &agentv1.Command{Op: &agentv1.Command_Evict{Evict: &agentv1.EvictRequest{Handle: k.Handle, Auth: agentv1.Hierarchy_HIERARCHY_OWNER}}})
		if err != nil {
			return u.endFailed(ctx, ref, fail(CodeInstallFailed, err, "evicting the old %s key at %#x", role, k.Handle))
		}
		res.Done["evict_"+role] = fmt.Sprint(r.GetEvict().GetExisted())
	}
	seen, undefined := map[string]bool{}, map[uint32]bool{}
	for _, pr := range profiles {
		paths := []string{pr.LDevIDCertPath}
		if pr.Onboarding != nil {
			paths = append(paths, pr.Onboarding.Path)
		}
		for _, path := range paths {
			if seen[path] {
				continue
			}
			seen[path] = true
			r, err := u.do(ctx, &agentv1.Command{Op: &agentv1.Command_RemoveFile{RemoveFile: &agentv1.RemoveFileRequest{Path: path}}})
			if err != nil {
				return u.endFailed(ctx, ref, fail(CodeInstallFailed, err, "removing %s", path))
			}
			res.Done["remove_"+path] = fmt.Sprint(r.GetRemoveFile().GetExisted())
		}
		nv := pr.IDevIDNV
		if why == "" || undefined[nv.Index] {
			continue
		}
		undefined[nv.Index] = true
		r, err := u.do(ctx, &agentv1.Command{Op: &agentv1.Command_NvUndefine{NvUndefine: &agentv1.NVUndefineRequest{Index: nv.Index, Auth: nv.Auth}}})
		if err != nil {
			return u.endFailed(ctx, ref, fail(CodeInstallFailed, err, "removing the old IDevID NV index %#x", nv.Index))
		}
		res.Done[fmt.Sprintf("undefine_%#x", nv.Index)] = fmt.Sprint(r.GetNvUndefine().GetExisted())
	}
	for _, c := range u.state.Certificates {
		if c.Role != store.RoleLDevID && (c.Role != store.RoleIDevID && c.Role != store.RoleIAK || why == "") {
			continue
		}
		if s := c.Current(); s == store.CertSuperseded || s == store.CertRefused {
			continue
		}
		reason := "rework: the LDevID is issued again"
		switch c.Role {
		case store.RoleIDevID:
			reason = "rework: " + why
		case store.RoleIAK:
			reason = "rework: the IAK is certified again with the new IDevID: " + why
		}
		if err := u.r.cfg.Journal.SetCertificateStatus(ctx, u.serial, c.SHA256, store.CertSuperseded, reason); err != nil {
			return u.endFailed(ctx, ref, fail(CodeInternal, err, "marking certificate %s superseded", short(c.SHA256)))
		}
	}
	raw, err := json.Marshal(res)
	if err != nil {
		return u.endFailed(ctx, ref, fail(CodeInternal, err, "encoding the rework result"))
	}
	if err := u.r.cfg.Journal.EndStep(ctx, ref, raw, ""); err != nil {
		return u.journalErr(err, "recording the rework result")
	}
	u.log.Info("unit reworked", "idevid", res.IDevID, "reason", res.Reason)
	u.results = map[string]json.RawMessage{}
	return u.load(ctx)
}

// idevidSteps produce and install the IDevID; their results outlive a rework that keeps it.
var idevidSteps = map[string]bool{
	StepIDevIDKey: true, StepIDevIDProof: true, StepIDevIDCSR: true, StepIDevIDEnroll: true, StepIDevIDInstall: true,
	// The IAK's: its certification names the IDevID key, its certificate goes with it.
	StepIAKKey: true, StepIAKProof: true, StepIAKCertify: true, StepIAKCSR: true, StepIAKEnroll: true,
}

// idevidIntact checks, before a rework touches anything, that the unit still holds the IDevID
// of its last provisioning: the certificate the store recorded is still valid for the profile's
// CA, the key at the profile's handle is the recorded one (same Name) and the NV index holds
// exactly that certificate. It returns why not ("" when intact); err only when the session
// broke.
func (u *unit) idevidIntact(ctx context.Context, p *Profile) (string, error) {
	if p == nil {
		return fmt.Sprintf("the unit's profile %q is no longer configured", u.state.Profile), nil
	}
	var key journal.KeyResult
	var enr journal.EnrollResult
	if json.Unmarshal(u.results[StepIDevIDKey], &key) != nil || json.Unmarshal(u.results[StepIDevIDEnroll], &enr) != nil {
		return "no IDevID key and certificate were recorded", nil
	}
	if _, ok := u.results[StepIDevIDInstall]; !ok {
		return "the IDevID certificate was never installed", nil
	}
	cert, err := x509.ParseCertificate(enr.Cert)
	if err != nil {
		return "the recorded IDevID certificate does not parse", nil
	}
	now := u.r.cfg.Clock.Now()
	if now.After(cert.NotAfter) || now.Before(cert.NotBefore) {
		return "the IDevID certificate is not valid now", nil
	}
	inter := x509.NewCertPool()
	for _, der := range enr.Chain {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	issuer, ok := u.r.cfg.Issuers[p.IDevID.Issuer]
	if !ok {
		return "the profile's IDevID CA is not configured", nil
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: issuer.Roots(), Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return "the IDevID certificate no longer chains to " + p.IDevID.Issuer, nil
	}
	if key.Handle != p.IDevID.Handle {
		return "the profile keeps the IDevID key at another handle", nil
	}
	res, err := u.do(ctx, &agentv1.Command{Op: &agentv1.Command_Info{Info: &agentv1.InfoRequest{}}})
	if err != nil {
		return agentReason("reading the TPM's handles", err)
	}
	if !slices.Contains(res.GetInfo().GetPersistentHandles(), key.Handle) {
		return "the IDevID key is gone", nil
	}
	if !slices.Contains(res.GetInfo().GetNvIndices(), p.IDevIDNV.Index) {
		return "the IDevID NV index is gone", nil
	}
	if res, err = u.do(ctx, &agentv1.Command{Op: &agentv1.Command_NvRead{NvRead: &agentv1.NVReadRequest{Index: p.IDevIDNV.Index}}}); err != nil {
		return agentReason("reading the IDevID NV index", err)
	}
	if !bytes.Equal(res.GetNvRead().GetData(), cert.Raw) {
		return "the IDevID NV index holds another certificate", nil
	}
	// The key is there: CreateKey finds it (existed) without creating anything.
	res, err = u.do(ctx, &agentv1.Command{Op: &agentv1.Command_CreateKey{CreateKey: &agentv1.CreateKeyRequest{
		Role: agentv1.KeyRole_KEY_ROLE_IDEVID, Algorithm: p.IDevID.Algorithm, Handle: key.Handle}}})
	if err != nil {
		return agentReason("finding the IDevID key", err)
	}
	k, err := attest.CheckDevID(res.GetCreateKey().GetPublicArea())
	if err != nil || !res.GetCreateKey().GetExisted() || !bytes.Equal(k.Name, key.Name) || !publicKeyEqual(k.PublicKey, cert.PublicKey) {
		return "the key at the IDevID handle is not the certified key", nil
	}
	return "", nil
}

// agentReason turns an agent's refusal into a reason to re-issue; a broken session stays an
// error.
func agentReason(what string, err error) (string, error) {
	if errors.Is(err, errInterrupted) {
		return "", err
	}
	return fmt.Sprintf("%s: %v", what, err), nil
}

func (u *unit) endFailed(ctx context.Context, ref store.StepRef, err error) error {
	if errors.Is(err, errInterrupted) {
		return err
	}
	rctx, cancel := recording(ctx)
	defer cancel()
	if endErr := u.r.cfg.Journal.EndStep(rctx, ref, nil, CodeOf(err)); endErr != nil {
		u.log.Error("recording a failed step", "step", ref.Step, "error", endErr)
	}
	return err
}
