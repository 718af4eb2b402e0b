package ctl

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
)

// clearScreen moves the cursor home and clears a terminal (ANSI), so each frame replaces the
// last one.
const clearScreen = "\x1b[H\x1b[2J"

// watch draws the line every --interval until interrupted (or --count frames): the station's
// counters and CA health from GetStatus, then one line per unit in flight from ListUnits.
// On a terminal each frame replaces the last; otherwise frames follow each other. A station
// that is unreachable for a while is shown as such and asked again; any other error ends the
// watch.
func watch(e *env, args []string) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	interval := fs.Duration("interval", 2*time.Second, "")
	count := fs.Int("count", 0, "")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if e.json {
		return usagef("watch: table output only (status -o json gives the counters as JSON)")
	}
	if *interval < 100*time.Millisecond {
		return usagef("watch: --interval %v: want at least 100ms", *interval)
	}
	if *count < 0 {
		return usagef("watch: --count %d: want 0 (until interrupted) or more", *count)
	}
	clear := IsTerminal(e.out)
	t := time.NewTicker(*interval)
	defer t.Stop()
	for n := 0; *count == 0 || n < *count; n++ {
		if n > 0 {
			select {
			case <-e.ctx.Done():
				return nil
			case <-t.C:
			}
		}
		var buf bytes.Buffer
		if clear {
			buf.WriteString(clearScreen)
		} else if n > 0 {
			buf.WriteString("\n")
		}
		err := e.frame(&buf, *interval)
		switch {
		case e.ctx.Err() != nil:
			return nil // interrupted by the user
		case transient(err):
			fmt.Fprintf(&buf, "station unreachable, retrying every %v: %v\n", *interval, rpcErr(err))
		case err != nil:
			return rpcErr(err)
		}
		if _, err := e.out.Write(buf.Bytes()); err != nil {
			return err
		}
	}
	return nil
}

// transient reports whether a failed call may succeed when asked again.
func transient(err error) bool {
	c := status.Code(err)
	return c == codes.Unavailable || c == codes.DeadlineExceeded
}

// frame writes one view of the line to w.
func (e *env) frame(w io.Writer, interval time.Duration) error {
	ctx, cancel := e.call()
	defer cancel()
	st, err := e.client.GetStatus(ctx, &stationv1.GetStatusRequest{})
	if err != nil {
		return err
	}
	units, err := e.unitsInFlight(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	fmt.Fprintf(w, "station %s (%s)  %s  every %v, Ctrl-C stops\n", st.GetStationId(), dash(st.GetVersion()),
		now.UTC().Format(time.RFC3339), interval)
	fmt.Fprintf(w, "agents %d  in flight %d  units/h %.1f (last %d min)  done %d  failed %d\n\n",
		st.GetAgentsConnected(), len(units), st.GetUnitsPerHour(), st.GetWindowMinutes(), st.GetUnitsDone(), st.GetUnitsFailed())
	if len(st.GetCas()) > 0 {
		rows := [][]string{{"CA", "BREAKER", "REQUESTS", "ERRORS", "P50_MS", "P95_MS"}}
		for _, c := range st.GetCas() {
			rows = append(rows, []string{c.GetName(), dash(c.GetBreaker()), fmt.Sprint(c.GetRequests()), fmt.Sprint(c.GetErrors()),
				fmt.Sprintf("%.1f", c.GetP50Ms()), fmt.Sprintf("%.1f", c.GetP95Ms())})
		}
		if err := table(w, rows); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	if len(units) == 0 {
		fmt.Fprintln(w, "no unit in flight")
		return nil
	}
	rows := [][]string{{"SERIAL", "WORK_ORDER", "SLOT", "STEP", "IN_STEP", "ELAPSED", "ATTEMPTS"}}
	for _, u := range units {
		rows = append(rows, []string{u.GetSerial(), dash(u.GetWorkOrder()), dash(u.GetFixtureSlot()), dash(u.GetStep()),
			since(now, u.GetUpdateTime()), since(now, u.GetStartTime()), fmt.Sprint(u.GetAttempts())})
	}
	return table(w, rows)
}

// unitsInFlight lists every running unit, in serial order.
func (e *env) unitsInFlight(ctx context.Context) ([]*stationv1.Unit, error) {
	var out []*stationv1.Unit
	req := &stationv1.ListUnitsRequest{Status: stationv1.UnitStatus_UNIT_STATUS_RUNNING, PageSize: 1000}
	for {
		resp, err := e.client.ListUnits(ctx, req)
		if err != nil {
			return nil, err
		}
		out = append(out, resp.GetUnits()...)
		if resp.GetNextPageToken() == "" {
			return out, nil
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// since is the time from t to now in whole seconds ("-" when t is unset).
func since(now time.Time, t *timestamppb.Timestamp) string {
	if t == nil || (t.GetSeconds() == 0 && t.GetNanos() == 0) {
		return "-"
	}
	return max(0, now.Sub(t.AsTime())).Round(time.Second).String()
}

// IsTerminal reports whether w is a terminal (a character device).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
