package ctl

import (
	"flag"
	"fmt"
	"io"
	"os"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/station/reconcile"
)

// possiblyIssuedCmd lists the enrollments whose answer was lost, open ones unless --all.
func possiblyIssuedCmd(e *env, args []string) error {
	fs := flag.NewFlagSet("possibly-issued", flag.ContinueOnError)
	serial := fs.String("serial", "", "")
	all := fs.Bool("all", false, "")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	ctx, cancel := e.call()
	defer cancel()
	resp, err := e.client.ListPossiblyIssued(ctx, &stationv1.ListPossiblyIssuedRequest{Serial: *serial, All: *all})
	if err != nil {
		return rpcErr(err)
	}
	if e.json {
		return e.printJSON(resp)
	}
	rows := [][]string{{"ID", "ROLE", "CA", "KEY", "CSR", "FROM", "TO", "STATE"}}
	for _, p := range resp.GetEntries() {
		state := "open"
		if p.GetClosed() {
			state = "closed: " + p.GetResolution()
		}
		rows = append(rows, []string{p.GetId(), p.GetRole(), p.GetCa(), short(p.GetPublicKeySha256()), short(p.GetCsrSha256()),
			ts(p.GetFrom()), ts(p.GetTo()), state})
	}
	return table(e.out, rows)
}

// reconcileCmd runs "reconcile import FILE --ca NAME".
func reconcileCmd(e *env, args []string) error {
	return sub(e, "reconcile", args, map[string]func(*env, []string) error{"import": reconcileImport})
}

func reconcileImport(e *env, args []string) error {
	fs := flag.NewFlagSet("reconcile import", flag.ContinueOnError)
	ca := fs.String("ca", "", "")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	if *ca == "" {
		return usagef("reconcile import: --ca is required")
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, reconcile.MaxLog+1))
	if err != nil {
		return fmt.Errorf("reading %s: %w", pos[0], err)
	}
	if len(data) > reconcile.MaxLog {
		return fmt.Errorf("%s is larger than %d bytes", pos[0], reconcile.MaxLog)
	}
	ctx, cancel := e.call()
	defer cancel()
	resp, err := e.client.ImportIssuanceLog(ctx, &stationv1.ImportIssuanceLogRequest{Ca: *ca, Log: data})
	if err != nil {
		return rpcErr(err)
	}
	if e.json {
		return e.printJSON(resp)
	}
	_, err = fmt.Fprintf(e.out, "%d entries closed, %d certificates recorded, %d entries of %s still open\n",
		resp.GetClosed(), resp.GetRecorded(), resp.GetOpen(), *ca)
	return err
}

// short cuts a hex digest for a table.
func short(h string) string {
	if len(h) > 16 {
		return h[:16]
	}
	return dash(h)
}
