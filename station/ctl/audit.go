package ctl

import (
	"errors"
	"flag"
	"fmt"
	"sort"
	"strings"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
)

// ErrAuditBroken is returned by "audit verify" when the chain does not
// verify, so that stationctl exits 1.
var ErrAuditBroken = errors.New("the audit chain does not verify")

var auditCommands = map[string]func(*env, []string) error{
	"verify": auditVerify, "unit": auditUnit,
}

func auditVerify(e *env, args []string) error {
	if _, err := parse(flag.NewFlagSet("audit verify", flag.ContinueOnError), args, 0); err != nil {
		return err
	}
	ctx, cancel := e.call()
	defer cancel()
	r, err := e.client.VerifyAudit(ctx, &stationv1.VerifyAuditRequest{})
	if err != nil {
		return rpcErr(err)
	}
	if e.json {
		if err := e.printJSON(r); err != nil {
			return err
		}
	} else {
		result := "verified"
		if !r.GetOk() {
			at := fmt.Sprintf("seq %d", r.GetBadSeq())
			if r.GetBucket() != "" {
				at += fmt.Sprintf(", bucket %s key %q", r.GetBucket(), r.GetKey())
			}
			result = fmt.Sprintf("%s at %s: %s", r.GetErrorCode(), at, r.GetReason())
		}
		if err := table(e.out, [][]string{
			{"result", result},
			{"head", fmt.Sprintf("seq %d %x", r.GetHeadSeq(), r.GetHeadHash())},
			{"records", fmt.Sprint(r.GetRecords())},
			{"stored values", fmt.Sprint(r.GetValues())},
			{"checkpoints", fmt.Sprintf("%d, the latest signs seq %d", r.GetCheckpoints(), r.GetLastCheckpointSeq())},
			{"audit key sha256", dash(fmt.Sprintf("%x", r.GetKeySha256()))},
		}); err != nil {
			return err
		}
	}
	if !r.GetOk() {
		return ErrAuditBroken
	}
	return nil
}

func auditUnit(e *env, args []string) error {
	pos, err := parse(flag.NewFlagSet("audit unit", flag.ContinueOnError), args, 1)
	if err != nil {
		return err
	}
	ctx, cancel := e.call()
	defer cancel()
	u, err := e.client.GetUnitAudit(ctx, &stationv1.GetUnitAuditRequest{Serial: pos[0]})
	if err != nil {
		return rpcErr(err)
	}
	if e.json {
		return e.printJSON(u)
	}
	rows := [][]string{{"SEQ", "TIME", "PRINCIPAL", "ACTION", "RESULT", "WRITES", "CHECKPOINT", "HASH", "DETAILS"}}
	for _, r := range u.GetRecords() {
		cp := "none yet"
		if r.GetCheckpointSeq() != 0 {
			cp = fmt.Sprintf("seq %d", r.GetCheckpointSeq())
		}
		result := r.GetResult()
		if r.GetErrorCode() != "" {
			result += " " + r.GetErrorCode()
		}
		keys := make([]string, 0, len(r.GetDetails()))
		for k := range r.GetDetails() {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		details := make([]string, 0, len(keys))
		for _, k := range keys {
			details = append(details, k+"="+oneLine(r.GetDetails()[k]))
		}
		rows = append(rows, []string{fmt.Sprint(r.GetSeq()), ts(r.GetTime()), r.GetPrincipal(), r.GetAction(), result,
			fmt.Sprint(r.GetWrites()), cp, fmt.Sprintf("%x", r.GetHash()[:min(8, len(r.GetHash()))]), dash(strings.Join(details, " "))})
	}
	if err := table(e.out, rows); err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.out, "%s: %d audit records; chain head seq %d\n", u.GetSerial(), len(u.GetRecords()), u.GetHeadSeq())
	return err
}
