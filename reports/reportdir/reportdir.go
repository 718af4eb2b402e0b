// Package reportdir keeps a station's reports folder: it follows the store's outbox and writes
// a unit's printable traveler (HTML and PDF) when the unit ends, and a work order's lot report
// (HTML, PDF and CSV) when the work order closes. The files are what reports/printable renders
// from the traveler records; the folder holds:
//
//	travelers/<serial>.html, travelers/<serial>.pdf
//	lots/<work order>.html, lots/<work order>.pdf, lots/<work order>.csv
//	.outbox-token   the outbox position written so far (a restarted station resumes there)
package reportdir

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/devid-station/devid/reports/printable"
	"github.com/devid-station/devid/reports/traveler"
	"github.com/devid-station/devid/station/store"
)

// Folders and files of the reports folder.
const (
	DirTravelers = "travelers"
	DirLots      = "lots"
	tokenFile    = ".outbox-token"
)

// outboxBatch is how many outbox events one read returns.
const outboxBatch = 512

// maxRangeUnits bounds the serials of a work order range that a lot report looks up.
const maxRangeUnits = 1_000_000

// Store is what the writer reads; *store.Store implements it.
type Store interface {
	traveler.Store
	OutboxAfter(ctx context.Context, token uint64, limit int) ([]store.Event, uint64, error)
	OpenIntents(ctx context.Context, serial string) ([]store.StepRecord, error)
	WorkOrder(ctx context.Context, id string) (store.WorkOrder, error)
}

// Writer writes the reports folder. Create it with New; run Run in one goroutine (or call
// Sync). It is not safe for concurrent use, but for Written.
type Writer struct {
	dir string
	st  Store
	log *slog.Logger
	// token is the outbox position written so far; Sync moves it, Written reads it from any
	// goroutine.
	token atomic.Uint64
	// Poll is how often Run reads the outbox.
	Poll time.Duration
}

// New returns a writer of dir (created, mode 0755), resuming at the outbox position its last
// run recorded there.
func New(dir string, st Store, log *slog.Logger) (*Writer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, d := range []string{DirTravelers, DirLots} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("creating the reports folder: %w", err)
		}
	}
	w := &Writer{dir: dir, st: st, log: log, Poll: time.Second}
	b, err := os.ReadFile(filepath.Join(dir, tokenFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("reading the reports folder's outbox position: %w", err)
	default:
		token, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("the reports folder's outbox position %s: %w", filepath.Join(dir, tokenFile), err)
		}
		w.token.Store(token)
	}
	return w, nil
}

// Written is the outbox position whose reports are written: every report the events up to it
// call for is in the folder. It is safe to call while Run runs.
func (w *Writer) Written() uint64 { return w.token.Load() }

// TravelerFiles are the paths of serial's traveler files in dir: HTML and PDF.
func TravelerFiles(dir, serial string) (html, pdf string) {
	base := filepath.Join(dir, DirTravelers, fileName(serial))
	return base + ".html", base + ".pdf"
}

// LotFiles are the paths of a work order's lot report files in dir: HTML, PDF and CSV.
func LotFiles(dir, workOrder string) (html, pdf, csv string) {
	base := filepath.Join(dir, DirLots, fileName(workOrder))
	return base + ".html", base + ".pdf", base + ".csv"
}

// fileName makes a serial or work order id a file name, one to one: serials are already safe
// ([A-Za-z0-9._:-]); any other byte, '%' and a leading dot become %XX.
func fileName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		safe := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == ':' || c == '-' ||
			c == '.' && i > 0
		if safe {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// Run writes reports as the outbox grows, every Poll, until ctx ends; it then writes what the
// outbox holds by then (within final), so that a station that closes leaves its reports.
func (w *Writer) Run(ctx context.Context, final time.Duration) {
	t := time.NewTicker(w.Poll)
	defer t.Stop()
	for {
		if err := w.Sync(ctx); err != nil && ctx.Err() == nil {
			w.log.Error("writing reports", "error", err)
		}
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), final)
			defer cancel()
			if err := w.Sync(fctx); err != nil {
				w.log.Error("writing the last reports", "error", err)
			}
			return
		case <-t.C:
		}
	}
}

// Sync reads the outbox from the last position and writes the reports of the units that
// ended and the work orders that closed. A unit has ended when its status is done, failed or
// aborted and no step of it is open (the complete step ends after the status is set, so the
// step's end triggers the traveler then). A traveler that cannot be built is logged and
// skipped; a file that cannot be written stops Sync, which resumes there next time.
func (w *Writer) Sync(ctx context.Context) error {
	for {
		token := w.token.Load()
		evs, next, err := w.st.OutboxAfter(ctx, token, outboxBatch)
		if err != nil {
			return fmt.Errorf("reading the outbox: %w", err)
		}
		var units, lots []string
		for _, ev := range evs {
			switch {
			case ev.Type == store.EventUnitUpdated && ended(ev.Status), ev.Type == store.EventStepEnded:
				if len(units) == 0 || units[len(units)-1] != ev.Serial {
					units = append(units, ev.Serial)
				}
			case ev.Type == store.EventWorkOrderClosed && ev.Data["work_order"] != "":
				lots = append(lots, ev.Data["work_order"])
			}
		}
		slices.Sort(units)
		if err := w.travelers(ctx, slices.Compact(units)); err != nil {
			return err
		}
		for _, id := range lots {
			if err := w.lot(ctx, id); err != nil {
				return err
			}
		}
		if next != token {
			if err := w.savePosition(next); err != nil {
				return err
			}
			w.token.Store(next)
		}
		if len(evs) < outboxBatch {
			return nil
		}
	}
}

func ended(s store.Status) bool {
	return s == store.StatusDone || s == store.StatusFailed || s == store.StatusAborted
}

func now() time.Time { return time.Now().UTC().Truncate(time.Second) }

// travelers writes the travelers of serials (unit), on as many goroutines as the process has
// cores: a line ends units faster than one goroutine renders them. The first error stops it.
func (w *Writer) travelers(ctx context.Context, serials []string) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan string)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(serials)) {
		wg.Go(func() {
			for serial := range next {
				if err := w.unit(ctx, serial); err != nil {
					cancel(err)
				}
			}
		})
	}
feed:
	for _, serial := range serials {
		select {
		case next <- serial:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

// unit writes serial's traveler if the unit has ended.
func (w *Writer) unit(ctx context.Context, serial string) error {
	u, err := w.st.Unit(ctx, serial)
	if err != nil {
		return fmt.Errorf("reading unit %s: %w", serial, err)
	}
	if !ended(u.Status) {
		return nil
	}
	open, err := w.st.OpenIntents(ctx, serial)
	if err != nil {
		return fmt.Errorf("reading the open steps of %s: %w", serial, err)
	}
	if len(open) > 0 {
		return nil
	}
	rec, err := traveler.Build(ctx, w.st, serial)
	if err != nil {
		w.log.Error("building a traveler for the reports folder", "serial", serial, "error", err)
		return nil
	}
	t := printable.Traveler{Record: rec, Generated: now()}
	if rec.WorkOrder != "" {
		if wo, err := w.st.WorkOrder(ctx, rec.WorkOrder); err == nil {
			t.WorkOrder = &wo
		}
	}
	var htmlDoc, pdfDoc bytes.Buffer
	if err := t.Write(&htmlDoc, &pdfDoc); err != nil {
		return fmt.Errorf("rendering the traveler of %s: %w", serial, err)
	}
	html, pdf := TravelerFiles(w.dir, serial)
	if err := writeAtomic(html, htmlDoc.Bytes()); err != nil {
		return err
	}
	if err := writeAtomic(pdf, pdfDoc.Bytes()); err != nil {
		return err
	}
	w.log.Info("traveler written", "serial", serial, "result", rec.Result, "pdf", pdf)
	return nil
}

// lot writes the lot report of work order id: every unit of its serial set that the store
// knows and that was provisioned under it (or failed before it was authorized). Only a read
// or write failure is an error (Sync retries it); a lot it cannot report is logged.
func (w *Writer) lot(ctx context.Context, id string) error {
	wo, err := w.st.WorkOrder(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		w.log.Error("a closed work order is not in the store: no lot report", "work_order", id)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading work order %s: %w", id, err)
	}
	var recs []*traveler.Record
	add := func(serial string) error {
		rec, err := traveler.Build(ctx, w.st, serial)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return nil
		case err != nil:
			w.log.Error("building a traveler for a lot report", "work_order", id, "serial", serial, "error", err)
			return nil
		}
		if rec.WorkOrder == wo.ID || rec.WorkOrder == "" {
			recs = append(recs, rec)
		}
		return ctx.Err()
	}
	if r := wo.Range; r != nil {
		if r.To-r.From >= maxRangeUnits {
			w.log.Error("a work order's range is more than a lot report covers: no lot report", "work_order", id,
				"serials", r.To-r.From+1, "max", maxRangeUnits)
			return nil
		}
		for n := r.From; n >= r.From && n <= r.To; n++ { // n >= From: stops if n wraps past 2^64-1
			if err := add(fmt.Sprintf("%s%0*d", r.Prefix, r.Width, n)); err != nil {
				return err
			}
		}
	}
	for _, s := range wo.Serials {
		if err := add(s); err != nil {
			return err
		}
	}
	lot := printable.Lot{WorkOrder: &wo, StationID: w.st.StationID(), Records: recs, Generated: now()}
	html, pdf, csv := LotFiles(w.dir, id)
	for _, f := range []struct {
		path   string
		render func(io.Writer) error
	}{{html, lot.HTML}, {pdf, lot.PDF}, {csv, lot.CSV}} {
		if err := render(f.path, f.render); err != nil {
			return err
		}
	}
	w.log.Info("lot report written", "work_order", id, "units", len(recs), "pdf", pdf)
	return nil
}

func render(path string, fn func(io.Writer) error) error {
	var b bytes.Buffer
	if err := fn(&b); err != nil {
		return fmt.Errorf("rendering %s: %w", filepath.Base(path), err)
	}
	return writeAtomic(path, b.Bytes())
}

// savePosition records that the reports of the outbox up to next are written. Their files are
// on disk first (syncFS), so a power loss cannot leave a position newer than a file it stands
// for, which would never be written again; a position lost instead only has the files
// written again. One flush a batch, not one a file: a file's fsync competes with the store's
// commits for the disk, and on a line it slowed every unit.
func (w *Writer) savePosition(next uint64) error {
	if err := syncFS(w.dir); err != nil {
		return fmt.Errorf("syncing the reports folder %s: %w", w.dir, err)
	}
	return writeAtomic(filepath.Join(w.dir, tokenFile), []byte(strconv.FormatUint(next, 10)+"\n"))
}

// writeAtomic writes data to path (mode 0644) through a temporary file and a rename.
func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
