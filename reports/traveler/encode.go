package traveler

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/devid-station/devid/station/store"
)

// marshalRecord returns what json.Marshal(r) returns, without its reflection: a QA export
// encodes a traveler for every unit, and encoding/json spent most of that reflecting (times
// through MarshalJSON, maps sorted through reflect values). It spells the fields out in their
// declared order with their tags' names and omitempty/omitzero rules, and escapes strings as
// encoding/json does. Anything it does not write as encoding/json would (a time encoding/json
// refuses, a float it writes in exponent form, a NaN) sends the whole record to json.Marshal.
// TestMarshalRecord holds it to json.Marshal, and TestMarshalRecordFields to the types' fields.
func marshalRecord(r *Record) ([]byte, error) {
	return appendRecord(nil, r)
}

// appendRecord appends marshalRecord(r) to b.
func appendRecord(b []byte, r *Record) ([]byte, error) {
	e := recordEncoder{b: b, ok: true}
	e.record(r)
	if !e.ok {
		js, err := json.Marshal(r)
		return append(b, js...), err
	}
	return e.b, nil
}

// recordEncoder appends JSON to b; ok false means it met a value it leaves to encoding/json.
type recordEncoder struct {
	b  []byte
	ok bool
}

func (e *recordEncoder) record(r *Record) {
	e.str(`{"schema":`, r.Schema)
	e.str(`,"serial":`, r.Serial)
	e.strOmit(`,"work_order":`, r.WorkOrder)
	e.strOmit(`,"work_order_created_by":`, r.WorkOrderCreatedBy)
	e.strOmit(`,"profile":`, r.Profile)
	e.str(`,"station_id":`, r.StationID)
	e.str(`,"result":`, r.Result)
	e.strOmit(`,"error_code":`, r.ErrorCode)
	e.strOmit(`,"error_message":`, r.ErrorMessage)
	e.uint(`,"attempts":`, r.Attempts)
	e.timePtr(`,"started_at":`, r.StartedAt)
	e.timePtr(`,"ended_at":`, r.EndedAt)
	e.floatOmit(`,"cycle_time_seconds":`, r.CycleTimeSeconds)
	e.b = append(e.b, `,"provisionings":`...)
	list(e, r.Provisionings, (*recordEncoder).provisioning)
	e.b = append(e.b, `,"steps":`...)
	list(e, r.Steps, (*recordEncoder).step)
	if t := r.TPM; t != nil {
		e.str(`,"tpm":{"manufacturer":`, t.Manufacturer)
		e.strOmit(`,"manufacturer_id":`, t.ManufacturerID)
		e.strOmit(`,"vendor_string":`, t.VendorString)
		e.strOmit(`,"firmware_version":`, t.FirmwareVersion)
		e.strOmit(`,"family":`, t.Family)
		e.uintOmit(`,"spec_level":`, uint64(t.SpecLevel))
		e.uintOmit(`,"spec_revision":`, uint64(t.SpecRevision))
		e.uintOmit(`,"spec_year":`, uint64(t.SpecYear))
		e.strsOmit(`,"eks_held":`, t.EKsHeld)
		e.strsOmit(`,"eks_read":`, t.EKsRead)
		e.strOmit(`,"ek_used":`, t.EKUsed)
		e.strOmit(`,"agent_version":`, t.AgentVersion)
		e.strOmit(`,"tpm_transport":`, t.TPMTransport)
		e.strOmit(`,"serial_source":`, t.SerialSource)
		e.strOmit(`,"fixture_slot":`, t.FixtureSlot)
		e.strOmit(`,"boot_id":`, t.BootID)
		e.b = append(e.b, '}')
	}
	if k := r.EK; k != nil {
		e.str(`,"ek":{"algorithm":`, k.Algorithm)
		e.str(`,"ek_fingerprint":`, k.Fingerprint)
		e.strOmit(`,"manufacturer":`, k.Manufacturer)
		e.str(`,"subject":`, k.Subject)
		e.str(`,"issuer":`, k.Issuer)
		e.str(`,"serial_number":`, k.SerialNumber)
		e.str(`,"sha256":`, k.SHA256)
		e.b = append(e.b, '}')
	}
	e.certificate(`,"idevid":`, r.IDevID)
	e.certificate(`,"ldevid":`, r.LDevID)
	e.certificate(`,"iak":`, r.IAK)
	if c := r.IAKCertification; c != nil {
		e.str(`,"iak_certification":{"attest_sha256":`, c.AttestSHA256)
		e.str(`,"attest":`, c.Attest)
		e.str(`,"signature":`, c.Signature)
		e.str(`,"nonce":`, c.Nonce)
		e.str(`,"certified_name":`, c.CertifiedName)
		e.str(`,"iak_name":`, c.IAKName)
		e.b = append(e.b, '}')
	}
	if len(r.Certificates) > 0 {
		e.b = append(e.b, `,"certificates":`...)
		list(e, r.Certificates, (*recordEncoder).certificateRef)
	}
	if len(r.RevocationCandidates) > 0 {
		e.b = append(e.b, `,"revocation_candidates":`...)
		list(e, r.RevocationCandidates, (*recordEncoder).certificateRef)
	}
	if len(r.PossiblyIssued) > 0 {
		e.b = append(e.b, `,"possibly_issued":`...)
		list(e, r.PossiblyIssued, func(e *recordEncoder, p *PossiblyIssued) {
			e.str(`{"id":`, p.ID)
			e.str(`,"role":`, p.Role)
			e.str(`,"ca":`, p.CA)
			e.str(`,"public_key_sha256":`, p.PublicKeySHA256)
			e.str(`,"csr_sha256":`, p.CSRSHA256)
			e.time(`,"from":`, p.From)
			e.time(`,"to":`, p.To)
			e.b = append(e.b, '}')
		})
	}
	e.strMapOmit(`,"verification":`, r.Verification)
	if f := r.FieldCheck; f != nil {
		e.str(`,"field_check":{"mode":`, f.Mode)
		e.strOmit(`,"endpoint":`, f.Endpoint)
		e.strOmit(`,"client_cert_sha256":`, f.ClientCertSHA256)
		e.strOmit(`,"tls_version":`, f.TLSVersion)
		e.intOmit(`,"http_status":`, int64(f.HTTPStatus))
		e.intOmit(`,"tpm_signatures":`, int64(f.Signatures))
		e.certificate(`,"reenrolled":`, f.Reenrolled)
		e.b = append(e.b, '}')
	}
	if len(r.Reworks) > 0 {
		e.b = append(e.b, `,"reworks":`...)
		list(e, r.Reworks, (*recordEncoder).rework)
	}
	if len(r.Actions) > 0 {
		e.b = append(e.b, `,"actions":`...)
		list(e, r.Actions, func(e *recordEncoder, a *Action) {
			e.time(`{"time":`, a.Time)
			e.str(`,"principal":`, a.Principal)
			e.str(`,"kind":`, a.Kind)
			e.strOmit(`,"message":`, a.Message)
			e.strMapOmit(`,"data":`, a.Data)
			e.b = append(e.b, '}')
		})
	}
	e.b = append(e.b, '}')
}

func (e *recordEncoder) provisioning(p *Provisioning) {
	e.int(`{"number":`, int64(p.Number))
	if p.Rework != nil {
		e.b = append(e.b, `,"rework":`...)
		e.rework(p.Rework)
	}
	e.str(`,"result":`, p.Result)
	e.strOmit(`,"error_code":`, p.ErrorCode)
	e.timePtr(`,"started_at":`, p.StartedAt)
	e.timePtr(`,"ended_at":`, p.EndedAt)
	e.floatOmit(`,"cycle_time_seconds":`, p.CycleTimeSeconds)
	e.strMapOmit(`,"verification":`, p.Verification)
	e.b = append(e.b, '}')
}

func (e *recordEncoder) step(s *Step) {
	e.str(`{"name":`, s.Name)
	e.uint(`,"attempt":`, s.Attempt)
	e.time(`,"started_at":`, s.StartedAt)
	e.timePtr(`,"ended_at":`, s.EndedAt)
	e.floatOmit(`,"duration_ms":`, s.DurationMS)
	e.strOmit(`,"error_code":`, s.ErrorCode)
	e.b = append(e.b, '}')
}

func (e *recordEncoder) rework(w *store.Rework) {
	e.str(`{"by":`, w.By)
	e.str(`,"reason":`, w.Reason)
	e.time(`,"authorized_at":`, w.AuthorizedAt)
	if !w.UsedAt.IsZero() {
		e.time(`,"used_at":`, w.UsedAt)
	}
	e.b = append(e.b, '}')
}

func (e *recordEncoder) certificateRef(c *CertificateRef) {
	e.str(`{"role":`, c.Role)
	e.str(`,"sha256":`, c.SHA256)
	if c.Duplicate {
		e.b = append(e.b, `,"duplicate":true`...)
	}
	e.str(`,"status":`, c.Status)
	e.strOmit(`,"reason":`, c.Reason)
	e.strOmit(`,"issuer":`, c.Issuer)
	e.strOmit(`,"serial_number":`, c.SerialNumber)
	e.b = append(e.b, '}')
}

// certificate writes the member name and c, nothing when c is nil (omitempty).
func (e *recordEncoder) certificate(name string, c *Certificate) {
	if c == nil {
		return
	}
	e.str(name+`{"subject":`, c.Subject)
	e.str(`,"issuer":`, c.Issuer)
	e.str(`,"serial_number":`, c.SerialNumber)
	e.time(`,"not_before":`, c.NotBefore)
	e.time(`,"not_after":`, c.NotAfter)
	e.str(`,"sha256":`, c.SHA256)
	e.str(`,"pem":`, c.PEM)
	e.b = append(e.b, '}')
}

// list writes a slice as encoding/json does: null when nil, else an array of fn's elements.
func list[T any](e *recordEncoder, l []T, fn func(*recordEncoder, *T)) {
	if l == nil {
		e.b = append(e.b, "null"...)
		return
	}
	e.b = append(e.b, '[')
	for i := range l {
		if i > 0 {
			e.b = append(e.b, ',')
		}
		fn(e, &l[i])
	}
	e.b = append(e.b, ']')
}

func (e *recordEncoder) str(prefix, s string) {
	e.b = append(e.b, prefix...)
	e.quote(s)
}

func (e *recordEncoder) strOmit(prefix, s string) {
	if s != "" {
		e.str(prefix, s)
	}
}

func (e *recordEncoder) strsOmit(prefix string, l []string) {
	if len(l) == 0 {
		return
	}
	e.b = append(e.b, prefix...)
	for i, s := range l {
		e.sep(i, '[')
		e.quote(s)
	}
	e.b = append(e.b, ']')
}

// strMapOmit writes a map[string]string, its keys in increasing order as encoding/json sorts
// them; nothing when it is empty (omitempty).
func (e *recordEncoder) strMapOmit(prefix string, m map[string]string) {
	if len(m) == 0 {
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	e.b = append(e.b, prefix...)
	for i, k := range keys {
		e.sep(i, '{')
		e.quote(k)
		e.b = append(e.b, ':')
		e.quote(m[k])
	}
	e.b = append(e.b, '}')
}

// sep writes open before element 0, a comma before the others.
func (e *recordEncoder) sep(i int, open byte) {
	if i == 0 {
		e.b = append(e.b, open)
	} else {
		e.b = append(e.b, ',')
	}
}

func (e *recordEncoder) uint(prefix string, v uint64) {
	e.b = strconv.AppendUint(append(e.b, prefix...), v, 10)
}

func (e *recordEncoder) uintOmit(prefix string, v uint64) {
	if v != 0 {
		e.uint(prefix, v)
	}
}

func (e *recordEncoder) int(prefix string, v int64) {
	e.b = strconv.AppendInt(append(e.b, prefix...), v, 10)
}

func (e *recordEncoder) intOmit(prefix string, v int64) {
	if v != 0 {
		e.int(prefix, v)
	}
}

// floatOmit writes a non-zero float64 as encoding/json does in its decimal form; one it would
// write with an exponent (or refuse) is left to encoding/json.
func (e *recordEncoder) floatOmit(prefix string, f float64) {
	if f == 0 {
		return
	}
	if abs := math.Abs(f); math.IsNaN(f) || abs < 1e-6 || abs >= 1e21 {
		e.ok = false
		return
	}
	e.b = strconv.AppendFloat(append(e.b, prefix...), f, 'f', -1, 64)
}

// time writes t as its MarshalJSON does; a time it refuses is left to encoding/json.
func (e *recordEncoder) time(prefix string, t time.Time) {
	e.b = append(e.b, prefix...)
	e.b = append(e.b, '"')
	n0 := len(e.b)
	e.b = t.AppendFormat(e.b, time.RFC3339Nano)
	// time.Time.MarshalJSON's checks: a four-digit year, a zone less than 24 hours off UTC.
	b := e.b[n0:]
	switch {
	case len(b) < 5 || b[4] != '-':
		e.ok = false
	case b[len(b)-1] != 'Z':
		z := b[len(b)-len("Z07:00"):]
		if (z[0] >= '0' && z[0] <= '9') || 10*(z[1]-'0')+(z[2]-'0') >= 24 {
			e.ok = false
		}
	}
	e.b = append(e.b, '"')
}

func (e *recordEncoder) timePtr(prefix string, t *time.Time) {
	if t != nil {
		e.time(prefix, *t)
	}
}

const hexDigits = "0123456789abcdef"

// quote writes s as a JSON string as encoding/json does (HTML-safe: <, > and & escaped;
// invalid UTF-8 as U+FFFD; U+2028 and U+2029 escaped).
func (e *recordEncoder) quote(s string) {
	e.b = append(e.b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			e.b = append(e.b, s[start:i]...)
			switch c {
			case '"', '\\':
				e.b = append(e.b, '\\', c)
			case '\b':
				e.b = append(e.b, '\\', 'b')
			case '\f':
				e.b = append(e.b, '\\', 'f')
			case '\n':
				e.b = append(e.b, '\\', 'n')
			case '\r':
				e.b = append(e.b, '\\', 'r')
			case '\t':
				e.b = append(e.b, '\\', 't')
			default:
				e.b = append(e.b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			e.b = append(append(e.b, s[start:i]...), `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			e.b = append(append(e.b, s[start:i]...), '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	e.b = append(append(e.b, s[start:]...), '"')
}
