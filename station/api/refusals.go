package api

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/devid-station/devid/station/store"
)

// Stable codes of API calls refused before they reach a method, as the audit trail records
// them (store.AuditActionAPIRefused). Never rename one.
const (
	// RefusedUnauthenticated: no client certificate verified by the TLS handshake.
	RefusedUnauthenticated = "api_unauthenticated"
	// RefusedNoRole: a verified certificate that has no role at this station.
	RefusedNoRole = "api_no_role"
	// RefusedRoleNotAllowed: the caller's role may not call the method.
	RefusedRoleNotAllowed = "api_role_not_allowed"
	// RefusedSummary: the refusals of one window that got no record of their own.
	RefusedSummary = "api_refusals_suppressed"
)

// Bounds of the refusal audit: per window at most refusalBurst refusals get a record of their
// own (each distinct caller, method and code once) and one summary record counts the rest, so
// a flood adds at most refusalBurst+1 records per window to the store.
const (
	defaultRefusalWindow = time.Minute
	refusalBurst         = 16
	refusalTracked       = 1024 // distinct keys counted for the summary; beyond, only a total
	refusalSummaryTop    = 8    // keys named in a summary
)

// refusal is one refused call.
type refusal struct {
	principal, method, code string
	details                 map[string]string // peer, fingerprint, subject
}

type refusalKey struct{ principal, method, code string }

// refusalAuditor records refused calls in the audit trail, bounded per window. It is safe for
// concurrent use.
type refusalAuditor struct {
	store  *store.Store
	log    *slog.Logger
	window time.Duration
	now    func() time.Time

	mu          sync.Mutex
	start       time.Time           // of the current window
	recorded    map[refusalKey]bool // keys with a record of their own in this window
	records     int                 // records of their own in this window
	suppressed  map[refusalKey]int
	suppressedN int // all suppressed refusals of the window, tracked or not
}

func newRefusalAuditor(st *store.Store, log *slog.Logger, window time.Duration, now func() time.Time) *refusalAuditor {
	if window <= 0 {
		window = defaultRefusalWindow
	}
	return &refusalAuditor{store: st, log: log, window: window, now: now, start: now(),
		recorded: map[refusalKey]bool{}, suppressed: map[refusalKey]int{}}
}

// record audits r: at once when the window has room and r's key has no record yet, else as a
// count for the window's summary. A failed write is logged; the refusal stands either way.
func (a *refusalAuditor) record(r refusal) {
	key := refusalKey{r.principal, r.method, r.code}
	a.mu.Lock()
	summary := a.rollLocked()
	own := !a.recorded[key] && a.records < refusalBurst
	if own {
		a.recorded[key] = true
		a.records++
	} else {
		a.suppressedN++
		if _, ok := a.suppressed[key]; ok || len(a.suppressed) < refusalTracked {
			a.suppressed[key]++
		}
	}
	a.mu.Unlock()
	a.write(summary)
	if own {
		d := map[string]string{"method": r.method}
		for k, v := range r.details {
			d[k] = v
		}
		a.write(&refusalRecord{principal: r.principal, code: r.code, details: d})
	}
}

// flush writes the current window's summary, if any, and starts a new window.
func (a *refusalAuditor) flush() {
	a.mu.Lock()
	summary := a.summaryLocked()
	a.mu.Unlock()
	a.write(summary)
}

// rollLocked starts a new window when the current one is over and returns the old window's
// summary (nil when nothing was suppressed).
func (a *refusalAuditor) rollLocked() *refusalRecord {
	if a.now().Sub(a.start) < a.window {
		return nil
	}
	return a.summaryLocked()
}

// summaryLocked returns the summary of the window so far and starts a new one.
func (a *refusalAuditor) summaryLocked() *refusalRecord {
	var rec *refusalRecord
	if a.suppressedN > 0 {
		keys := make([]refusalKey, 0, len(a.suppressed))
		for k := range a.suppressed {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if a.suppressed[keys[i]] != a.suppressed[keys[j]] {
				return a.suppressed[keys[i]] > a.suppressed[keys[j]]
			}
			return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j])
		})
		top := make([]string, 0, refusalSummaryTop)
		for _, k := range keys[:min(len(keys), refusalSummaryTop)] {
			top = append(top, fmt.Sprintf("%s %s %s x%d", k.principal, k.method, k.code, a.suppressed[k]))
		}
		rec = &refusalRecord{principal: "station", code: RefusedSummary, details: map[string]string{
			"suppressed": strconv.Itoa(a.suppressedN), "distinct": strconv.Itoa(len(a.suppressed)),
			"since": a.start.UTC().Format(time.RFC3339), "top": strings.Join(top, "; "),
		}}
	}
	a.start = a.now()
	a.recorded, a.records = map[refusalKey]bool{}, 0
	a.suppressed, a.suppressedN = map[refusalKey]int{}, 0
	return rec
}

type refusalRecord struct {
	principal, code string
	details         map[string]string
}

func (a *refusalAuditor) write(r *refusalRecord) {
	if r == nil {
		return
	}
	ctx, cancel := context.WithTimeout(store.WithPrincipal(context.Background(), r.principal), 10*time.Second)
	defer cancel()
	if err := a.store.AuditAPIRefusal(ctx, r.code, r.details); err != nil {
		a.log.Error("recording a refused API call in the audit trail", "code", r.code, "principal", r.principal, "error", err)
	}
}

// run flushes a summary at the end of every window until stop is closed, then once more.
func (a *refusalAuditor) run(stop <-chan struct{}) {
	t := time.NewTicker(a.window)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			a.mu.Lock()
			summary := a.rollLocked()
			a.mu.Unlock()
			a.write(summary)
		case <-stop:
			a.flush()
			return
		}
	}
}
