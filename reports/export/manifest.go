// Package export writes and checks a QA export: one self-contained folder (or one archive of
// the same files) holding, for a selection of units (a work order, a serial list or a time
// range), their audit records, a JSON traveler per unit, their certificates with chains and a
// summary.csv, listed with their SHA-256 in a manifest.json signed by the station's audit key.
// Verify checks a bundle with only the trusted roots and the station's public key: no
// station, no network.
//
// Layout:
//
//	manifest.json                    Manifest: the body and its signature
//	audit.jsonl                      the audit records of the range, one JSON record a line
//	summary.csv                      one row per unit
//	travelers/<serial>.json          reports/traveler records
//	certificates/<serial>/<role>-<sha256>.pem   the certificate, then its chain
//	certificates/<serial>/ek-<sha256>.pem       the EK certificate, then the agent's chain
//
// The same files may come as one uncompressed tar archive (TarWriter), manifest.json last.
package export

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/devid-station/devid/reports/internal/jsonindent"
	"github.com/devid-station/devid/station/store"
)

// Schema identifies the bundle format; it changes when a field changes meaning.
const Schema = "devid-station/qa-export/v1"

// signDomain separates manifest signatures from every other use of the audit key (the
// checkpoints sign another domain).
const signDomain = "devid-station/qa-export-manifest/v1\x00"

// File names inside a bundle.
const (
	ManifestFile = "manifest.json"
	AuditFile    = "audit.jsonl"
	SummaryFile  = "summary.csv"
	// RevocationFile lists what should be revoked or checked with the CA: superseded and
	// refused certificates (by SHA-256) and possibly issued ones (by the key they would certify).
	RevocationFile = "revocation_candidates.csv"
	travelerDir    = "travelers"
	certDir        = "certificates"
	ekFilePrefix   = "ek-"
)

// Manifest is manifest.json: Body, and the audit key's signature over SHA-256(signDomain ||
// compact JSON of Body).
type Manifest struct {
	Body      json.RawMessage `json:"body"`
	Signature []byte          `json:"signature"`
}

// Body is what the manifest states.
type Body struct {
	Schema          string    `json:"schema"`
	StationID       string    `json:"station_id"`
	SoftwareVersion string    `json:"software_version"`
	CreatedAt       time.Time `json:"created_at"`
	Selection       Selection `json:"selection"`
	// AuditPublicKey is the station's audit key (DER SubjectPublicKeyInfo); every checkpoint
	// in audit.jsonl and the manifest are signed by it.
	AuditPublicKey []byte `json:"audit_public_key"`
	Audit          Range  `json:"audit"`
	Units          []Unit `json:"units"`
	Files          []File `json:"files"`
}

// Range describes audit.jsonl: records First..Last, linked after Prev. The first record is a
// checkpoint (or record 1) and so is the last: every record in between is covered by a
// signature of the audit key.
type Range struct {
	First       uint64            `json:"first_seq"`
	Last        uint64            `json:"last_seq"`
	Prev        store.ChainHead   `json:"prev"`
	Head        store.ChainHead   `json:"head"`
	Checkpoints []CheckpointEntry `json:"checkpoints"`
}

// CheckpointEntry names one signed checkpoint of the range.
type CheckpointEntry struct {
	Record uint64 `json:"record"`
	Seq    uint64 `json:"signed_seq"`
	Hash   []byte `json:"signed_hash"`
}

// Unit lists one unit's files.
type Unit struct {
	Serial       string   `json:"serial"`
	Traveler     string   `json:"traveler"`
	Certificates []string `json:"certificates,omitempty"`
	// EKCertificate is the verified EK certificate, then the chain certificates the unit's
	// agent sent with it (the station keeps no other record of the chain it built).
	EKCertificate string `json:"ek_certificate,omitempty"`
}

// File is one file of the bundle and its SHA-256 (hex).
type File struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Size   int    `json:"size"`
}

func manifestDigest(compactBody []byte) []byte {
	h := sha256.New()
	h.Write([]byte(signDomain))
	h.Write(compactBody)
	return h.Sum(nil)
}

// signManifest encodes b and signs it with signer.
func signManifest(b *Body, signer crypto.Signer) ([]byte, error) {
	body, err := marshalBody(b)
	if err != nil {
		return nil, fmt.Errorf("encoding manifest: %w", err)
	}
	sig, err := store.SignAudit(signer, manifestDigest(body))
	if err != nil {
		return nil, fmt.Errorf("signing manifest: %w", err)
	}
	// What json.MarshalIndent(Manifest{body, sig}, "", "  ") writes, without its checking,
	// compacting and scanning the body it has just been given compact.
	m := make([]byte, 0, len(body)+base64.StdEncoding.EncodedLen(len(sig))+32)
	m = append(append(m, `{"body":`...), body...)
	m = base64.StdEncoding.AppendEncode(append(m, `,"signature":"`...), sig)
	m = append(m, `"}`...)
	return append(jsonindent.Append(make([]byte, 0, len(m)+len(m)/2), m, "  "), '\n'), nil
}

// marshalBody returns json.Marshal(b). Its units and files, nearly all of a large manifest, are
// written directly when every string in them is plain (see plain): encoding/json's reflection
// over them was a twentieth of an export's CPU.
func marshalBody(b *Body) ([]byte, error) {
	const tail = `"units":null,"files":null}`
	head := *b
	head.Units, head.Files = nil, nil
	out, err := json.Marshal(&head)
	size, plain := plainListing(b)
	if err != nil || !bytes.HasSuffix(out, []byte(tail)) || !plain {
		return json.Marshal(b)
	}
	// Grown once: a 100,000-unit listing is some 100 MB, which growing by appends copied
	// over and over (a twentieth of the export's CPU).
	out = append(slices.Grow(out[:len(out)-len(tail)], size+len(tail)), `"units":`...)
	str := func(key, s string) {
		out = append(append(append(append(out, key...), '"'), s...), '"')
	}
	if b.Units == nil {
		out = append(out, "null"...)
	} else {
		out = append(out, '[')
		for i := range b.Units {
			u := &b.Units[i]
			if i > 0 {
				out = append(out, ',')
			}
			str(`{"serial":`, u.Serial)
			str(`,"traveler":`, u.Traveler)
			if len(u.Certificates) > 0 {
				out = append(out, `,"certificates":[`...)
				for j, c := range u.Certificates {
					if j > 0 {
						out = append(out, ',')
					}
					str("", c)
				}
				out = append(out, ']')
			}
			if u.EKCertificate != "" {
				str(`,"ek_certificate":`, u.EKCertificate)
			}
			out = append(out, '}')
		}
		out = append(out, ']')
	}
	out = append(out, `,"files":`...)
	if b.Files == nil {
		out = append(out, "null"...)
	} else {
		out = append(out, '[')
		for i := range b.Files {
			f := &b.Files[i]
			if i > 0 {
				out = append(out, ',')
			}
			str(`{"path":`, f.Path)
			str(`,"sha256":`, f.SHA256)
			out = strconv.AppendInt(append(out, `,"size":`...), int64(f.Size), 10)
			out = append(out, '}')
		}
		out = append(out, ']')
	}
	return append(out, '}'), nil
}

// plainListing reports whether every string of b's units and files is plain, and the size of
// their JSON at most.
func plainListing(b *Body) (int, bool) {
	// Each unit's and file's keys, quotes and separators, and a file's size, take less than
	// this beside its strings.
	const unitJSON, fileJSON = 96, 64
	size := len(b.Units)*unitJSON + len(b.Files)*fileJSON
	for i := range b.Units {
		u := &b.Units[i]
		if !plain(u.Serial) || !plain(u.Traveler) || !plain(u.EKCertificate) {
			return 0, false
		}
		size += len(u.Serial) + len(u.Traveler) + len(u.EKCertificate)
		for _, c := range u.Certificates {
			if !plain(c) {
				return 0, false
			}
			size += len(c) + 3
		}
	}
	for i := range b.Files {
		f := &b.Files[i]
		if !plain(f.Path) || !plain(f.SHA256) {
			return 0, false
		}
		size += len(f.Path) + len(f.SHA256)
	}
	return size, true
}

// openManifest checks data's signature with pub and decodes its body.
func openManifest(data []byte, pub crypto.PublicKey) (*Body, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, m.Body); err != nil {
		return nil, fmt.Errorf("decoding the body: %w", err)
	}
	ok, err := store.VerifyAuditSignature(pub, manifestDigest(compact.Bytes()), m.Signature)
	if err != nil {
		return nil, fmt.Errorf("station %w", err)
	}
	if !ok {
		return nil, errors.New("signature does not verify with the station key")
	}
	var b Body
	dec := json.NewDecoder(bytes.NewReader(m.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("decoding the body: %w", err)
	}
	if b.Schema != Schema {
		return nil, fmt.Errorf("schema %q, want %q", b.Schema, Schema)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("station key: %w", err)
	}
	if !bytes.Equal(der, b.AuditPublicKey) {
		return nil, errors.New("audit_public_key is not the station key")
	}
	return &b, nil
}
