package ctl

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/reports/traveler"
)

// listPage is the page size stationctl asks for; it follows next_page_token to the end.
const listPage = 500

func (e *env) printJSON(m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encoding the answer: %w", err)
	}
	_, err = fmt.Fprintf(e.out, "%s\n", b)
	return err
}

// table writes aligned rows; the first row is the header.
func table(w io.Writer, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func ts(t *timestamppb.Timestamp) string {
	if t == nil || (t.GetSeconds() == 0 && t.GetNanos() == 0) {
		return "-"
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// --- work orders

var workOrderHeader = []string{"ID", "PROFILE", "STATUS", "SERIALS", "TOTAL", "DONE", "FAILED", "CREATED_BY", "CREATED", "CLOSED"}

func workOrderRow(w *stationv1.WorkOrder) []string {
	return []string{w.GetId(), w.GetProfile(), enumName(w.GetStatus().String(), "WORK_ORDER_STATUS_"), serialsSummary(w),
		fmt.Sprint(w.GetUnitsTotal()), fmt.Sprint(w.GetUnitsDone()), fmt.Sprint(w.GetUnitsFailed()),
		dash(w.GetCreatedBy()), ts(w.GetCreateTime()), ts(w.GetCloseTime())}
}

// enumName lowercases an enum value name without its prefix.
func enumName(s, prefix string) string { return strings.ToLower(strings.TrimPrefix(s, prefix)) }

// serialsSummary shows a work order's serials in one cell.
func serialsSummary(w *stationv1.WorkOrder) string {
	var parts []string
	for _, r := range w.GetRanges() {
		parts = append(parts, fmt.Sprintf("%s%0*d..%s%0*d", r.GetPrefix(), r.GetWidth(), r.GetFirst(), r.GetPrefix(), r.GetWidth(), r.GetLast()))
	}
	s := w.GetSerials()
	switch {
	case len(s) > 3:
		parts = append(parts, fmt.Sprintf("%s,%s,...,%s (%d)", s[0], s[1], s[len(s)-1], len(s)))
	case len(s) > 0:
		parts = append(parts, strings.Join(s, ","))
	}
	return dash(strings.Join(parts, " "))
}

func (e *env) printWorkOrder(w *stationv1.WorkOrder, err error) error {
	if err != nil {
		return rpcErr(err)
	}
	if e.json {
		return e.printJSON(w)
	}
	return table(e.out, [][]string{workOrderHeader, workOrderRow(w)})
}

func workorderCreate(e *env, args []string) error {
	fs := flag.NewFlagSet("workorder create", flag.ContinueOnError)
	id := fs.String("id", "", "")
	profile := fs.String("profile", "", "")
	var serials, ranges multi
	fs.Var(&serials, "serial", "")
	fs.Var(&ranges, "range", "")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if *id == "" || *profile == "" {
		return usagef("workorder create: --id and --profile are required")
	}
	if len(serials) == 0 && len(ranges) == 0 {
		return usagef("workorder create: give --serial or --range")
	}
	req := &stationv1.CreateWorkOrderRequest{Id: *id, Profile: *profile, Serials: serials}
	for _, r := range ranges {
		pr, err := ParseRange(r)
		if err != nil {
			return usagef("workorder create: %v", err)
		}
		req.Ranges = append(req.Ranges, pr)
	}
	ctx, cancel := e.call()
	defer cancel()
	return e.printWorkOrder(e.client.CreateWorkOrder(ctx, req))
}

// idArg returns the one positional argument, or --id.
func idArg(name string, args []string) (string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	id := fs.String("id", "", "")
	pos, err := parse(fs, args, -1)
	switch {
	case err != nil:
		return "", err
	case *id == "" && len(pos) == 1:
		return pos[0], nil
	case *id != "" && len(pos) == 0:
		return *id, nil
	}
	return "", usagef("%s: want one work order id", name)
}

func workorderGet(e *env, args []string) error {
	id, err := idArg("workorder get", args)
	if err != nil {
		return err
	}
	ctx, cancel := e.call()
	defer cancel()
	return e.printWorkOrder(e.client.GetWorkOrder(ctx, &stationv1.GetWorkOrderRequest{Id: id}))
}

func workorderClose(e *env, args []string) error {
	id, err := idArg("workorder close", args)
	if err != nil {
		return err
	}
	ctx, cancel := e.call()
	defer cancel()
	return e.printWorkOrder(e.client.CloseWorkOrder(ctx, &stationv1.CloseWorkOrderRequest{Id: id}))
}

func workorderList(e *env, args []string) error {
	fs := flag.NewFlagSet("workorder list", flag.ContinueOnError)
	st := fs.String("status", "", "")
	limit := fs.Int("limit", 0, "")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	req := &stationv1.ListWorkOrdersRequest{PageSize: listPage}
	if *st != "" {
		v, ok := stationv1.WorkOrderStatus_value["WORK_ORDER_STATUS_"+strings.ToUpper(*st)]
		if !ok || v == 0 {
			return usagef("workorder list: --status %q: want open or closed", *st)
		}
		req.Status = stationv1.WorkOrderStatus(v)
	}
	all := &stationv1.ListWorkOrdersResponse{}
	for {
		ctx, cancel := e.call()
		resp, err := e.client.ListWorkOrders(ctx, req)
		cancel()
		if err != nil {
			return rpcErr(err)
		}
		all.WorkOrders = append(all.WorkOrders, resp.GetWorkOrders()...)
		if *limit > 0 && len(all.WorkOrders) >= *limit {
			all.WorkOrders = all.WorkOrders[:*limit]
			break
		}
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			break
		}
	}
	if e.json {
		return e.printJSON(all)
	}
	rows := [][]string{workOrderHeader}
	for _, w := range all.WorkOrders {
		rows = append(rows, workOrderRow(w))
	}
	return table(e.out, rows)
}

// --- units

var unitHeader = []string{"SERIAL", "STATUS", "STEP", "WORK_ORDER", "PROFILE", "ATTEMPTS", "ERROR", "SLOT", "UPDATED"}

func unitRow(u *stationv1.Unit) []string {
	return []string{u.GetSerial(), enumName(u.GetStatus().String(), "UNIT_STATUS_"), dash(u.GetStep()), dash(u.GetWorkOrder()),
		dash(u.GetProfile()), fmt.Sprint(u.GetAttempts()), dash(u.GetErrorCode()), dash(u.GetFixtureSlot()), ts(u.GetUpdateTime())}
}

// failure shows a failure's stable code and its message (which does not repeat the code).
func failure(code, msg string) string {
	if code == "" || msg == "" {
		return code + msg
	}
	return code + ": " + msg
}

func (e *env) printUnit(u *stationv1.Unit, err error) error {
	if err != nil {
		return rpcErr(err)
	}
	if e.json {
		return e.printJSON(u)
	}
	if err := table(e.out, [][]string{unitHeader, unitRow(u)}); err != nil {
		return err
	}
	if u.GetErrorMessage() != "" {
		_, err = fmt.Fprintf(e.out, "\nerror: %s\n", oneLine(u.GetErrorMessage()))
	}
	return err
}

func unitGet(e *env, args []string) error {
	pos, err := parse(flag.NewFlagSet("unit get", flag.ContinueOnError), args, 1)
	if err != nil {
		return err
	}
	ctx, cancel := e.call()
	defer cancel()
	return e.printUnit(e.client.GetUnit(ctx, &stationv1.GetUnitRequest{Serial: pos[0]}))
}

func unitList(e *env, args []string) error {
	fs := flag.NewFlagSet("unit list", flag.ContinueOnError)
	st := fs.String("status", "", "")
	wo := fs.String("work-order", "", "")
	code := fs.String("error-code", "", "")
	limit := fs.Int("limit", 0, "")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	req := &stationv1.ListUnitsRequest{PageSize: listPage, WorkOrder: *wo, ErrorCode: *code}
	if *st != "" {
		v, ok := stationv1.UnitStatus_value["UNIT_STATUS_"+strings.ToUpper(*st)]
		if !ok || v == 0 {
			return usagef("unit list: --status %q: want running, waiting, done, failed, hold or scrapped", *st)
		}
		req.Status = stationv1.UnitStatus(v)
	}
	all := &stationv1.ListUnitsResponse{}
	for {
		ctx, cancel := e.call()
		resp, err := e.client.ListUnits(ctx, req)
		cancel()
		if err != nil {
			return rpcErr(err)
		}
		all.Units = append(all.Units, resp.GetUnits()...)
		if *limit > 0 && len(all.Units) >= *limit {
			all.Units = all.Units[:*limit]
			break
		}
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			break
		}
	}
	if e.json {
		return e.printJSON(all)
	}
	rows := [][]string{unitHeader}
	for _, u := range all.Units {
		rows = append(rows, unitRow(u))
	}
	return table(e.out, rows)
}

// serialReason parses SERIAL --reason TEXT.
func serialReason(name string, args []string) (string, string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	reason := fs.String("reason", "", "")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return "", "", err
	}
	if *reason == "" {
		return "", "", usagef("%s: --reason is required", name)
	}
	return pos[0], *reason, nil
}

func unitAbort(e *env, args []string) error {
	serial, reason, err := serialReason("unit abort", args)
	if err != nil {
		return err
	}
	ctx, cancel := e.call()
	defer cancel()
	return e.printUnit(e.client.AbortUnit(ctx, &stationv1.AbortUnitRequest{Serial: serial, Reason: reason}))
}

func unitRework(e *env, args []string) error {
	serial, reason, err := serialReason("unit rework", args)
	if err != nil {
		return err
	}
	ctx, cancel := e.call()
	defer cancel()
	return e.printUnit(e.client.AuthorizeRework(ctx, &stationv1.AuthorizeReworkRequest{Serial: serial, Reason: reason}))
}

func unitDecide(e *env, args []string) error {
	fs := flag.NewFlagSet("unit decide", flag.ContinueOnError)
	reason := fs.String("reason", "", "")
	decision := fs.String("decision", "", "")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	d, ok := stationv1.HoldDecision_value["HOLD_DECISION_"+strings.ToUpper(*decision)]
	switch {
	case !ok || d == 0:
		return usagef("unit decide: --decision %q: want rework or scrap", *decision)
	case *reason == "":
		return usagef("unit decide: --reason is required")
	}
	ctx, cancel := e.call()
	defer cancel()
	return e.printUnit(e.client.DecideHold(ctx, &stationv1.DecideHoldRequest{Serial: pos[0], Decision: stationv1.HoldDecision(d), Reason: *reason}))
}

func unitReleaseEK(e *env, args []string) error {
	serial, reason, err := serialReason("unit release-ek", args)
	if err != nil {
		return err
	}
	ctx, cancel := e.call()
	defer cancel()
	return e.printUnit(e.client.ReleaseEK(ctx, &stationv1.ReleaseEKRequest{Serial: serial, Reason: reason}))
}

// --- events

// eventLine is the fixed-width table layout of events: a stream cannot be aligned after the
// fact.
const eventLine = "%-8s  %-20s  %-14s  %-20s  %-17s  %-22s  %s\n"

func events(e *env, args []string) error {
	fs := flag.NewFlagSet("events", flag.ContinueOnError)
	after := fs.String("after", "", "")
	serial := fs.String("serial", "", "")
	follow := fs.Bool("follow", false, "")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	ctx, cancel := e.ctx, func() {}
	if !*follow {
		ctx, cancel = e.call()
	}
	defer cancel()
	stream, err := e.client.WatchEvents(ctx, &stationv1.WatchEventsRequest{AfterToken: *after, Serial: *serial, Follow: *follow})
	if err != nil {
		return rpcErr(err)
	}
	if !e.json {
		fmt.Fprintf(e.out, eventLine, "TOKEN", "TIME", "SERIAL", "KIND", "STEP", "CODE", "MESSAGE")
	}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if e.ctx.Err() != nil {
				return nil // interrupted by the user
			}
			return rpcErr(err)
		}
		if e.json {
			b, err := protojson.Marshal(ev)
			if err != nil {
				return fmt.Errorf("encoding an event: %w", err)
			}
			fmt.Fprintf(e.out, "%s\n", b)
			continue
		}
		fmt.Fprintf(e.out, eventLine, ev.GetToken(), ts(ev.GetTime()), dash(ev.GetSerial()), ev.GetKind(),
			dash(ev.GetStep()), dash(ev.GetErrorCode()), oneLine(ev.GetMessage()))
	}
}

// --- refused sessions

func refusalsCmd(e *env, args []string) error {
	fs := flag.NewFlagSet("refusals", flag.ContinueOnError)
	serial := fs.String("serial", "", "")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	ctx, cancel := e.call()
	defer cancel()
	resp, err := e.client.ListRefusals(ctx, &stationv1.ListRefusalsRequest{Serial: *serial})
	if err != nil {
		return rpcErr(err)
	}
	if e.json {
		return e.printJSON(resp)
	}
	rows := [][]string{{"SEQ", "TIME", "PEER", "SERIAL", "CODE", "MESSAGE"}}
	for _, r := range resp.GetRefusals() {
		rows = append(rows, []string{fmt.Sprint(r.GetSeq()), ts(r.GetTime()), dash(r.GetPeer()), dash(r.GetSerial()), r.GetCode(), dash(r.GetMessage())})
	}
	if err := table(e.out, rows); err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.out, "%d refused sessions in all; the station keeps the most recent\n", resp.GetTotal())
	return err
}

// --- traveler

func travelerCmd(e *env, args []string) error {
	pos, err := parse(flag.NewFlagSet("traveler", flag.ContinueOnError), args, 1)
	if err != nil {
		return err
	}
	ctx, cancel := e.call()
	defer cancel()
	t, err := e.client.GetTraveler(ctx, &stationv1.GetTravelerRequest{Serial: pos[0]})
	if err != nil {
		return rpcErr(err)
	}
	if e.json {
		_, err := e.out.Write(t.GetJson())
		return err
	}
	var r traveler.Record
	if err := json.Unmarshal(t.GetJson(), &r); err != nil {
		return fmt.Errorf("decoding the traveler record: %w", err)
	}
	return printTraveler(e.out, &r)
}

func printTraveler(w io.Writer, r *traveler.Record) error {
	timeOr := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	kv := [][]string{
		{"serial", r.Serial}, {"work order", dash(r.WorkOrder)}, {"profile", dash(r.Profile)},
		{"station", r.StationID}, {"result", r.Result}, {"error", dash(failure(r.ErrorCode, oneLine(r.ErrorMessage)))},
		{"attempts", fmt.Sprint(r.Attempts)}, {"started", timeOr(r.StartedAt)}, {"ended", timeOr(r.EndedAt)},
		{"cycle time", (time.Duration(r.CycleTimeSeconds * float64(time.Second))).Round(time.Millisecond).String()},
	}
	if t := r.TPM; t != nil {
		kv = append(kv, []string{"tpm", strings.TrimSpace(fmt.Sprintf("%s %s firmware %s", t.ManufacturerID, t.VendorString, t.FirmwareVersion))},
			[]string{"fixture slot", dash(t.FixtureSlot)})
	}
	if ek := r.EK; ek != nil {
		kv = append(kv, []string{"ek", fmt.Sprintf("%s issuer %q serial %s sha256 %s", ek.Algorithm, ek.Issuer, ek.SerialNumber, ek.SHA256)})
	}
	for _, c := range []struct {
		name string
		cert *traveler.Certificate
	}{{"idevid", r.IDevID}, {"ldevid", r.LDevID}} {
		if c.cert != nil {
			kv = append(kv, []string{c.name, fmt.Sprintf("%q issuer %q serial %s valid %s..%s sha256 %s", c.cert.Subject, c.cert.Issuer,
				c.cert.SerialNumber, c.cert.NotBefore.Format(time.DateOnly), c.cert.NotAfter.Format(time.DateOnly), c.cert.SHA256)})
		}
	}
	for _, name := range sortedKeys(r.Verification) {
		kv = append(kv, []string{"check " + name, r.Verification[name]})
	}
	for _, c := range r.Certificates {
		kv = append(kv, []string{"certificate", strings.TrimSpace(fmt.Sprintf("%s %s sha256 %s %s", c.Role, c.Status, c.SHA256, c.Reason))})
	}
	if err := table(w, kv); err != nil {
		return err
	}
	if len(r.Provisionings) > 1 {
		rows := [][]string{{"PROVISIONING", "RESULT", "CODE", "STARTED", "CYCLE", "REWORK"}}
		for _, p := range r.Provisionings {
			by := "-"
			if p.Rework != nil {
				by = fmt.Sprintf("by %s: %s", p.Rework.By, p.Rework.Reason)
			}
			rows = append(rows, []string{fmt.Sprint(p.Number), p.Result, dash(p.ErrorCode), timeOr(p.StartedAt),
				(time.Duration(p.CycleTimeSeconds * float64(time.Second))).Round(time.Millisecond).String(), by})
		}
		fmt.Fprintln(w)
		if err := table(w, rows); err != nil {
			return err
		}
	}
	rows := [][]string{{"STEP", "ATTEMPT", "STARTED", "DURATION", "CODE"}}
	for _, s := range r.Steps {
		d := "-"
		if s.EndedAt != nil {
			d = time.Duration(s.DurationMS * float64(time.Millisecond)).Round(time.Millisecond).String()
		}
		rows = append(rows, []string{s.Name, fmt.Sprint(s.Attempt), s.StartedAt.UTC().Format("15:04:05.000"), d, dash(s.ErrorCode)})
	}
	fmt.Fprintln(w)
	return table(w, rows)
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// --- status

func statusCmd(e *env, args []string) error {
	if _, err := parse(flag.NewFlagSet("status", flag.ContinueOnError), args, 0); err != nil {
		return err
	}
	ctx, cancel := e.call()
	defer cancel()
	st, err := e.client.GetStatus(ctx, &stationv1.GetStatusRequest{})
	if err != nil {
		return rpcErr(err)
	}
	if e.json {
		return e.printJSON(st)
	}
	if err := table(e.out, [][]string{
		{"station", st.GetStationId()}, {"version", dash(st.GetVersion())},
		{"agents connected", fmt.Sprint(st.GetAgentsConnected())},
		{"units/hour", fmt.Sprintf("%.1f (last %d min)", st.GetUnitsPerHour(), st.GetWindowMinutes())},
		{"units done", fmt.Sprint(st.GetUnitsDone())}, {"units failed", fmt.Sprint(st.GetUnitsFailed())},
	}); err != nil {
		return err
	}
	rows := [][]string{{"STEP", "RUNNING"}}
	for _, step := range sortedKeys(st.GetUnitsPerStep()) {
		rows = append(rows, []string{step, fmt.Sprint(st.GetUnitsPerStep()[step])})
	}
	fmt.Fprintln(e.out)
	if err := table(e.out, rows); err != nil {
		return err
	}
	rows = [][]string{{"CA", "BREAKER", "REQUESTS", "ERRORS", "P50_MS", "P95_MS"}}
	for _, c := range st.GetCas() {
		rows = append(rows, []string{c.GetName(), dash(c.GetBreaker()), fmt.Sprint(c.GetRequests()), fmt.Sprint(c.GetErrors()),
			fmt.Sprintf("%.1f", c.GetP50Ms()), fmt.Sprintf("%.1f", c.GetP95Ms())})
	}
	fmt.Fprintln(e.out)
	return table(e.out, rows)
}
