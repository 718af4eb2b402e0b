package export

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/devid-station/devid/reports/traveler"
	"github.com/devid-station/devid/station/journal"
	"github.com/devid-station/devid/station/store"
)

// Errors of Build a caller maps to its own codes.
var (
	// ErrSelection reports a malformed selection.
	ErrSelection = errors.New("invalid selection")
	// ErrEmpty reports a selection that holds no unit the station knows.
	ErrEmpty = errors.New("the selection holds no unit")
	// ErrNoKey reports a station without an audit key: it cannot sign a bundle.
	ErrNoKey = errors.New("the station has no audit key to sign with")
)

// Selection says which units a bundle holds: those of WorkOrder, the listed Serials, or those
// with an audit record in [Since, Until). Exactly one of the three is set (Since and Until
// together).
type Selection struct {
	WorkOrder string    `json:"work_order,omitempty"`
	Serials   []string  `json:"serials,omitempty"`
	Since     time.Time `json:"since,omitzero"`
	Until     time.Time `json:"until,omitzero"`
}

func (s Selection) check() error {
	n := 0
	if s.WorkOrder != "" {
		n++
	}
	if len(s.Serials) > 0 {
		n++
	}
	if !s.Since.IsZero() || !s.Until.IsZero() {
		n++
		if s.Since.IsZero() || s.Until.IsZero() || !s.Since.Before(s.Until) {
			return fmt.Errorf("a time range needs since before until: %w", ErrSelection)
		}
	}
	if n != 1 {
		return fmt.Errorf("select by one of work order, serials or time range: %w", ErrSelection)
	}
	return nil
}

// BundleFile is one file of a bundle: its slash-separated path inside the folder and its bytes.
type BundleFile struct {
	Path string
	Data []byte
}

// Bundle is a built export held in memory.
type Bundle struct {
	// Files are the bundle's files, manifest.json last.
	Files []BundleFile
	// Body is what the manifest states.
	Body *Body
}

// Put adds a file: a Bundle is the Sink of Build.
func (b *Bundle) Put(name string, parts ...[]byte) error {
	b.Files = append(b.Files, BundleFile{Path: name, Data: bytes.Join(parts, nil)})
	return nil
}

// Sink receives a bundle's files one at a time as Write builds them, manifest.json last: a
// Bundle in memory, an archive (TarWriter) or the station API's stream. A file comes as its
// parts in order; they are not used again once Put returns.
type Sink interface {
	Put(name string, parts ...[]byte) error
}

// StreamSink is a Sink that also takes a file whose size is known only once its bytes are
// written: Write streams audit.jsonl (about 35 KB a unit) into it as the records are encoded,
// so that neither holds the largest file. A Sink that is not a StreamSink gets audit.jsonl
// whole.
type StreamSink interface {
	Sink
	// Stream begins file name and returns where its bytes go; Close ends it. No other file
	// begins before.
	Stream(name string) (io.WriteCloser, error)
}

// Options are the station facts the manifest states.
type Options struct {
	// Version is the station's software version.
	Version string
}

// unitScan is what one pass over the audit chain learns of a unit.
type unitScan struct {
	first, last uint64
	inRange     bool
	principals  []string
}

// Build assembles the bundle of sel from st in memory (see Write).
func Build(ctx context.Context, st *store.Store, sel Selection, opts Options) (*Bundle, error) {
	b := &Bundle{}
	body, err := Write(ctx, st, sel, opts, b)
	if err != nil {
		return nil, err
	}
	b.Body = body
	return b, nil
}

// unitBatch is how many units Write builds at a time: the files it holds before handing them
// to the sink.
const unitBatch = 256

// Write builds the bundle of sel from st and hands its files to sink as they are built:
// audit.jsonl, each unit's traveler and certificates, then summary.csv,
// revocation_candidates.csv and manifest.json. It first signs the chain head (a checkpoint),
// so that every exported record is covered by a checkpoint; it needs the store's audit key.
// audit.jsonl goes to a StreamSink as its records are encoded: of it Write holds only the
// segments being encoded (some tens of megabytes a core), and of the rest a batch of units,
// the manifest's listing and the tables (some hundreds of bytes a unit). A unit that changes
// while Write runs may get a traveler newer than the exported records, which Verify then
// reports: export units that have ended. It returns what the manifest states.
func Write(ctx context.Context, st *store.Store, sel Selection, opts Options, sink Sink) (*Body, error) {
	if err := sel.check(); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	signer := st.AuditSigner()
	if signer == nil {
		return nil, fmt.Errorf("export: %w", ErrNoKey)
	}
	if _, err := st.Checkpoint(ctx); err != nil {
		return nil, fmt.Errorf("export: signing the chain head: %w", err)
	}
	units, cps, err := scan(ctx, st, sel)
	if err != nil {
		return nil, err
	}
	serials, err := selectUnits(ctx, st, sel, units)
	if err != nil {
		return nil, err
	}
	first, last := ^uint64(0), uint64(0)
	for _, s := range serials {
		first, last = min(first, units[s].first), max(last, units[s].last)
	}
	// Start at the latest checkpoint at or before the first record (or record 1), end at the
	// first checkpoint at or after the last.
	start, end := uint64(1), uint64(0)
	for _, c := range cps {
		if c <= first {
			start = c
		}
		if c >= last && end == 0 {
			end = c
		}
	}
	if end == 0 {
		return nil, fmt.Errorf("export: no signed checkpoint covers audit record %d", last)
	}
	pub, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("export: audit key: %w", err)
	}
	body := &Body{Schema: Schema, StationID: st.StationID(), SoftwareVersion: opts.Version,
		CreatedAt: time.Now().UTC(), Selection: sel, AuditPublicKey: pub}
	put := func(name string, data ...[]byte) error {
		body.Files = append(body.Files, listFile(name, data...))
		if err := sink.Put(name, data...); err != nil {
			return fmt.Errorf("export: %s: %w", name, err)
		}
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	var building sync.WaitGroup
	defer building.Wait() // on every path: no unit is read once Write returns
	defer cancel()
	if err := putAudit(ctx, st, start, end, sink, body); err != nil {
		return nil, err
	}
	// The units are built a batch at a time while the batch before goes to the sink.
	type batch struct {
		parts []*unitPart
		err   error
	}
	batches := make(chan batch, 1)
	building.Add(1)
	go func() {
		defer building.Done()
		defer close(batches)
		wos := &workOrders{}
		for i := 0; i < len(serials); i += unitBatch {
			parts, err := buildUnits(ctx, st, serials[i:min(i+unitBatch, len(serials))], units, wos, opts.Version)
			select {
			case batches <- batch{parts, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	// The tables are encoded a unit at a time: a row's CSV is smaller than its strings.
	var summary, revocations bytes.Buffer
	summaryCSV, revocationCSV := csv.NewWriter(&summary), csv.NewWriter(&revocations)
	_ = summaryCSV.Write(summaryHeader)
	_ = revocationCSV.Write(revocationHeader)
	for b := range batches {
		if b.err != nil {
			return nil, b.err
		}
		for _, p := range b.parts {
			for _, f := range p.files {
				if err := put(f.Path, f.Data); err != nil {
					return nil, err
				}
			}
			body.Units = append(body.Units, p.unit)
			_ = revocationCSV.WriteAll(p.revocations) // WriteAll flushes: errors show in Error
			_ = summaryCSV.Write(p.row)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	for _, t := range []struct {
		name string
		w    *csv.Writer
		buf  *bytes.Buffer
	}{{SummaryFile, summaryCSV, &summary}, {RevocationFile, revocationCSV, &revocations}} {
		t.w.Flush()
		if err := t.w.Error(); err != nil {
			return nil, fmt.Errorf("export: %s: %w", t.name, err)
		}
		if err := put(t.name, t.buf.Bytes()); err != nil {
			return nil, err
		}
	}
	data, err := signManifest(body, signer)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	if err := sink.Put(ManifestFile, data); err != nil {
		return nil, fmt.Errorf("export: %s: %w", ManifestFile, err)
	}
	return body, nil
}

// putAudit writes audit.jsonl, the records start to end, to sink (as a stream to a
// StreamSink, whole to another) and states it in body: the records' range and the file.
func putAudit(ctx context.Context, st *store.Store, start, end uint64, sink Sink, body *Body) error {
	var w io.WriteCloser
	var buf *bytes.Buffer
	if ss, ok := sink.(StreamSink); ok {
		var err error
		if w, err = ss.Stream(AuditFile); err != nil {
			return fmt.Errorf("export: %s: %w", AuditFile, err)
		}
	} else {
		buf = &bytes.Buffer{}
		w = nopCloser{buf}
	}
	r, listed, err := writeAudit(ctx, st, start, end, w)
	if err != nil {
		return err
	}
	if err = w.Close(); err == nil && buf != nil {
		err = sink.Put(AuditFile, buf.Bytes())
	}
	if err != nil {
		return fmt.Errorf("export: %s: %w", AuditFile, err)
	}
	body.Audit = r
	body.Files = append(body.Files, listed)
	return nil
}

// nopCloser is a WriteCloser whose Close does nothing.
type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func listFile(p string, parts ...[]byte) File {
	h := sha256.New()
	size := 0
	for _, b := range parts {
		h.Write(b)
		size += len(b)
	}
	return File{Path: p, SHA256: hex.EncodeToString(h.Sum(nil)), Size: size}
}

// unitPart is what one unit adds to a bundle.
type unitPart struct {
	files       []BundleFile
	unit        Unit
	row         []string
	revocations [][]string
}

func (p *unitPart) add(name string, data []byte) {
	p.files = append(p.files, BundleFile{Path: name, Data: data})
}

// buildUnits builds the parts of serials, in order, on every core: each unit only reads the
// store.
func buildUnits(ctx context.Context, st *store.Store, serials []string, units map[string]*unitScan, wos *workOrders, version string) ([]*unitPart, error) {
	parts := make([]*unitPart, len(serials))
	errs := make([]error, len(serials))
	parallel(len(serials), runtime.GOMAXPROCS(0), func(i int) {
		r := &unitReader{Store: st, wos: wos}
		parts[i], errs[i] = buildUnit(ctx, r, serials[i], units[serials[i]], version)
	})
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("export: unit %s: %w", serials[i], err)
		}
	}
	return parts, nil
}

// auditSegment is how many audit records one worker reads at a time: the chain is read and
// encoded on every core, a segment each. (A variable: tests split small chains.)
var auditSegment uint64 = 16384

// inSegments splits records first..last into segments of auditSegment records and calls fn
// for each on every core, with the segment's number (from 0) and its first and last record.
func inSegments(first, last uint64, fn func(seg int, lo, hi uint64) error) error {
	if last < first {
		return nil
	}
	n := int((last-first)/auditSegment) + 1
	errs := make([]error, n)
	parallel(n, runtime.GOMAXPROCS(0), func(i int) {
		lo := first + uint64(i)*auditSegment
		errs[i] = fn(i, lo, min(last, lo+auditSegment-1))
	})
	return errors.Join(errs...)
}

// eachInSegment reads audit records lo..hi in order, a page at a time, calling fn with each
// as store.AuditEach reads it: the record is fn's only until fn returns.
func eachInSegment(ctx context.Context, st *store.Store, lo, hi uint64, fn func(a *store.AuditEvent) error) error {
	for after := lo - 1; after < hi; {
		next, stopped := after+1, error(nil)
		err := st.AuditEach(ctx, after, int(min(4096, hi-after)), func(a *store.AuditEvent) error {
			if a.Seq != next {
				stopped = fmt.Errorf("export: audit record %d is missing", next)
			} else if stopped = fn(a); stopped == nil {
				next++
			}
			return stopped
		})
		switch {
		case stopped != nil:
			return stopped
		case err != nil:
			return fmt.Errorf("export: reading the audit chain: %w", err)
		case next == after+1:
			return fmt.Errorf("export: audit record %d is missing", next)
		}
		after = next - 1
	}
	return nil
}

// readBriefSegments reads the store.AuditBrief of audit records first..last on every core, a
// segment of auditSegment records at a time, calling fn with the segment's number (from 0)
// and its records in order, a page at a time (fn is never called for one segment on two
// goroutines at once).
func readBriefSegments(ctx context.Context, st *store.Store, first, last uint64, fn func(seg int, recs []store.AuditBrief) error) error {
	return inSegments(first, last, func(seg int, lo, hi uint64) error {
		for after := lo - 1; after < hi; {
			recs, err := st.AuditBriefsAfter(ctx, after, int(min(4096, hi-after)))
			if err != nil {
				return fmt.Errorf("export: reading the audit chain: %w", err)
			}
			if len(recs) == 0 || recs[0].Seq != after+1 {
				return fmt.Errorf("export: audit record %d is missing", after+1)
			}
			k := 0
			for k < len(recs) && recs[k].Seq <= hi {
				k++
			}
			if err := fn(seg, recs[:k]); err != nil {
				return err
			}
			after = recs[k-1].Seq
		}
		return nil
	})
}

// scan reads the whole chain once, up to the head: each unit's first and last record, whether
// one falls in the selection's time range, the principals other than the station, and the
// checkpoints.
func scan(ctx context.Context, st *store.Store, sel Selection) (map[string]*unitScan, []uint64, error) {
	head, err := st.ChainHead(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("export: reading the chain head: %w", err)
	}
	type part struct {
		units  map[string]*unitScan
		serial []string // in the order of their first record
		cps    []uint64
	}
	parts := make([]part, (head.Seq+auditSegment-1)/auditSegment)
	err = readBriefSegments(ctx, st, 1, head.Seq, func(seg int, recs []store.AuditBrief) error {
		p := &parts[seg]
		if p.units == nil {
			p.units = map[string]*unitScan{}
		}
		for i := range recs {
			a := &recs[i]
			if a.Action == store.AuditActionCheckpoint {
				p.cps = append(p.cps, a.Seq)
			}
			if a.Serial == "" {
				continue
			}
			u := p.units[a.Serial]
			if u == nil {
				u = &unitScan{first: a.Seq}
				p.units[a.Serial] = u
				p.serial = append(p.serial, a.Serial)
			}
			u.last = a.Seq
			if !a.Time.Before(sel.Since) && a.Time.Before(sel.Until) {
				u.inRange = true
			}
			if a.Principal != "" && a.Principal != store.PrincipalStation && !slices.Contains(u.principals, a.Principal) {
				u.principals = append(u.principals, a.Principal)
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	// The segments in order: a unit's first record is in the first segment naming it.
	units := map[string]*unitScan{}
	var cps []uint64
	for _, p := range parts {
		cps = append(cps, p.cps...)
		for _, s := range p.serial {
			u, seen := units[s], p.units[s]
			if u == nil {
				units[s] = seen
				continue
			}
			u.last, u.inRange = seen.last, u.inRange || seen.inRange
			for _, pr := range seen.principals {
				if !slices.Contains(u.principals, pr) {
					u.principals = append(u.principals, pr)
				}
			}
		}
	}
	return units, cps, nil
}

// selectUnits returns the selected serials, sorted. A work order's units are listed from the
// store's listing rows, without decoding their states: the units are read as they are built,
// and an export holds no state of a unit it is not building.
func selectUnits(ctx context.Context, st *store.Store, sel Selection, units map[string]*unitScan) ([]string, error) {
	var out []string
	switch {
	case len(sel.Serials) > 0:
		for _, s := range sel.Serials {
			if units[s] == nil {
				return nil, fmt.Errorf("export: unit %q: %w", s, store.ErrNotFound)
			}
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	case sel.WorkOrder != "":
		if _, err := st.WorkOrder(ctx, sel.WorkOrder); err != nil {
			return nil, fmt.Errorf("export: work order %q: %w", sel.WorkOrder, err)
		}
		for after, more := "", true; more; {
			page, m, err := st.ListUnits(ctx, store.UnitQuery{WorkOrder: sel.WorkOrder, After: after, Limit: 1024, Brief: true})
			if err != nil {
				return nil, fmt.Errorf("export: listing work order %q: %w", sel.WorkOrder, err)
			}
			more = m && len(page) > 0
			for i := range page {
				u := &page[i].Unit
				after = u.Serial
				// Only units with audit records: the bundle proves nothing of the others.
				if units[u.Serial] != nil && u.WorkOrderID == sel.WorkOrder {
					out = append(out, u.Serial)
				}
			}
		}
	default:
		for s, u := range units {
			if u.inRange {
				out = append(out, s)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("export: %w", ErrEmpty)
	}
	sort.Strings(out)
	return out, nil
}

// writeAudit writes audit.jsonl with records start..end to w and returns its range and its
// listing (SHA-256 and size). The chain is read and encoded on every core, a segment each; a
// segment's lines are written in order: those of the segment whose turn it is as its chunks
// fill, those of a later one when the segments before it are written. So it holds at most a
// segment's lines a core (about 25 MB with today's records), however long the range.
func writeAudit(ctx context.Context, st *store.Store, start, end uint64, w io.Writer) (Range, File, error) {
	r := Range{First: start, Last: end}
	n := int((end-start)/auditSegment) + 1
	// turns[i] is closed when segments before i are written (or failed): segment i's turn.
	turns := make([]chan struct{}, n+1)
	for i := range turns {
		turns[i] = make(chan struct{})
	}
	close(turns[0])
	cps := make([][]CheckpointEntry, n)
	// Written only by the segment whose turn it is.
	h := sha256.New()
	size := 0
	var werr error
	write := func(b []byte) {
		if werr != nil || len(b) == 0 {
			return
		}
		h.Write(b)
		size += len(b)
		if _, err := w.Write(b); err != nil {
			werr = fmt.Errorf("export: writing %s: %w", AuditFile, err)
		}
	}
	err := inSegments(start, end, func(seg int, lo, hi uint64) error {
		defer close(turns[seg+1])
		var bufs [][]byte // full chunks not yet written, then buf
		var buf []byte
		mine := false // the segments before are written: chunks go out as they fill
		flush := func() {
			for _, b := range bufs {
				write(b)
				putChunk(b)
			}
			bufs = bufs[:0]
		}
		// Each record is encoded as the store reads it (store.AuditEach: no record is built
		// anew), and nothing of it is kept but copies.
		err := eachInSegment(ctx, st, lo, hi, func(a *store.AuditEvent) error {
			// A segment's lines go into chunks of auditChunk bytes: one buffer a segment
			// grew by doubling, copying its tens of megabytes over and over (a sixth of the
			// export's CPU).
			if cap(buf)-len(buf) < auditChunkSlack {
				if len(buf) > 0 {
					bufs = append(bufs, buf)
					if !mine {
						select {
						case <-turns[seg]:
							mine = true
						default:
						}
					}
					if mine {
						flush()
					}
				}
				buf = getChunk()
			}
			if a.Seq == start {
				r.Prev = store.ChainHead{Seq: start - 1, Hash: bytes.Clone(a.PrevHash)}
			}
			if a.Seq == end {
				r.Head = store.ChainHead{Seq: a.Seq, Hash: bytes.Clone(a.Hash)}
			}
			if a.Action == store.AuditActionCheckpoint {
				c, err := checkpointEntry(a)
				if err != nil {
					return fmt.Errorf("export: audit record %d: %w", a.Seq, err)
				}
				cps[seg] = append(cps[seg], c)
			}
			line, err := appendAuditJSON(buf, a)
			if err != nil {
				return fmt.Errorf("export: encoding audit record %d: %w", a.Seq, err)
			}
			buf = append(line, '\n')
			return nil
		})
		if len(buf) > 0 {
			bufs = append(bufs, buf)
		}
		<-turns[seg]
		if err != nil {
			werr = cmp.Or(werr, err) // what follows is not written
		}
		flush()
		return err
	})
	if err != nil {
		return r, File{}, err
	}
	if werr != nil {
		return r, File{}, werr
	}
	for _, c := range cps {
		r.Checkpoints = append(r.Checkpoints, c...)
	}
	return r, File{Path: AuditFile, SHA256: hex.EncodeToString(h.Sum(nil)), Size: size}, nil
}

// chunks recycles audit.jsonl's chunks of auditChunk bytes once written.
var chunks sync.Pool

// getChunk returns an empty chunk of auditChunk bytes' capacity.
func getChunk() []byte {
	if b, ok := chunks.Get().(*[]byte); ok && cap(*b) == auditChunk {
		return (*b)[:0]
	}
	return make([]byte, 0, auditChunk)
}

// putChunk recycles a written chunk (not one that grew past auditChunk for a long line).
func putChunk(b []byte) {
	if cap(b) == auditChunk {
		chunks.Put(&b)
	}
}

// audit.jsonl is encoded into chunks of auditChunk bytes; a chunk with less than
// auditChunkSlack bytes free is full (a longer line makes its chunk grow). (Variables: tests
// make lines cross chunks.)
var (
	auditChunk      = 1 << 20
	auditChunkSlack = 16 << 10
)

func checkpointEntry(a *store.AuditEvent) (CheckpointEntry, error) {
	seq, err := strconv.ParseUint(a.Details["signed_seq"], 10, 64)
	if err != nil {
		return CheckpointEntry{}, fmt.Errorf("checkpoint signed_seq: %w", err)
	}
	h, err := hex.DecodeString(a.Details["signed_hash"])
	if err != nil {
		return CheckpointEntry{}, fmt.Errorf("checkpoint signed_hash: %w", err)
	}
	return CheckpointEntry{Record: a.Seq, Seq: seq, Hash: h}, nil
}

// summaryHeader names summary.csv's columns.
var summaryHeader = []string{"serial", "work_order", "profile", "ek_fingerprint", "ek_algorithm",
	"tpm_manufacturer", "tpm_vendor", "tpm_firmware", "idevid_serial", "idevid_sha256", "ldevid_serial",
	"ldevid_sha256", "result", "error_code", "attempts", "started_at", "ended_at", "cycle_time_seconds",
	"work_order_created_by", "principals", "station_id", "station_version", "agent_version"}

// revocationHeader names revocation_candidates.csv's columns. A row is a certificate
// (kind "certificate", sha256 set: superseded or refused) or a key a CA may have certified
// without the station receiving it (kind "key", public_key_sha256 set: possibly issued).
var revocationHeader = []string{"serial", "kind", "role", "ca", "sha256", "public_key_sha256", "status", "reason"}

// revocationRows lists rec's revocation candidates as rows of RevocationFile.
func revocationRows(rec *traveler.Record) [][]string {
	var rows [][]string
	for _, c := range rec.RevocationCandidates {
		rows = append(rows, []string{rec.Serial, "certificate", c.Role, c.Issuer, c.SHA256, "", c.Status, c.Reason})
	}
	for _, p := range rec.PossiblyIssued {
		rows = append(rows, []string{rec.Serial, "key", p.Role, p.CA, "", p.PublicKeySHA256, "possibly_issued",
			"answer lost between " + p.From.UTC().Format(time.RFC3339) + " and " + p.To.UTC().Format(time.RFC3339)})
	}
	return rows
}

// buildUnit returns serial's traveler and certificates and its summary row.
func buildUnit(ctx context.Context, st *unitReader, serial string, sc *unitScan, version string) (*unitPart, error) {
	rec, err := traveler.Build(ctx, st, serial)
	if err != nil {
		return nil, err
	}
	data, err := rec.JSON()
	if err != nil {
		return nil, err
	}
	b := &unitPart{revocations: revocationRows(rec)}
	u := Unit{Serial: serial, Traveler: path.Join(travelerDir, serial+".json")}
	b.add(u.Traveler, data)
	chains, err := enrollChains(ctx, st, serial)
	if err != nil {
		return nil, err
	}
	for _, c := range rec.Certificates {
		cr, err := st.CertificateBySHA256(ctx, c.SHA256)
		if err != nil {
			return nil, fmt.Errorf("certificate %s: %w", c.SHA256, err)
		}
		name := path.Join(certDir, serial, strings.ToLower(c.Role)+"-"+c.SHA256+".pem")
		b.add(name, pemChain(cr.DER, chains[c.SHA256]))
		u.Certificates = append(u.Certificates, name)
	}
	if rec.EK != nil && rec.EK.SHA256 != "" {
		ek := pemChain(rec.EK.DER, rec.EK.Chain)
		if ek == nil {
			// Not in the latest verify_ek's report: in an earlier one.
			if ek, err = ekCertificate(ctx, st, serial, rec.EK.SHA256); err != nil {
				return nil, err
			}
		}
		if ek != nil {
			u.EKCertificate = path.Join(certDir, serial, ekFilePrefix+rec.EK.SHA256+".pem")
			b.add(u.EKCertificate, ek)
		}
	}
	b.unit = u

	row := map[string]string{"serial": serial, "work_order": rec.WorkOrder, "profile": rec.Profile,
		"result": rec.Result, "error_code": rec.ErrorCode, "attempts": strconv.FormatUint(rec.Attempts, 10),
		"work_order_created_by": rec.WorkOrderCreatedBy, "principals": strings.Join(sc.principals, ";"),
		"station_id": rec.StationID, "station_version": version}
	if rec.EK != nil {
		row["ek_fingerprint"], row["ek_algorithm"] = rec.EK.Fingerprint, rec.EK.Algorithm
	}
	if t := rec.TPM; t != nil {
		row["tpm_manufacturer"], row["tpm_vendor"], row["tpm_firmware"] = t.Manufacturer, t.VendorString, t.FirmwareVersion
		row["agent_version"] = t.AgentVersion
	}
	if c := rec.IDevID; c != nil {
		row["idevid_serial"], row["idevid_sha256"] = c.SerialNumber, c.SHA256
	}
	if c := rec.LDevID; c != nil {
		row["ldevid_serial"], row["ldevid_sha256"] = c.SerialNumber, c.SHA256
	}
	if rec.StartedAt != nil {
		row["started_at"] = rec.StartedAt.UTC().Format(time.RFC3339Nano)
	}
	if rec.EndedAt != nil {
		row["ended_at"] = rec.EndedAt.UTC().Format(time.RFC3339Nano)
		row["cycle_time_seconds"] = strconv.FormatFloat(rec.CycleTimeSeconds, 'f', 3, 64)
	}
	b.row = make([]string, len(summaryHeader))
	for i, h := range summaryHeader {
		b.row[i] = row[h]
	}
	return b, nil
}

// enrollChains maps each certificate an enroll step returned (by SHA-256) to the chain the CA
// sent with it. The enroll results are the only record of the chains.
func enrollChains(ctx context.Context, st *unitReader, serial string) (map[string][][]byte, error) {
	recs, err := st.StepRecords(ctx, serial)
	if err != nil {
		return nil, err
	}
	out := map[string][][]byte{}
	for _, r := range recs {
		if (r.Step != journal.StepIDevIDEnroll && r.Step != journal.StepIAKEnroll && r.Step != journal.StepLDevIDEnroll) || !r.Ended || r.ErrorCode != "" {
			continue
		}
		var er journal.EnrollResult
		if err := json.Unmarshal(r.Result, &er); err != nil {
			return nil, fmt.Errorf("decoding the %s result: %w", r.Step, err)
		}
		h := sha256.Sum256(er.Cert)
		out[hex.EncodeToString(h[:])] = er.Chain
	}
	return out, nil
}

// ekCertificate returns the PEM of the unit's verified EK certificate (hex SHA-256 sha), then
// the chain certificates its agent sent with it, from the identify report verify_ek's intent
// keeps; nil when no report holds it.
func ekCertificate(ctx context.Context, st *unitReader, serial, sha string) ([]byte, error) {
	recs, err := st.StepRecords(ctx, serial)
	if err != nil {
		return nil, err
	}
	for i := len(recs) - 1; i >= 0; i-- {
		r := &recs[i]
		if r.Step != journal.StepVerifyEK {
			continue
		}
		var intent journal.Intent
		if err := json.Unmarshal(r.Intent, &intent); err != nil {
			return nil, fmt.Errorf("decoding the %s intent: %w", r.Step, err)
		}
		if intent.Identify == "" {
			continue
		}
		// Only the EK certificates and the chain of the report (journal.Identify's stored form:
		// "eks" holds EndorsementKey messages, whose bytes protojson and encoding/json both
		// write in standard base64); the SHA-256 proves the right bytes were found.
		var id struct {
			EKs []struct {
				Certificate []byte `json:"certificate"`
			} `json:"eks"`
			Chain [][]byte `json:"chain"`
		}
		if err := json.Unmarshal([]byte(intent.Identify), &id); err != nil {
			return nil, fmt.Errorf("decoding the identify report: %w", err)
		}
		for _, k := range id.EKs {
			if der := k.Certificate; len(der) > 0 && sha256Hex(der) == sha {
				return pemChain(der, id.Chain), nil
			}
		}
	}
	return nil, nil
}

// pemChain returns der, then chain, as PEM certificates; nil without der.
func pemChain(der []byte, chain [][]byte) []byte {
	if len(der) == 0 {
		return nil
	}
	var p bytes.Buffer
	for _, c := range append([][]byte{der}, chain...) {
		_ = pem.Encode(&p, &pem.Block{Type: "CERTIFICATE", Bytes: c})
	}
	return p.Bytes()
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// WriteDir writes the bundle's files under dir, which must not exist yet or be empty. Files
// are 0644: a bundle holds no secret.
func (b *Bundle) WriteDir(dir string) error {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("export: %s is not empty", dir)
	}
	// On several goroutines: most of the time is system calls.
	errs := make([]error, len(b.Files))
	parallel(len(b.Files), 2*runtime.GOMAXPROCS(0), func(i int) {
		errs[i] = WriteFile(dir, b.Files[i].Path, b.Files[i].Data)
	})
	return errors.Join(errs...)
}

// parallel calls fn(i) for every i in [0, n) on workers goroutines (at least one) and waits
// for them.
func parallel(n, workers int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(1, workers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// WriteFile writes one bundle file under dir, refusing a path that leaves dir.
func WriteFile(dir, name string, data []byte) error {
	p, err := localPath(dir, name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

// CreateFile creates one bundle file under dir (0644), refusing a path that leaves dir, for
// its bytes to be written as they come: the caller closes it.
func CreateFile(dir, name string) (*os.File, error) {
	p, err := localPath(dir, name)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	return f, nil
}

// localPath returns where the bundle file name goes under dir, refusing a path that leaves dir.
func localPath(dir, name string) (string, error) {
	clean := path.Clean(name)
	if !filepath.IsLocal(clean) || clean != name {
		return "", fmt.Errorf("export: file name %q is not a local path", name)
	}
	return filepath.Join(dir, filepath.FromSlash(clean)), nil
}
