package console

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/station/api"
)

// ActionHeader must be sent with every action (any value): a page of another origin cannot
// add it to a request without a CORS preflight, which the console does not answer.
const ActionHeader = "X-Console-Action"

// maxActionBody bounds an action's request body, {"reason": "..."}.
const maxActionBody = 2 * api.MaxReasonBytes

// action is one mutating call of the console: its route ({id} is the unit's serial or the
// work order's id), the API method whose role rules apply, and the call.
type action struct {
	name, path, method string
	call               func(ctx context.Context, l Line, id, reason string) (proto.Message, error)
}

var actions = []action{
	{"abort", "/api/units/{id}/abort", stationv1.Station_AbortUnit_FullMethodName,
		func(ctx context.Context, l Line, id, reason string) (proto.Message, error) {
			return l.AbortUnit(ctx, &stationv1.AbortUnitRequest{Serial: id, Reason: reason})
		}},
	{"rework", "/api/units/{id}/rework", stationv1.Station_AuthorizeRework_FullMethodName,
		func(ctx context.Context, l Line, id, reason string) (proto.Message, error) {
			return l.AuthorizeRework(ctx, &stationv1.AuthorizeReworkRequest{Serial: id, Reason: reason})
		}},
	{"close", "/api/workorders/{id}/close", stationv1.Station_CloseWorkOrder_FullMethodName,
		func(ctx context.Context, l Line, id, reason string) (proto.Message, error) {
			return l.CloseWorkOrder(ctx, &stationv1.CloseWorkOrderRequest{Id: id, Reason: reason})
		}},
}

// leaf returns the request's verified client certificate, nil for none.
func leaf(r *http.Request) *x509.Certificate {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil
	}
	return r.TLS.VerifiedChains[0][0]
}

// me is the JSON of /api/me: the viewer's role ("" for a wall display) and the actions that
// role may take, for the page to offer.
type me struct {
	Role    string   `json:"role"`
	Actions []string `json:"actions"`
}

func (c *console) me(w http.ResponseWriter, r *http.Request) {
	v := me{Actions: []string{}}
	if cert := leaf(r); cert != nil {
		v.Role, _ = c.cfg.Role(cert)
		for _, a := range actions {
			if api.Allowed(api.Role(v.Role), a.method) {
				v.Actions = append(v.Actions, a.name)
			}
		}
	}
	writeJSON(w, v)
}

// act serves action a: a same-origin POST with a reason, authorized and audited by the API.
func (c *console) act(a action) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := sameOrigin(r); err != nil {
			c.cfg.Logger.Warn("console action refused", "action", a.name, "remote", r.RemoteAddr, "error", err)
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		var body struct {
			Reason string `json:"reason"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxActionBody)).Decode(&body); err != nil {
			http.Error(w, `the body must be JSON {"reason": "..."} of at most a few KiB`, http.StatusBadRequest)
			return
		}
		reason := strings.TrimSpace(body.Reason)
		if reason == "" {
			http.Error(w, "a reason is required", http.StatusBadRequest)
			return
		}
		ctx, err := c.cfg.Line.Authorize(r.Context(), a.method, leaf(r), r.RemoteAddr)
		if err != nil {
			apiError(w, err)
			return
		}
		out, err := a.call(ctx, c.cfg.Line, r.PathValue("id"), reason)
		if err != nil {
			apiError(w, err)
			return
		}
		b, err := marshal(out)
		if err != nil {
			c.cfg.Logger.Error("console action", "action", a.name, "error", err)
			http.Error(w, "the answer could not be encoded; see the station log", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	}
}

// sameOrigin refuses requests a page of another origin could have sent.
func sameOrigin(r *http.Request) error {
	if r.Header.Get(ActionHeader) == "" {
		return errors.New("the " + ActionHeader + " header is required")
	}
	if o := r.Header.Get("Origin"); o != "" && o != "https://"+r.Host {
		return errors.New("cross-origin request refused")
	}
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
		return errors.New("cross-site request refused")
	}
	return nil
}

// httpStatus maps the API's gRPC codes to HTTP. A caller without a certificate (a wall
// display) is forbidden, not asked to authenticate: it may watch, never act.
func httpStatus(c codes.Code) int {
	switch c {
	case codes.Unauthenticated, codes.PermissionDenied:
		return http.StatusForbidden
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.NotFound:
		return http.StatusNotFound
	case codes.FailedPrecondition, codes.AlreadyExists:
		return http.StatusConflict
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
