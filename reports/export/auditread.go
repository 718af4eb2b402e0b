package export

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"time"

	"github.com/devid-station/devid/station/store"
)

// auditRead is what Verify learns from audit.jsonl: whether it decodes and its chain
// verifies, and of each unit the facts its checks read.
type auditRead struct {
	// decodeErr says why the file does not decode (missing, or its first line at fault); the
	// chain is then not reported on.
	decodeErr error
	// chainOK says the records verify as checkChain verifies them; chainProbs say why not.
	chainOK    bool
	chainProbs []string
	// units holds the facts of each unit the manifest names (unitIndex), in the manifest's
	// order: a few small values a unit, whatever the number of its records; a record of a
	// unit the manifest does not name is checked in the chain and not kept.
	units []unitFacts
	index map[string]int // unitIndex
}

// unit returns the facts of the unit serial the manifest names.
func (a *auditRead) unit(serial string) *unitFacts {
	return &a.units[a.index[serial]]
}

// unitIndex maps each serial the manifest names to its place in the manifest's units (a serial
// listed twice: its first place), the place of its facts in auditRead.units and of its row of
// summary.csv. Its keys are the manifest's strings.
func unitIndex(body *Body) map[string]int {
	idx := make(map[string]int, len(body.Units))
	for i, u := range body.Units {
		if _, ok := idx[u.Serial]; !ok {
			idx[u.Serial] = i
		}
	}
	return idx
}

// unitFacts is what the unit checks (checkUnit, checkCert, checkEK) read of one unit's audit
// records, taken as the records come, so that none of them is kept: most of a unit's records
// (22 a unit as the workflow writes them) would hold the verifier's memory in proportion to
// the chain.
type unitFacts struct {
	// seen says the unit has records.
	seen bool
	// status is the status of the unit's last successful update, in record statusSeq;
	// hasStatus says there is one.
	hasStatus bool
	status    string
	statusSeq uint64
	// certs are the unit's certificate records with one fingerprint, the last of each.
	certs []certFact
	// eks are the unit's successful EK bindings with one fingerprint, the last of each.
	eks []ekFact
}

// certFact is a certificate record of a unit: the certificate's SHA-256 (the record's one
// fingerprint), its role and serial number (details role and serial_hex), the record's sequence
// number and time.
type certFact struct {
	sha, role, serialHex string
	seq                  uint64
	time                 time.Time
}

// ekFact is an EK binding of a unit: the key's fingerprint and the record's time.
type ekFact struct {
	fp   string
	time time.Time
}

// add takes what the unit checks read of a, one of the unit's records, in the chain's order.
func (f *unitFacts) add(a *store.AuditEvent) {
	f.seen = true
	switch {
	case a.Action == store.EventUnitUpdated && a.Result == store.ResultOK:
		f.hasStatus, f.status, f.statusSeq = true, internStatus(a.Details["status"]), a.Seq
	case a.Action == store.EventCertRecorded && len(a.Fingerprints) == 1:
		c := certFact{sha: a.Fingerprints[0], role: internRole(a.Details["role"]), serialHex: a.Details["serial_hex"],
			seq: a.Seq, time: a.Time}
		if i := slices.IndexFunc(f.certs, func(o certFact) bool { return o.sha == c.sha }); i >= 0 {
			f.certs[i] = c
		} else {
			f.certs = append(f.certs, c)
		}
	case a.Action == store.EventEKBound && a.Result == store.ResultOK && len(a.Fingerprints) == 1:
		e := ekFact{fp: a.Fingerprints[0], time: a.Time}
		if i := slices.IndexFunc(f.eks, func(o ekFact) bool { return o.fp == e.fp }); i >= 0 {
			f.eks[i] = e
		} else {
			f.eks = append(f.eks, e)
		}
	}
}

// cert returns the unit's certificate record of SHA-256 sha, nil when there is none.
func (f *unitFacts) cert(sha string) *certFact {
	if i := slices.IndexFunc(f.certs, func(c certFact) bool { return c.sha == sha }); i >= 0 {
		return &f.certs[i]
	}
	return nil
}

// ekBound returns the unit's successful binding of the EK fingerprint fp, nil when there is
// none.
func (f *unitFacts) ekBound(fp string) *ekFact {
	if i := slices.IndexFunc(f.eks, func(e ekFact) bool { return e.fp == fp }); i >= 0 {
		return &f.eks[i]
	}
	return nil
}

// internRole returns the store's string for a certificate role it knows (one copy for every
// unit), else s.
func internRole(s string) string {
	for _, r := range []store.Role{store.RoleIDevID, store.RoleLDevID, store.RoleIAK} {
		if s == string(r) {
			return string(r)
		}
	}
	return s
}

// internStatus returns the store's string for a unit status it knows, else s.
func internStatus(s string) string {
	for _, st := range []store.Status{store.StatusDone, store.StatusFailed, store.StatusRunning, store.StatusPending,
		store.StatusAborted, store.StatusHold, store.StatusScrapped} {
		if s == string(st) {
			return string(st)
		}
	}
	return s
}

// auditReadBatch is how many lines readAudit decodes before checking them and letting their
// digests go. (A variable: tests make the chain cross batches.)
var auditReadBatch = 2048

// readAudit decodes audit.jsonl (data, nil when the bundle lacks it) with readAuditFrom.
func readAudit(data []byte, body *Body, keySHA []byte) auditRead {
	if data == nil {
		return auditRead{decodeErr: fmt.Errorf("%s: missing", AuditFile)}
	}
	return readAuditFrom(bytes.NewReader(data), body, keySHA)
}

// readAuditFrom reads audit.jsonl from r a batch of lines at a time, decodes each batch on
// every core, and checks each batch's records against the chain while the next batch is read
// and decoded, keeping of each unit's records what the unit checks read (unitFacts). It reports what decoding the
// whole file (decodeAuditFile) then checking it (checkChain) report, in the same words: a
// decoding error for the first line at fault, and the chain's problems only when every line
// decodes. Lines and decoded records are held a batch or two at a time, not the whole file's
// (at 100k units, gigabytes). It stops reading at the first line at fault.
func readAuditFrom(r io.Reader, body *Body, keySHA []byte) auditRead {
	lr := &lineReader{r: r}
	batches := make(chan auditBatch, 1)
	done := make(chan auditRead, 1)
	go func() {
		done <- checkAuditBatches(batches, body, keySHA)
	}()
	var decodeErr error
	hint := 0
	for first, eof := 0, false; !eof && decodeErr == nil; {
		var lines [][]byte
		if lines, eof, decodeErr = lr.next(auditReadBatch, hint); decodeErr != nil {
			decodeErr = fmt.Errorf("%s: %w", AuditFile, decodeErr)
			break
		}
		if len(lines) == 0 {
			break
		}
		hint = 0 // the next batch is about as long as this one
		for _, l := range lines {
			hint += len(l) + 1
		}
		var recs []store.AuditEvent
		if recs, decodeErr = decodeAuditLines(lines, first); decodeErr == nil {
			batches <- auditBatch{first, recs}
		}
		first += len(lines)
	}
	close(batches)
	out := <-done
	if decodeErr != nil {
		return auditRead{decodeErr: decodeErr}
	}
	return out
}

// lineReader reads audit.jsonl a batch of lines at a time, each batch into one new buffer
// read into from the file directly (not copied from another buffer).
type lineReader struct {
	r    io.Reader
	rest []byte // read past the end of the last batch
	eof  bool   // r is at its end
}

// lineRead is the most lineReader reads at once: what it read past a batch's end is copied to
// the next batch.
const lineRead = 256 << 10

// next reads up to n lines into one new buffer of at least hint bytes, without their newlines
// (auditLines' lines: the last line may lack one); eof says the file is at its end.
func (lr *lineReader) next(n, hint int) (lines [][]byte, eof bool, err error) {
	// Room for a batch a little longer than the last: growing the buffer copies it.
	buf := make([]byte, 0, max(hint+hint/8, len(lr.rest)+lineRead))
	buf = append(buf, lr.rest...)
	lr.rest = nil
	ends := make([]int, 0, min(n, 1<<16))
	start, scan := 0, 0 // where the current line starts; where its newline is looked for
	for len(ends) < n {
		if i := bytes.IndexByte(buf[scan:], '\n'); i >= 0 {
			ends = append(ends, scan+i)
			start, scan = scan+i+1, scan+i+1
			continue
		}
		scan = len(buf)
		if lr.eof {
			if len(buf) > start {
				ends = append(ends, len(buf))
				start = len(buf)
			}
			break
		}
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, max(lineRead, len(buf)))
		}
		m, err := lr.r.Read(buf[len(buf):min(cap(buf), len(buf)+lineRead)])
		buf = buf[:len(buf)+m]
		switch {
		case errors.Is(err, io.EOF):
			lr.eof = true
		case err != nil:
			return nil, false, err
		}
	}
	lr.rest = bytes.Clone(buf[start:])
	lines = make([][]byte, len(ends))
	start = 0
	for i, e := range ends {
		// Capped: a line decoded in place never runs into the next.
		lines[i] = buf[start:e:e]
		start = e + 1
	}
	return lines, lr.eof && len(lr.rest) == 0, nil
}

// auditBatch is a batch of decoded lines of audit.jsonl.
type auditBatch struct {
	first int // the index of its first line
	recs  []store.AuditEvent
}

// checkAuditBatches checks the records of audit.jsonl as they come, a batch at a time in
// order, with checkChain's checks and words, and takes the facts of each unit the manifest
// names (unitFacts).
func checkAuditBatches(batches <-chan auditBatch, body *Body, keySHA []byte) auditRead {
	idx := unitIndex(body)
	out := auditRead{units: make([]unitFacts, len(body.Units)), index: idx}
	fail := func(format string, args ...any) {
		out.chainProbs = append(out.chainProbs, fmt.Sprintf(format, args...))
	}
	r := body.Audit
	prev := r.Prev
	if r.First == 1 {
		prev = store.ChainHead{}
	}
	broken := false // a problem is reported: the records are no longer checked
	var cps []store.Checkpoint
	var last store.AuditEvent
	n := 0 // lines
	for b := range batches {
		recs := b.recs
		n += len(recs)
		if len(recs) > 0 {
			last = recs[len(recs)-1]
		}
		if b.first == 0 && len(recs) > 0 && !broken {
			switch {
			case recs[0].Seq != r.First || !bytes.Equal(recs[0].PrevHash, r.Prev.Hash) || r.Prev.Seq+1 != r.First:
				fail("%s record %d: the range does not start at record %d after the manifest's previous hash", AuditFile, recs[0].Seq, r.First)
				broken = true
			case r.First > 1 && recs[0].Action != store.AuditActionCheckpoint:
				fail("%s record %d: the range does not start with a signed checkpoint", AuditFile, recs[0].Seq)
				broken = true
			}
		}
		if !broken {
			head, found, err := store.VerifyRecords(recs, prev, keySHA)
			cps = append(cps, found...)
			prev = head
			if err != nil {
				chainFailure(fail, err)
				broken = true
			}
		}
		// The unit checks read a few facts of a unit's records: the batch can go.
		for i := range recs {
			a := &recs[i]
			if a.Serial == "" {
				continue
			}
			if u, ok := idx[a.Serial]; ok {
				out.units[u].add(a)
			}
		}
	}
	switch {
	case broken:
	case n == 0:
		fail("%s: no records", AuditFile)
	case prev.Seq != r.Last || !bytes.Equal(prev.Hash, r.Head.Hash):
		fail("%s record %d: the records end at %d, the manifest's range at %d", AuditFile, prev.Seq, prev.Seq, r.Last)
	case last.Action != store.AuditActionCheckpoint:
		fail("%s record %d: the range does not end with a signed checkpoint", AuditFile, last.Seq)
	case len(cps) != len(r.Checkpoints):
		fail("%s: %d checkpoints, the manifest lists %d", AuditFile, len(cps), len(r.Checkpoints))
	default:
		out.chainOK = true
		for i, c := range cps {
			if m := r.Checkpoints[i]; m.Record != c.Record || m.Seq != c.Seq || !bytes.Equal(m.Hash, c.Hash) {
				fail("%s record %d: the checkpoint is not the manifest's", AuditFile, c.Record)
				out.chainOK = false
				break
			}
		}
	}
	return out
}

// auditLines splits audit.jsonl into its lines, without the newline that ends the last.
func auditLines(data []byte) [][]byte {
	lines := bytes.Split(data, []byte("\n"))
	if n := len(lines); n > 0 && len(lines[n-1]) == 0 {
		lines = lines[:n-1]
	}
	return lines
}

// decodeAuditLines decodes lines of audit.jsonl, the first of them line first+1, on every
// core. An error names the first line at fault.
func decodeAuditLines(lines [][]byte, first int) ([]store.AuditEvent, error) {
	recs := make([]store.AuditEvent, len(lines))
	errs := make([]error, len(lines))
	// A batch of lines at a time, their digests decoded into shared buffers and their names
	// shared.
	const batch = 256
	parallel((len(lines)+batch-1)/batch, runtime.GOMAXPROCS(0), func(b int) {
		var sc auditScratch
		for i := b * batch; i < min(len(lines), (b+1)*batch); i++ {
			errs[i] = decodeAuditLineIn(lines[i], &recs[i], &sc)
		}
	})
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", AuditFile, first+i+1, err)
		}
	}
	return recs, nil
}

// chainFailure reports through fail why store.VerifyRecords refused audit.jsonl, naming the
// record when it can.
func chainFailure(fail func(string, ...any), err error) {
	var cb *store.ChainBrokenError
	if errors.As(err, &cb) {
		fail("%s record %d: %s", AuditFile, cb.Seq, cb.Reason)
	} else {
		fail("%s: %v", AuditFile, err)
	}
}
