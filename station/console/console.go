// Package console serves the operator console over HTTPS, its HTML, CSS and scripts embedded
// with go:embed (nothing is fetched from anywhere else): the line view — the counters, CA
// health and agents of GetStatus, one tile per unit in flight with its step and time in it
// against the step's typical time, the latest failures with what the operator should do —
// updated through Server-Sent Events fed by the station's event stream (the store's outbox);
// a unit's page (step timeline, certificates, printable traveler); the work orders' progress.
// Every request needs a client certificate bound to a role, as the API does (the listener's
// TLS asks for it; the role comes from the same table), or must come from a wall display's
// address.
//
// Three actions change the station: abort a unit, authorize a unit's rework, close a work
// order. Each asks for a reason and calls the station's API implementation in-process with the
// caller the API's own check (Line.Authorize) found for the client certificate, so that it is
// allowed, refused and audited exactly as the same gRPC call would be; a wall display (no
// certificate) is always refused. Against cross-site requests, an action is a POST that must
// carry the header X-Console-Action (which a cross-origin page cannot send without a CORS
// preflight the console never answers) and, when the browser sends them, an Origin naming the
// console itself and Sec-Fetch-Site same-origin.
package console

import (
	"cmp"
	"context"
	"crypto/x509"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/station/store"
)

//go:embed assets
var assets embed.FS

// Line is the station's API implementation (*api.Server): what the pages show, the actions
// they take, and the API's authorization of those actions.
type Line interface {
	GetStatus(ctx context.Context, req *stationv1.GetStatusRequest) (*stationv1.Status, error)
	ListUnits(ctx context.Context, req *stationv1.ListUnitsRequest) (*stationv1.ListUnitsResponse, error)
	AbortUnit(ctx context.Context, req *stationv1.AbortUnitRequest) (*stationv1.Unit, error)
	AuthorizeRework(ctx context.Context, req *stationv1.AuthorizeReworkRequest) (*stationv1.Unit, error)
	CloseWorkOrder(ctx context.Context, req *stationv1.CloseWorkOrderRequest) (*stationv1.WorkOrder, error)
	GetUnit(ctx context.Context, req *stationv1.GetUnitRequest) (*stationv1.Unit, error)
	GetTraveler(ctx context.Context, req *stationv1.GetTravelerRequest) (*stationv1.Traveler, error)
	ListWorkOrders(ctx context.Context, req *stationv1.ListWorkOrdersRequest) (*stationv1.ListWorkOrdersResponse, error)
	// Authorize checks that the holder of leaf (nil: no certificate), calling from peer, may
	// call method, auditing a refusal, and returns ctx carrying the caller.
	Authorize(ctx context.Context, method string, leaf *x509.Certificate, peer string) (context.Context, error)
}

// Events reads the station's event stream: the events after token (at most limit) and the
// token to resume from, and the newest token.
type Events interface {
	OutboxAfter(ctx context.Context, token uint64, limit int) ([]store.Event, uint64, error)
	OutboxHead(ctx context.Context) (uint64, error)
}

// Config configures the console.
type Config struct {
	Line   Line
	Events Events
	// Role returns the role bound to a verified client certificate, false for none.
	Role func(*x509.Certificate) (string, bool)
	// WallDisplay are the addresses whose browsers may view the console without a client
	// certificate (a wall screen beside the line); the console is read-only for them.
	WallDisplay []netip.Prefix
	// Steps are the workflow's steps in order, for each tile's progress.
	Steps []string
	// Poll is how often the event stream is read (default 500 ms).
	Poll time.Duration
	// Logger receives refused requests; nil discards.
	Logger *slog.Logger
}

// eventBatch bounds the events read from the outbox at once.
const eventBatch = 256

// New returns the console's handler. Its routes: / (the line view), /unit?serial=S (a unit),
// /workorders (the work orders), /units/{serial}/traveler (the printable traveler),
// /assets/ (CSS and scripts), the pages' JSON under /api/ (line, me, units/{serial},
// workorders), /api/events (Server-Sent Events) and the actions (POST, see package doc).
func New(cfg Config) (http.Handler, error) {
	if cfg.Line == nil || cfg.Events == nil || cfg.Role == nil {
		return nil, errors.New("console: Line, Events and Role are required")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, fmt.Errorf("console assets: %w", err)
	}
	c := &console{cfg: cfg}
	mux := http.NewServeMux()
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", http.FileServerFS(static)))
	for path, file := range map[string]string{"/{$}": "index.html", "/unit": "unit.html", "/workorders": "workorders.html"} {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) { http.ServeFileFS(w, r, static, file) })
	}
	mux.HandleFunc("GET /api/units/{serial}", c.unit)
	mux.HandleFunc("GET /units/{serial}/traveler", c.travelerPage)
	mux.HandleFunc("GET /api/workorders", c.workOrders)
	mux.HandleFunc("GET /api/line", c.line)
	mux.HandleFunc("GET /api/events", c.events)
	mux.HandleFunc("GET /api/me", c.me)
	for _, a := range actions {
		mux.HandleFunc("POST "+a.path, c.act(a))
	}
	return c.authorize(securityHeaders(mux)), nil
}

type console struct {
	cfg   Config
	cache statsCache
}

// authorize lets through requests whose verified client certificate has a role, and requests
// without a certificate from a wall display's address.
func (c *console) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			if c.wallDisplay(r.RemoteAddr) {
				next.ServeHTTP(w, r)
				return
			}
			c.cfg.Logger.Warn("console request refused: no verified client certificate", "path", r.URL.Path, "remote", r.RemoteAddr)
			http.Error(w, "a client certificate is required", http.StatusUnauthorized)
			return
		}
		leaf := r.TLS.VerifiedChains[0][0]
		if _, ok := c.cfg.Role(leaf); !ok {
			c.cfg.Logger.Warn("console request refused: no role", "path", r.URL.Path, "common_name", leaf.Subject.CommonName)
			http.Error(w, fmt.Sprintf("client certificate %q has no role at this station", leaf.Subject.CommonName), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// wallDisplay reports whether remote (host:port) is a wall display's address.
func (c *console) wallDisplay(remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	addr := ap.Addr().Unmap()
	return slices.ContainsFunc(c.cfg.WallDisplay, func(p netip.Prefix) bool { return p.Contains(addr) })
}

// securityHeaders keeps the page to its own origin: no script, style or connection elsewhere,
// no framing.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// lineView is the JSON of /api/line: protojson of the status and of the units in flight.
type lineView struct {
	Status json.RawMessage   `json:"status"`
	Units  []json.RawMessage `json:"units"`
	// Now is the station's time, for elapsed times without trusting the browser's clock.
	Now time.Time `json:"now"`
	// Steps are the workflow's steps in order.
	Steps []string `json:"steps"`
	// TypicalMS is each step's typical (median) duration in ms, CycleP50MS and CycleP95MS
	// the cycle time's percentiles, over the most recently finished units.
	TypicalMS  map[string]int64 `json:"typical_ms"`
	CycleP50MS int64            `json:"cycle_p50_ms"`
	CycleP95MS int64            `json:"cycle_p95_ms"`
	// Failures are the latest failed units, newest first; Advice says what the operator
	// should do per error code.
	Failures []json.RawMessage `json:"failures"`
	Advice   map[string]string `json:"advice"`
}

func (c *console) line(w http.ResponseWriter, r *http.Request) {
	v, err := c.view(r.Context())
	if err != nil {
		c.cfg.Logger.Error("console line view", "error", err)
		http.Error(w, "the station could not be read; see its log", http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, v)
}

func (c *console) view(ctx context.Context) (*lineView, error) {
	st, err := c.cfg.Line.GetStatus(ctx, &stationv1.GetStatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	v := &lineView{Now: time.Now().UTC(), Steps: c.cfg.Steps, Advice: advice}
	if v.Status, err = marshal(st); err != nil {
		return nil, err
	}
	units, err := c.list(ctx, stationv1.UnitStatus_UNIT_STATUS_RUNNING)
	if err != nil {
		return nil, fmt.Errorf("units in flight: %w", err)
	}
	if v.Units, err = marshalAll(units); err != nil {
		return nil, err
	}
	failed, err := c.list(ctx, stationv1.UnitStatus_UNIT_STATUS_FAILED)
	if err != nil {
		return nil, fmt.Errorf("failed units: %w", err)
	}
	latestFirst(failed)
	if v.Failures, err = marshalAll(failed[:min(len(failed), latestFailures)]); err != nil {
		return nil, err
	}
	s, err := c.stats(ctx)
	if err != nil {
		return nil, fmt.Errorf("step times: %w", err)
	}
	v.TypicalMS, v.CycleP50MS, v.CycleP95MS = s.Typical, s.CycleP50, s.CycleP95
	return v, nil
}

// marshalAll is marshal of every unit; never nil.
func marshalAll(units []*stationv1.Unit) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(units))
	for _, u := range units {
		b, err := marshal(u)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func marshal(m proto.Message) (json.RawMessage, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding %T: %w", m, err)
	}
	return b, nil
}

// event is one Server-Sent Event's data: a station event as the page needs it.
type event struct {
	Time      time.Time `json:"time"`
	Serial    string    `json:"serial,omitempty"`
	Kind      string    `json:"kind"`
	Step      string    `json:"step,omitempty"`
	ErrorCode string    `json:"error_code,omitempty"`
	Message   string    `json:"message,omitempty"`
	// Data are the event's details (e.g. work_order, code, by).
	Data map[string]string `json:"data,omitempty"`
}

// events streams the station's events from now on (or after the Last-Event-ID the browser
// resends when it reconnects), each as an SSE "station" event whose id is its token, until
// the client leaves. A comment line every 15 s keeps idle proxies from closing the stream.
func (c *console) events(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ctx := r.Context()
	token, err := c.start(ctx, r.Header.Get("Last-Event-ID"))
	if err != nil {
		c.cfg.Logger.Error("console events", "error", err)
		http.Error(w, "the station's events could not be read; see its log", http.StatusServiceUnavailable)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 2000\n\n")
	flusher.Flush()
	poll := time.NewTicker(c.cfg.Poll)
	defer poll.Stop()
	keepAlive := time.NewTicker(15 * time.Second)
	defer keepAlive.Stop()
	for {
		evs, next, err := c.cfg.Events.OutboxAfter(ctx, token, eventBatch)
		if err != nil {
			if ctx.Err() == nil {
				c.cfg.Logger.Error("console events", "error", err)
			}
			return
		}
		for _, ev := range evs {
			data, err := json.Marshal(event{Time: ev.Time, Serial: ev.Serial, Kind: ev.Type, Step: ev.Step,
				ErrorCode: cmp.Or(ev.ErrorCode, ev.Data["code"]), Message: ev.Message, Data: ev.Data})
			if err != nil {
				return
			}
			fmt.Fprintf(w, "id: %d\nevent: station\ndata: %s\n\n", ev.Seq, data)
		}
		token = next
		if len(evs) > 0 {
			flusher.Flush()
		}
		if len(evs) == eventBatch {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-keepAlive.C:
			fmt.Fprint(w, ": keep-alive\n\n")
			flusher.Flush()
		case <-poll.C:
		}
	}
}

// start is the token after which a stream begins: the client's Last-Event-ID, else the
// newest event (only what happens from now on).
func (c *console) start(ctx context.Context, lastID string) (uint64, error) {
	if lastID != "" {
		if t, err := strconv.ParseUint(lastID, 10, 64); err == nil {
			return t, nil
		}
	}
	return c.cfg.Events.OutboxHead(ctx)
}
