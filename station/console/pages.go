package console

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"google.golang.org/grpc/status"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/reports/printable"
	"github.com/devid-station/devid/reports/traveler"
)

// apiError answers err, an API call's error, with its message under the matching HTTP status.
func apiError(w http.ResponseWriter, err error) {
	st, _ := status.FromError(err)
	http.Error(w, st.Message(), httpStatus(st.Code()))
}

// unitView is the JSON of /api/units/{serial}: the unit and its traveler record (steps,
// certificates, TPM), both as the API returns them.
type unitView struct {
	Unit     json.RawMessage `json:"unit"`
	Traveler json.RawMessage `json:"traveler"`
}

func (c *console) unit(w http.ResponseWriter, r *http.Request) {
	ctx, serial := r.Context(), r.PathValue("serial")
	u, err := c.cfg.Line.GetUnit(ctx, &stationv1.GetUnitRequest{Serial: serial})
	if err != nil {
		apiError(w, err)
		return
	}
	tr, err := c.cfg.Line.GetTraveler(ctx, &stationv1.GetTravelerRequest{Serial: serial})
	if err != nil {
		apiError(w, err)
		return
	}
	v := unitView{Traveler: tr.GetJson()}
	if v.Unit, err = marshal(u); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, v)
}

// travelerPage renders the unit's printable traveler (reports/printable) from its record now,
// so that it is there for a unit still on the line too. The page is self-contained: inline
// styles and data: images, nothing else.
func (c *console) travelerPage(w http.ResponseWriter, r *http.Request) {
	tr, err := c.cfg.Line.GetTraveler(r.Context(), &stationv1.GetTravelerRequest{Serial: r.PathValue("serial")})
	if err != nil {
		apiError(w, err)
		return
	}
	var rec traveler.Record
	if err := json.Unmarshal(tr.GetJson(), &rec); err != nil {
		c.cfg.Logger.Error("console traveler", "serial", r.PathValue("serial"), "error", err)
		http.Error(w, "the traveler record could not be read; see the station log", http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := (printable.Traveler{Record: &rec}).HTML(&buf); err != nil {
		c.cfg.Logger.Error("console traveler", "serial", rec.Serial, "error", err)
		http.Error(w, "the traveler could not be rendered; see the station log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
}

// workOrderView is one work order of /api/workorders: the API's work order and its units in
// flight now.
type workOrderView struct {
	WorkOrder json.RawMessage `json:"work_order"`
	InFlight  int             `json:"in_flight"`
}

func (c *console) workOrders(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	running, err := c.list(ctx, stationv1.UnitStatus_UNIT_STATUS_RUNNING)
	if err != nil {
		apiError(w, err)
		return
	}
	inFlight := map[string]int{}
	for _, u := range running {
		inFlight[u.GetWorkOrder()]++
	}
	out := []workOrderView{}
	req := &stationv1.ListWorkOrdersRequest{PageSize: 1000}
	for {
		resp, err := c.cfg.Line.ListWorkOrders(ctx, req)
		if err != nil {
			apiError(w, err)
			return
		}
		for _, wo := range resp.GetWorkOrders() {
			b, err := marshal(wo)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			out = append(out, workOrderView{WorkOrder: b, InFlight: inFlight[wo.GetId()]})
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	writeJSON(w, out)
}

// list lists every unit with status st.
func (c *console) list(ctx context.Context, st stationv1.UnitStatus) ([]*stationv1.Unit, error) {
	var out []*stationv1.Unit
	req := &stationv1.ListUnitsRequest{Status: st, PageSize: 1000}
	for {
		resp, err := c.cfg.Line.ListUnits(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("listing units: %w", err)
		}
		out = append(out, resp.GetUnits()...)
		if resp.GetNextPageToken() == "" {
			return out, nil
		}
		req.PageToken = resp.GetNextPageToken()
	}
}
