package export

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/devid-station/devid/reports/traveler"
	"github.com/devid-station/devid/station/store"
)

// Report is the outcome of Verify: problems of the bundle as a whole, and each unit's.
type Report struct {
	// Problems are failures that concern the whole bundle (manifest, file hashes, audit chain).
	Problems []string
	// Units lists every unit the manifest names, with its problems (none: PASS).
	Units []UnitReport
}

// UnitReport is one unit's verdict.
type UnitReport struct {
	Serial   string
	Problems []string
}

// OK says everything passed.
func (r *Report) OK() bool {
	if len(r.Problems) > 0 || len(r.Units) == 0 {
		return false
	}
	for _, u := range r.Units {
		if len(u.Problems) > 0 {
			return false
		}
	}
	return true
}

// String prints the bundle's problems, then PASS or FAIL per unit with its reasons, then the
// verdict.
func (r *Report) String() string {
	var b strings.Builder
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "FAIL bundle: %s\n", p)
	}
	for _, u := range r.Units {
		if len(u.Problems) == 0 && len(r.Problems) == 0 {
			fmt.Fprintf(&b, "PASS %s\n", u.Serial)
			continue
		}
		fmt.Fprintf(&b, "FAIL %s\n", u.Serial)
		if len(r.Problems) > 0 {
			fmt.Fprintf(&b, "  the bundle failed (above)\n")
		}
		for _, p := range u.Problems {
			fmt.Fprintf(&b, "  %s\n", p)
		}
	}
	if r.OK() {
		fmt.Fprintf(&b, "PASS: %d units\n", len(r.Units))
	} else {
		fmt.Fprintf(&b, "FAIL\n")
	}
	return b.String()
}

// Verify checks the bundle at path (a folder, or the archive TarWriter writes) against the
// trusted roots and the station's audit public key: the manifest's signature and every file's
// hash (and no file unlisted), the audit records' hashes, links and checkpoints
// (store.VerifyRecords), and for each unit that its traveler agrees with the audit records
// (every certificate recorded, the final status) and that each certificate chains to roots
// and agrees with the traveler and the audit records (SHA-256, so key and subject; subject
// serialNumber and hardwareModuleName), and that its EK certificate, when the bundle holds
// it, is the traveler's and carries the key an audit record bound to the unit. It needs
// nothing else. A bundle whose manifest does not verify reports that one problem.
func Verify(path string, roots *x509.CertPool, stationKey crypto.PublicKey) *Report {
	return VerifyWith(path, Trust{Roots: roots, StationKey: stationKey})
}

// Trust is what an auditor is given out of band.
type Trust struct {
	// Roots are the trusted roots of the DevID certificates.
	Roots *x509.CertPool
	// EKRoots, when set, are the trusted roots of the TPMs' EK certificates (and the EK
	// intermediates the station is configured with, which the bundle does not carry): every
	// unit's EK certificate must then be in the bundle, carry the EK extended key usage and
	// chain to them. Without them the EK certificate, when present, is checked against the
	// unit's records only.
	EKRoots *x509.CertPool
	// StationKey is the station's audit public key.
	StationKey crypto.PublicKey
}

// VerifyWith is Verify with the EK roots too (see Trust).
func VerifyWith(path string, t Trust) *Report {
	roots, stationKey := t.Roots, t.StationKey
	rep := &Report{}
	fail := func(format string, args ...any) { rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...)) }
	src, err := openBundle(path, fail)
	if err != nil {
		fail("bundle: %v", err)
		return rep
	}
	body, err := readManifest(src, stationKey)
	if err != nil {
		src.Close()
		fail("%s: %v", ManifestFile, err)
		return rep
	}
	if a, ok := src.(*archiveBundle); ok {
		a.rekey(body)
	}
	keySHA, keyErr := store.KeySHA256(stationKey)
	// The chain is checked as audit.jsonl is read, as a stream, and decoded, a batch of records
	// at a time; its hash is taken on the way. The units are then checked on every core against
	// their records, each reading its own files. A file that does not decode or a chain that
	// does not verify voids those checks. Every other listed file is read and hashed after;
	// the files' problems come first in the report, as they were found first before.
	audit, auditHash := readAuditFile(src, body, keySHA, keyErr == nil)
	files := newBundleFiles(src, body, auditHash)
	mark := len(rep.Problems)
	defer func() {
		files.finish()
		rep.Problems = slices.Insert(rep.Problems, mark, files.problems()...)
		src.Close()
	}()
	if keyErr != nil {
		fail("station key: %v", keyErr)
		return rep
	}
	if audit.decodeErr != nil {
		fail("%v", audit.decodeErr)
	}
	summary := readSummary(files, audit.index, len(body.Units), fail)
	revocations := readRevocations(files.get(RevocationFile), fail)
	rep.Units = make([]UnitReport, len(body.Units))
	cache := &certCache{roots: roots, ekRoots: t.EKRoots}
	if audit.decodeErr == nil && audit.chainOK {
		parallel(len(body.Units), runtime.GOMAXPROCS(0), func(i int) {
			u := body.Units[i]
			ur := UnitReport{Serial: u.Serial}
			var tr *traveler.Record
			ur.Problems, tr = checkUnit(u, files.get, audit.unit(u.Serial), summary[audit.index[u.Serial]], cache)
			if tr != nil {
				ur.Problems = append(ur.Problems, checkRevocations(u, tr, revocations[u.Serial])...)
			}
			rep.Units[i] = ur
		})
	}
	if audit.decodeErr == nil && !audit.chainOK {
		rep.Problems = append(rep.Problems, audit.chainProbs...)
	}
	if audit.decodeErr != nil || !audit.chainOK {
		for i, u := range body.Units {
			rep.Units[i] = UnitReport{Serial: u.Serial,
				Problems: []string{AuditFile + ": does not verify (above): nothing of the unit can be checked against it"}}
		}
	}
	return rep
}

// readManifest reads manifest.json, checks its signature with pub and decodes its body, as
// openManifest does. A manifest in the form the station writes is read as a stream
// (streamManifest), never whole; any other, and any that does not verify, is read whole by
// openManifest, which says why it fails in its words.
func readManifest(src bundleSource, pub crypto.PublicKey) (*Body, error) {
	if b := streamManifest(src, pub); b != nil {
		return b, nil
	}
	raw, err := src.ReadFile(ManifestFile)
	if err != nil {
		return nil, err
	}
	return openManifest(raw, pub)
}

// streamManifest reads manifest.json twice as a stream: once to decode it, an element of the
// units and files at a time, learning where its body lies, then to hash the body's compact
// form (compactJSON) for the signature; both passes must read the same file. It returns the body only when openManifest returns the
// same body: the manifest is one object of exactly the keys body and signature, the body one
// object of Body's keys, each once and spelled as encoding/json writes them (elements are
// decoded by encoding/json, unknown fields refused), nothing follows, the signature verifies
// with pub, the schema is Schema and the audit key is pub. Otherwise nil.
func streamManifest(src bundleSource, pub crypto.PublicKey) *Body {
	// Each pass takes the SHA-256 of the whole file: a file that changed between them (what
	// was decoded is not what was hashed) is read whole instead.
	rc, err := src.Open(ManifestFile)
	if err != nil {
		return nil
	}
	whole1 := sha256.New()
	tee := io.TeeReader(rc, whole1)
	b, sig, from, to, err := decodeManifestStream(tee)
	if err == nil {
		_, err = io.Copy(io.Discard, tee)
	}
	rc.Close()
	if err != nil {
		return nil
	}
	rc, err = src.Open(ManifestFile)
	if err != nil {
		return nil
	}
	defer rc.Close()
	whole2 := sha256.New()
	tee = io.TeeReader(rc, whole2)
	h := sha256.New()
	h.Write([]byte(signDomain))
	if _, err := io.CopyN(io.Discard, tee, from); err != nil {
		return nil
	}
	if err := compactJSON(h, bufio.NewReaderSize(io.LimitReader(tee, to-from), 64<<10)); err != nil {
		return nil
	}
	if _, err := io.Copy(io.Discard, tee); err != nil || !bytes.Equal(whole1.Sum(nil), whole2.Sum(nil)) {
		return nil
	}
	if ok, _ := store.VerifyAuditSignature(pub, h.Sum(nil), sig); !ok || b.Schema != Schema {
		return nil
	}
	if der, err := x509.MarshalPKIXPublicKey(pub); err != nil || !bytes.Equal(der, b.AuditPublicKey) {
		return nil
	}
	return b
}

// errManifestForm says a manifest is not in the form streamManifest reads.
var errManifestForm = errors.New("not the station's manifest form")

// decodeManifestStream decodes manifest.json from r (see streamManifest): the body, the
// signature, and where the body's value lies in r: bytes from to to, what precedes the value
// (the separator after its key) included.
func decodeManifestStream(r io.Reader) (b *Body, sig []byte, from, to int64, err error) {
	dec := json.NewDecoder(bufio.NewReaderSize(r, 64<<10))
	dec.DisallowUnknownFields()
	seenSig := false
	err = eachKey(dec, func(key string) error {
		switch key {
		case "body":
			from = dec.InputOffset()
			var err error
			b, err = decodeBodyStream(dec)
			to = dec.InputOffset()
			return err
		case "signature":
			seenSig = true
			if err := dec.Decode(&sig); err != nil {
				return errManifestForm
			}
		default:
			return errManifestForm
		}
		return nil
	})
	if err != nil || b == nil || !seenSig {
		return nil, nil, 0, 0, errManifestForm
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, 0, 0, errManifestForm
	}
	return b, sig, from, to, nil
}

// decodeBodyStream decodes a manifest's body from dec, an element of its units and files at a
// time.
func decodeBodyStream(dec *json.Decoder) (*Body, error) {
	var b Body
	err := eachKey(dec, func(key string) error {
		var v any
		switch key {
		case "schema":
			v = &b.Schema
		case "station_id":
			v = &b.StationID
		case "software_version":
			v = &b.SoftwareVersion
		case "created_at":
			v = &b.CreatedAt
		case "selection":
			v = &b.Selection
		case "audit_public_key":
			v = &b.AuditPublicKey
		case "audit":
			v = &b.Audit
		case "units":
			var err error
			b.Units, err = decodeArrayStream[Unit](dec, nil)
			return err
		case "files":
			// The station lists each unit's files in the order of the units' names of them:
			// a listed path that is the next of those shares its string.
			next := unitPaths(b.Units)
			want, more := next()
			var err error
			b.Files, err = decodeArrayStream(dec, func(f *File) {
				if more && f.Path == want {
					f.Path = want
					want, more = next()
				}
			})
			return err
		default:
			return errManifestForm
		}
		if err := dec.Decode(v); err != nil {
			return errManifestForm
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &b, nil
}

// eachKey reads a JSON object from dec, calling value for each key to decode its value; a key
// twice, or anything but an object, is errManifestForm.
func eachKey(dec *json.Decoder, value func(key string) error) error {
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return errManifestForm
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		key, _ := t.(string)
		if err != nil || seen[key] {
			return errManifestForm
		}
		seen[key] = true
		if err := value(key); err != nil {
			return err
		}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return errManifestForm
	}
	return nil
}

// unitPaths returns a function that returns, each time it is called, the next of the paths
// units name (each unit's traveler, certificates and EK certificate), and false after the
// last.
func unitPaths(units []Unit) func() (string, bool) {
	u, k := 0, 0 // units[u]'s k-th path is next
	return func() (string, bool) {
		for ; u < len(units); u, k = u+1, 0 {
			x := &units[u]
			n := 1 + len(x.Certificates)
			switch {
			case k == 0:
				k++
				return x.Traveler, true
			case k < n:
				k++
				return x.Certificates[k-2], true
			case k == n && x.EKCertificate != "":
				k++
				return x.EKCertificate, true
			}
		}
		return "", false
	}
}

// decodeArrayStream decodes a JSON array (or null) from dec an element at a time, as
// encoding/json decodes it into a slice, calling each (when set) with each element decoded.
func decodeArrayStream[T any](dec *json.Decoder, each func(*T)) ([]T, error) {
	t, err := dec.Token()
	switch {
	case err != nil:
		return nil, errManifestForm
	case t == nil:
		return nil, nil
	case t != json.Delim('['):
		return nil, errManifestForm
	}
	out := []T{}
	for dec.More() {
		var v T
		if err := dec.Decode(&v); err != nil {
			return nil, errManifestForm
		}
		if each != nil {
			each(&v)
		}
		out = append(out, v)
	}
	if t, err := dec.Token(); err != nil || t != json.Delim(']') {
		return nil, errManifestForm
	}
	return out, nil
}

// compactJSON writes to w what json.Compact writes of the JSON value r holds, r being what
// follows a key in an object (the separator before the value is left out): the bytes but
// whitespace outside strings. r must hold valid JSON (decodeManifestStream decoded it).
func compactJSON(w io.Writer, r *bufio.Reader) error {
	out := bufio.NewWriterSize(w, 64<<10)
	inString, escaped, started := false, false, false
	for {
		c, err := r.ReadByte()
		if errors.Is(err, io.EOF) {
			return out.Flush()
		}
		if err != nil {
			return err
		}
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			continue
		case !started && c == ':':
			continue
		case c == '"':
			inString = true
		}
		started = true
		if err := out.WriteByte(c); err != nil {
			return err
		}
	}
}

// bundleSource is where Verify reads a bundle's files.
type bundleSource interface {
	ReadFile(name string) ([]byte, error)
	// Open opens a file to be read as a stream (audit.jsonl, too large to hold).
	Open(name string) (io.ReadCloser, error)
	// Others lists the files present that are not listed.
	Others(listed func(name string) bool) []string
	Close() error
}

// openBundle opens the folder or archive at path. Problems of an archive's entries are
// reported through fail.
func openBundle(path string, fail func(string, ...any)) (bundleSource, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		// Every file is read through the bundle's root: a symbolic link leading out of the
		// bundle is refused, never followed.
		root, err := os.OpenRoot(path)
		if err != nil {
			return nil, err
		}
		return &dirBundle{root: root, dir: path}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	// The headers are read in one pass, then each file where it lies: the archive is never
	// held in memory.
	return &archiveBundle{f: f, files: indexTar(f, fi.Size(), fail)}, nil
}

// dirBundle is a bundle folder.
type dirBundle struct {
	root *os.Root
	dir  string
}

func (d *dirBundle) ReadFile(name string) ([]byte, error) {
	return d.root.ReadFile(filepath.FromSlash(name))
}

func (d *dirBundle) Open(name string) (io.ReadCloser, error) {
	return d.root.Open(filepath.FromSlash(name))
}

func (d *dirBundle) Others(listed func(string) bool) []string {
	var out []string
	_ = filepath.WalkDir(d.dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(d.dir, p)
		if !listed(filepath.ToSlash(rel)) {
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	return out
}

func (d *dirBundle) Close() error { return d.root.Close() }

// archiveBundle is a bundle archive, its files read where indexTar found them.
type archiveBundle struct {
	f     *os.File
	files map[string]tarEntry
}

var errNotInArchive = errors.New("not in the archive")

func (a *archiveBundle) ReadFile(name string) ([]byte, error) {
	e, ok := a.files[name]
	if !ok {
		return nil, errNotInArchive
	}
	data := make([]byte, e.size)
	if _, err := a.f.ReadAt(data, e.off); err != nil {
		return nil, err
	}
	return data, nil
}

func (a *archiveBundle) Open(name string) (io.ReadCloser, error) {
	e, ok := a.files[name]
	if !ok {
		return nil, errNotInArchive
	}
	return io.NopCloser(io.NewSectionReader(a.f, e.off, e.size)), nil
}

// rekey keys the index of the files body lists by body's strings of their names, so that the
// archive's copies of them (one a file) are let go.
func (a *archiveBundle) rekey(body *Body) {
	files := make(map[string]tarEntry, len(a.files))
	for _, f := range body.Files {
		if e, ok := a.files[f.Path]; ok {
			files[f.Path] = e
		}
	}
	for name, e := range a.files {
		if _, ok := files[name]; !ok {
			files[name] = e
		}
	}
	a.files = files
}

func (a *archiveBundle) Others(listed func(string) bool) []string {
	var out []string
	for name := range a.files {
		if !listed(name) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func (a *archiveBundle) Close() error { return a.f.Close() }

// fileRead is how a bundle file read: its hash and size.
type fileRead struct {
	data []byte // nil for audit.jsonl, read as a stream
	size int
	err  error
	sum  [sha256.Size]byte
}

// readAuditFile reads audit.jsonl, when the manifest lists it, once and as a stream: it takes
// its hash and size for bundleFiles and, when decode is set, decodes and checks its records
// (readAuditFrom). Whatever its length, it holds a batch of lines at a time.
func readAuditFile(src bundleSource, body *Body, keySHA []byte, decode bool) (auditRead, *fileRead) {
	missing := auditRead{decodeErr: fmt.Errorf("%s: missing", AuditFile)}
	if !slices.ContainsFunc(body.Files, func(f File) bool { return f.Path == AuditFile }) {
		return missing, nil
	}
	rc, err := src.Open(AuditFile)
	if err != nil {
		return missing, &fileRead{err: err}
	}
	defer rc.Close()
	h := sha256.New()
	var n byteCount
	tee := io.TeeReader(rc, io.MultiWriter(h, &n))
	a := missing
	if decode {
		a = readAuditFrom(tee, body, keySHA)
	}
	// The rest of a file whose records stopped decoding is hashed still.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return missing, &fileRead{err: err}
	}
	r := &fileRead{size: int(n)}
	h.Sum(r.sum[:0])
	return a, r
}

// byteCount counts the bytes written to it.
type byteCount int64

func (c *byteCount) Write(p []byte) (int, error) {
	*c += byteCount(len(p))
	return len(p), nil
}

// bundleFiles reads the files the manifest lists, each when a check needs it (a unit's files
// when the unit is checked), hashing each the first time it is read; finish reads and hashes
// those no check read. A file's bytes are held only while they are checked, not the bundle's,
// and of each listed file a few words. It is safe for concurrent use.
type bundleFiles struct {
	src  bundleSource
	body *Body
	// first maps each listed local path but audit.jsonl's to its first place in the listing;
	// more holds the further places of a path listed more than once.
	first map[string]int
	more  map[string][]int
	// other holds the listed paths first does not.
	other map[string]bool
	mu    sync.Mutex
	reads []fileCheck   // by place in the listing
	errs  map[int]error // by place: the files that did not read
}

// fileCheck is what reading a listed file found: its hash and size, or (failed) an error.
type fileCheck struct {
	sum          [sha256.Size]byte
	size         int64
	done, failed bool
}

// newBundleFiles reads the files src holds as body lists them; audit is how readAuditFile
// read audit.jsonl (nil when the manifest does not list it).
func newBundleFiles(src bundleSource, body *Body, audit *fileRead) *bundleFiles {
	b := &bundleFiles{src: src, body: body, first: make(map[string]int, len(body.Files)), more: map[string][]int{},
		other: map[string]bool{}, reads: make([]fileCheck, len(body.Files)), errs: map[int]error{}}
	for i, f := range body.Files {
		switch {
		case f.Path == AuditFile && audit != nil:
			b.set(i, audit)
			b.other[f.Path] = true
		case !filepath.IsLocal(filepath.FromSlash(f.Path)):
			b.reads[i].done = true // reported as leaving the bundle, never read
			b.other[f.Path] = true
		default:
			if _, ok := b.first[f.Path]; ok {
				b.more[f.Path] = append(b.more[f.Path], i)
			} else {
				b.first[f.Path] = i
			}
		}
	}
	return b
}

// listed says the manifest lists name.
func (b *bundleFiles) listed(name string) bool {
	_, ok := b.first[name]
	return ok || b.other[name]
}

// set records r at place i, unless a read is recorded there.
func (b *bundleFiles) set(i int, r *fileRead) {
	c := &b.reads[i]
	if c.done {
		return
	}
	*c = fileCheck{sum: r.sum, size: int64(r.size), done: true, failed: r.err != nil}
	if r.err != nil {
		b.errs[i] = r.err
	}
}

// record records r at each place in the listing of name, a path in first, that has none.
func (b *bundleFiles) record(name string, r *fileRead) {
	i := b.first[name]
	b.mu.Lock()
	b.set(i, r)
	for _, j := range b.more[name] {
		b.set(j, r)
	}
	b.mu.Unlock()
}

// get returns the bytes of the listed file name (even when its hash is not the manifest's),
// nil when it is not listed or does not read. The first read of a file is what its hash check
// reports.
func (b *bundleFiles) get(name string) []byte {
	if _, ok := b.first[name]; !ok {
		return nil
	}
	var r fileRead
	if r.data, r.err = b.src.ReadFile(name); r.err == nil {
		r.sum, r.size = sha256.Sum256(r.data), len(r.data)
	}
	b.record(name, &r)
	if r.err != nil {
		return nil
	}
	return r.data
}

// stream reads the listed file name as a stream through read, hashing it on the way as get
// does (the rest of it, when read stops early, too), so that a large file is never held. It
// returns false, without calling read, when name is not listed or does not open, and false
// when the file does not read to its end.
func (b *bundleFiles) stream(name string, read func(r io.Reader)) bool {
	if _, ok := b.first[name]; !ok {
		return false
	}
	var r fileRead
	rc, err := b.src.Open(name)
	if err == nil {
		h := sha256.New()
		var n byteCount
		src := &errReader{r: rc}
		tee := io.TeeReader(src, io.MultiWriter(h, &n))
		read(tee)
		_, _ = io.Copy(io.Discard, tee)
		rc.Close()
		r.err, r.size = src.err, int(n)
		h.Sum(r.sum[:0])
	} else {
		r.err = err
	}
	b.record(name, &r)
	return r.err == nil
}

// errReader remembers the first error but io.EOF its reader returned.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && e.err == nil {
		e.err = err
	}
	return n, err
}

// finish reads and hashes, on every core, every listed file no check read.
func (b *bundleFiles) finish() {
	var names []string
	for i, f := range b.body.Files {
		if !b.reads[i].done && (len(names) == 0 || names[len(names)-1] != f.Path) {
			names = append(names, f.Path)
		}
	}
	parallel(len(names), runtime.GOMAXPROCS(0), func(i int) { b.get(names[i]) })
}

// problems reports, in the manifest's order, each listed file that is missing or whose hash or
// size is not the manifest's, then the files present that are not listed. Call it after
// finish.
func (b *bundleFiles) problems() []string {
	var probs []string
	fail := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	for i, f := range b.body.Files {
		r := &b.reads[i]
		switch {
		case !filepath.IsLocal(filepath.FromSlash(f.Path)):
			fail("%s: listed path %q leaves the bundle", ManifestFile, f.Path)
		case r.failed:
			fail("%s: %v", f.Path, b.errs[i])
		case hex.EncodeToString(r.sum[:]) != f.SHA256 || r.size != int64(f.Size):
			// The checks that read the file name the record at fault too.
			fail("%s: SHA-256 %x (%d bytes) is not the manifest's %s (%d bytes)", f.Path, r.sum, r.size, f.SHA256, f.Size)
		}
	}
	for _, p := range b.src.Others(func(name string) bool { return name == ManifestFile || b.listed(name) }) {
		fail("%s: not listed in the manifest", p)
	}
	return probs
}

// summaryRow is what the unit checks read of a unit's row of summary.csv.
type summaryRow struct {
	result, idevidSHA256, ldevidSHA256 string
}

// readSummary reads summary.csv as a stream (files.stream), keeping of each unit the manifest
// names (index: unitIndex) the columns checkUnit reads, in the manifest's order (nil: no row).
// A file that is not the expected table is reported through fail and gives no rows; one that is
// not listed or does not read gives no rows (bundleFiles reports it).
func readSummary(files *bundleFiles, index map[string]int, units int, fail func(string, ...any)) []*summaryRow {
	out := make([]*summaryRow, units)
	var tableErr error
	bad := false
	read := files.stream(SummaryFile, func(r io.Reader) {
		cr := csv.NewReader(r)
		cr.ReuseRecord = true
		header, err := cr.Read()
		if err != nil || !slices.Equal(header, summaryHeader) {
			if errors.Is(err, io.EOF) {
				err = nil // no rows: the table is empty
			}
			tableErr, bad = err, true
			return
		}
		col := func(name string) int { return slices.Index(summaryHeader, name) }
		serial, result, idevid, ldevid := col("serial"), col("result"), col("idevid_sha256"), col("ldevid_sha256")
		for {
			row, err := cr.Read()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				tableErr, bad = err, true
				return
			}
			if i, ok := index[row[serial]]; ok {
				// Cloned: csv.Reader's fields share one string, the whole line.
				out[i] = &summaryRow{result: internStatus(row[result]), idevidSHA256: strings.Clone(row[idevid]),
					ldevidSHA256: strings.Clone(row[ldevid])}
			}
		}
	})
	switch {
	case !read:
		return make([]*summaryRow, units)
	case bad:
		fail("%s: not the expected table (%v)", SummaryFile, tableErr)
		return make([]*summaryRow, units)
	}
	return out
}

// readRevocations reads RevocationFile's rows by serial.
func readRevocations(data []byte, fail func(string, ...any)) map[string][][]string {
	out := map[string][][]string{}
	rows, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil || len(rows) == 0 || !slices.Equal(rows[0], revocationHeader) {
		fail("%s: not the expected table (%v)", RevocationFile, err)
		return out
	}
	for _, row := range rows[1:] {
		out[row[0]] = append(out[row[0]], row)
	}
	return out
}

// checkRevocations checks that the unit's rows of RevocationFile are exactly the revocation
// candidates and possibly issued keys its traveler lists.
func checkRevocations(u Unit, tr *traveler.Record, rows [][]string) []string {
	want := revocationRows(tr)
	if len(want) != len(rows) {
		return []string{fmt.Sprintf("%s: %d rows for the unit, %s lists %d revocation candidates", RevocationFile, len(rows), u.Traveler, len(want))}
	}
	for i := range want {
		if !slices.Equal(want[i], rows[i]) {
			return []string{fmt.Sprintf("%s: row %v disagrees with %s", RevocationFile, rows[i], u.Traveler)}
		}
	}
	return nil
}

// checkUnit checks one unit's traveler and certificates against the facts of its audit records.
// It returns the traveler, unless it does not decode.
func checkUnit(u Unit, file func(name string) []byte, facts *unitFacts, row *summaryRow, cache *certCache) ([]string, *traveler.Record) {
	var probs []string
	fail := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	data := file(u.Traveler)
	if data == nil {
		fail("%s: missing", u.Traveler)
		return probs, nil
	}
	tr, err := decodeTraveler(data)
	if err != nil {
		fail("%s: %v", u.Traveler, err)
		return probs, nil
	}
	if tr.Serial != u.Serial {
		fail("%s: serial %q, the manifest names %q", u.Traveler, tr.Serial, u.Serial)
	}
	if !facts.seen {
		fail("%s: no audit records of the unit", AuditFile)
		return probs, &tr
	}
	// The final status is the last unit update's.
	switch {
	case !facts.hasStatus:
		fail("%s: no status update of the unit", AuditFile)
	case facts.status != tr.Result:
		fail("%s: result %q, %s record %d says %q", u.Traveler, tr.Result, AuditFile, facts.statusSeq, facts.status)
	}
	if row == nil {
		fail("%s: no row for the unit", SummaryFile)
	} else if row.result != tr.Result || row.idevidSHA256 != certSHA(tr.IDevID) || row.ldevidSHA256 != certSHA(tr.LDevID) {
		fail("%s: the unit's row disagrees with %s (result, certificates)", SummaryFile, u.Traveler)
	}
	for _, c := range tr.Certificates {
		if a := facts.cert(c.SHA256); a == nil || a.role != c.Role {
			fail("%s: certificate %s %s is not recorded for the unit in %s", u.Traveler, c.Role, c.SHA256, AuditFile)
		}
	}
	if len(u.Certificates) != len(tr.Certificates) {
		fail("%s: %d certificate files, the traveler lists %d certificates", ManifestFile, len(u.Certificates), len(tr.Certificates))
	}
	for _, p := range u.Certificates {
		probs = append(probs, checkCert(p, file(p), &tr, facts, cache)...)
	}
	probs = append(probs, checkEK(u, file(u.EKCertificate), &tr, facts, cache.ekRoots)...)
	return probs, &tr
}

// travelerFacts are the fields of a traveler the verifier checks: decoding only them leaves
// the rest (the step timeline, most of a traveler) to encoding/json's syntax check.
type travelerFacts struct {
	Serial               string                    `json:"serial"`
	Result               string                    `json:"result"`
	EK                   *traveler.EKCertificate   `json:"ek"`
	IDevID               *traveler.Certificate     `json:"idevid"`
	LDevID               *traveler.Certificate     `json:"ldevid"`
	IAK                  *traveler.Certificate     `json:"iak"`
	Certificates         []traveler.CertificateRef `json:"certificates"`
	RevocationCandidates []traveler.CertificateRef `json:"revocation_candidates"`
	PossiblyIssued       []traveler.PossiblyIssued `json:"possibly_issued"`
}

// decodeTraveler decodes what the verifier checks of a traveler file into a record.
func decodeTraveler(data []byte) (traveler.Record, error) {
	var f travelerFacts
	if err := json.Unmarshal(data, &f); err != nil {
		return traveler.Record{}, err
	}
	return traveler.Record{Serial: f.Serial, Result: f.Result, EK: f.EK, IDevID: f.IDevID, LDevID: f.LDevID, IAK: f.IAK,
		Certificates: f.Certificates, RevocationCandidates: f.RevocationCandidates, PossiblyIssued: f.PossiblyIssued}, nil
}

func certSHA(c *traveler.Certificate) string {
	if c == nil {
		return ""
	}
	return c.SHA256
}

// checkCert checks one certificate file: the certificate, then its chain.
func checkCert(name string, data []byte, tr *traveler.Record, facts *unitFacts, cache *certCache) []string {
	var probs []string
	fail := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(name+": "+format, args...)) }
	if data == nil {
		fail("missing")
		return probs
	}
	var certs []*x509.Certificate
	var rooted []bool // certs[i] is one of the trusted roots
	for rest := data; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		var c *x509.Certificate
		var err error
		root := false
		if len(certs) == 0 {
			c, err = x509.ParseCertificate(blk.Bytes) // a leaf is in one file only
		} else {
			c, root, err = cache.chainCert(blk.Bytes)
		}
		if err != nil {
			fail("certificate %d: %v", len(certs)+1, err)
			return probs
		}
		certs, rooted = append(certs, c), append(rooted, root)
	}
	if len(certs) == 0 {
		fail("no certificate")
		return probs
	}
	leaf := certs[0]
	h := sha256.Sum256(leaf.Raw)
	sha := hex.EncodeToString(h[:])
	a := facts.cert(sha)
	if a == nil {
		fail("certificate %s is not recorded for %s in %s", sha, tr.Serial, AuditFile)
		return probs
	}
	role := a.role
	if want := strings.ToLower(role) + "-" + sha + ".pem"; filepath.Base(name) != want {
		fail("file name is not %s", want)
	}
	if a.serialHex != "" && a.serialHex != leaf.SerialNumber.Text(16) {
		fail("serial number %s, %s record %d says %s", leaf.SerialNumber.Text(16), AuditFile, a.seq, a.serialHex)
	}
	// The traveler's certificate of the role, when it is this one, must be the same bytes.
	var tc *traveler.Certificate
	switch role {
	case string(store.RoleIDevID):
		tc = tr.IDevID
	case string(store.RoleLDevID):
		tc = tr.LDevID
	case string(store.RoleIAK):
		tc = tr.IAK
	}
	if tc != nil && tc.SHA256 == sha {
		blk, _ := pem.Decode([]byte(tc.PEM))
		if blk == nil || !bytes.Equal(blk.Bytes, leaf.Raw) || tc.Subject != leaf.Subject.String() {
			fail("the traveler's %s certificate (key, subject) differs from the file's", role)
		}
	}
	if leaf.Subject.SerialNumber != tr.Serial {
		fail("subject serialNumber %q is not the unit's serial %q", leaf.Subject.SerialNumber, tr.Serial)
	}
	if err := checkHWModule(leaf, tr); err != nil {
		fail("%v", err)
	}
	// A trusted root the file also carries is left out of the intermediates: a chain through
	// it ends at it anyway, and x509 would check every signature once more through the copy.
	inter := x509.NewCertPool()
	for i, c := range certs[1:] {
		if !rooted[i+1] {
			inter.AddCert(c)
		}
	}
	// Checked at the time the station recorded it: a bundle stays verifiable after expiry.
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: cache.roots, Intermediates: inter, CurrentTime: a.time,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		fail("does not chain to the given roots: %v", err)
	}
	return probs
}

// certCache parses each distinct chain certificate of a bundle once (every unit's files carry
// the same few CA certificates) and remembers whether it is one of the trusted roots. It holds
// at most certCacheSize certificates, keyed by their SHA-256: a bundle whose units each have
// CAs of their own starts it again when it is full, so that it does not grow with the lot
// (the files of a unit are checked together, so its certificates are still found). It is safe
// for concurrent use.
type certCache struct {
	roots, ekRoots *x509.CertPool
	mu             sync.Mutex
	certs          map[[sha256.Size]byte]*cachedCert
}

// certCacheSize bounds the certificates a certCache holds.
const certCacheSize = 1024

type cachedCert struct {
	once sync.Once
	cert *x509.Certificate
	root bool
	err  error
}

// chainCert returns der parsed and whether it is a trusted root.
func (c *certCache) chainCert(der []byte) (*x509.Certificate, bool, error) {
	key := sha256.Sum256(der)
	c.mu.Lock()
	e := c.certs[key]
	if e == nil {
		if c.certs == nil || len(c.certs) >= certCacheSize {
			c.certs = make(map[[sha256.Size]byte]*cachedCert)
		}
		e = &cachedCert{}
		c.certs[key] = e
	}
	c.mu.Unlock()
	e.once.Do(func() {
		e.cert, e.err = x509.ParseCertificate(der)
		if e.err != nil || !bytes.Equal(e.cert.RawSubject, e.cert.RawIssuer) {
			return
		}
		// A certificate in the pool verifies as the whole chain, with no signature checked.
		chains, err := e.cert.Verify(x509.VerifyOptions{Roots: c.roots, CurrentTime: e.cert.NotBefore,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		e.root = err == nil && len(chains) == 1 && len(chains[0]) == 1 && chains[0][0].Equal(e.cert)
	})
	return e.cert, e.root, e.err
}

// checkEK checks the unit's EK certificate file: the certificate is the traveler's EK (SHA-256,
// serial number, key fingerprint), its key is the one an audit record bound to the unit, and
// with EK roots it chains to them through the chain the file carries, as the station checks an
// EK certificate, at the time of the binding.
func checkEK(u Unit, data []byte, tr *traveler.Record, facts *unitFacts, ekRoots *x509.CertPool) []string {
	var probs []string
	name := u.EKCertificate
	fail := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(name+": "+format, args...)) }
	if name == "" {
		if ekRoots != nil {
			return []string{fmt.Sprintf("%s: no EK certificate of the unit to check against the EK roots", ManifestFile)}
		}
		return nil
	}
	if data == nil {
		fail("missing")
		return probs
	}
	var certs []*x509.Certificate
	for rest := data; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			fail("certificate %d: %v", len(certs)+1, err)
			return probs
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		fail("no certificate")
		return probs
	}
	ek := certs[0]
	// The fingerprint is the station's: the SHA-256 of the key's SubjectPublicKeyInfo as Go
	// encodes it.
	spki, err := x509.MarshalPKIXPublicKey(ek.PublicKey)
	if err != nil {
		fail("public key: %v", err)
		return probs
	}
	sha, fp := sha256Hex(ek.Raw), sha256Hex(spki)
	if want := path.Join(certDir, u.Serial, ekFilePrefix+sha+".pem"); name != want {
		fail("file name is not %s", want)
	}
	switch {
	case tr.EK == nil:
		fail("%s names no EK certificate", u.Traveler)
	case tr.EK.SHA256 != sha || tr.EK.Fingerprint != fp || tr.EK.SerialNumber != ek.SerialNumber.Text(16):
		fail("certificate %s (key %s) is not %s's EK certificate %s (key %s)", sha, fp, u.Traveler, tr.EK.SHA256, tr.EK.Fingerprint)
	}
	bound := facts.ekBound(fp)
	if bound == nil {
		fail("the EK %s is not bound to %s in %s", fp, u.Serial, AuditFile)
		return probs
	}
	if ekRoots == nil {
		return probs
	}
	if !slices.ContainsFunc(ek.UnknownExtKeyUsage, oidEKCertificate.Equal) {
		fail("extended key usage lacks tcg-kp-EKCertificate: not an EK certificate")
	}
	// The subjectAltName of an EK certificate names the TPM (a directoryName), which
	// crypto/x509 leaves unhandled; the station checked it against the TCG profile.
	ek.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(ek.UnhandledCriticalExtensions), oidSAN.Equal)
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := ek.Verify(x509.VerifyOptions{Roots: ekRoots, Intermediates: inter, CurrentTime: bound.time,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		fail("does not chain to the given EK roots: %v", err)
	}
	return probs
}

// oidEKCertificate is tcg-kp-EKCertificate, the extended key usage of an EK certificate.
var oidEKCertificate = asn1.ObjectIdentifier{2, 23, 133, 8, 1}

var oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}
var oidHWModuleName = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 8, 4}

// checkHWModule checks a hardwareModuleName (RFC 4108) otherName, when the certificate has
// one: its serial is the unit's serial or the serial number of the unit's verified EK
// certificate.
func checkHWModule(c *x509.Certificate, tr *traveler.Record) error {
	for _, ext := range c.Extensions {
		if !ext.Id.Equal(oidSAN) {
			continue
		}
		var names []asn1.RawValue
		if _, err := asn1.Unmarshal(ext.Value, &names); err != nil {
			return fmt.Errorf("malformed subjectAltName: %w", err)
		}
		for _, n := range names {
			if n.Class != asn1.ClassContextSpecific || n.Tag != 0 {
				continue
			}
			var on struct {
				TypeID asn1.ObjectIdentifier
				Value  asn1.RawValue // [0] EXPLICIT: Bytes is the name
			}
			if _, err := asn1.UnmarshalWithParams(n.FullBytes, &on, "tag:0"); err != nil {
				return fmt.Errorf("malformed otherName: %w", err)
			}
			if !on.TypeID.Equal(oidHWModuleName) {
				continue
			}
			if on.Value.Class != asn1.ClassContextSpecific || on.Value.Tag != 0 {
				return errors.New("malformed hardwareModuleName: value not [0]")
			}
			var hmn struct {
				Type   asn1.ObjectIdentifier
				Serial []byte
			}
			if _, err := asn1.Unmarshal(on.Value.Bytes, &hmn); err != nil {
				return fmt.Errorf("malformed hardwareModuleName: %w", err)
			}
			if string(hmn.Serial) == tr.Serial {
				continue
			}
			if tr.EK != nil {
				if n, ok := new(big.Int).SetString(tr.EK.SerialNumber, 16); ok && bytes.Equal(n.Bytes(), hmn.Serial) {
					continue
				}
			}
			return fmt.Errorf("hardwareModuleName serial %x is neither the unit's serial nor its EK certificate's", hmn.Serial)
		}
	}
	return nil
}

// ParseKey reads the station's audit public key from PEM: a PUBLIC KEY or a CERTIFICATE, of a
// type manifest signatures are made with (ECDSA, RSA, Ed25519).
func ParseKey(data []byte) (crypto.PublicKey, error) {
	blk, _ := pem.Decode(data)
	if blk == nil {
		return nil, errors.New("station key: no PEM block")
	}
	var pub crypto.PublicKey
	switch blk.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("station key: %w", err)
		}
		pub = k
	case "CERTIFICATE":
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("station key: %w", err)
		}
		pub = c.PublicKey
	default:
		return nil, fmt.Errorf("station key: PEM block %q, want PUBLIC KEY", blk.Type)
	}
	switch pub.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
		return pub, nil
	}
	return nil, fmt.Errorf("station key: %T keys sign no manifest", pub)
}

// PublicKeyPEM encodes the station's audit public key as the PEM PUBLIC KEY file an auditor
// is given out of band (devid-verify -station-key).
func PublicKeyPEM(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}
