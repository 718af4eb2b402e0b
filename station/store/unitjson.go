package store

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"time"
)

// encodeUnit returns u's JSON encoding, byte for byte what encoding/json makes of it: every
// journal write of a unit stores its whole state, and encoding/json spends most of that by
// reflection (map keys sorted through reflect values, times through MarshalJSON). It spells
// the fields out in their declared order with their tags' names and omitempty/omitzero rules;
// strings that need escaping and times encoding/json refuses go through encoding/json.
// TestEncodeUnit holds it to encoding/json, field list included.
func encodeUnit(u *UnitState) ([]byte, error) {
	return appendUnit(make([]byte, 0, unitSizeHint(u)), u)
}

// unitSizeHint is about the size of u's JSON encoding.
func unitSizeHint(u *UnitState) int {
	return 512 + 160*len(u.Steps) + 64*len(u.Keys) + 256*len(u.Certificates)
}

// appendUnit appends encodeUnit(u) to b.
func appendUnit(b []byte, u *UnitState) ([]byte, error) {
	e := unitEncoder{b: b}
	e.str(`{"serial":`, u.Serial)
	e.strOmit(`,"work_order_id":`, u.WorkOrderID)
	e.strOmit(`,"profile":`, u.Profile)
	e.strOmit(`,"ek_fingerprint":`, u.EKFingerprint)
	e.strOmit(`,"ek_cert_sha256":`, u.EKCertSHA256)
	e.strOmit(`,"fixture_slot":`, u.FixtureSlot)
	e.strOmit(`,"current_step":`, u.CurrentStep)
	e.str(`,"status":`, string(u.Status))
	e.strOmit(`,"error_code":`, u.ErrorCode)
	e.strOmit(`,"error_message":`, u.ErrorMessage)
	e.uint(`,"attempts":`, u.Attempts)
	if len(u.Steps) > 0 {
		e.b = append(e.b, `,"steps":{`...)
		for i, name := range sortedKeys(u.Steps) {
			s := u.Steps[name]
			if i > 0 {
				e.b = append(e.b, ',')
			}
			e.str("", name)
			e.uint(`:{"attempts":`, s.Attempts)
			e.time(`,"started_at":`, s.StartedAt)
			if !s.EndedAt.IsZero() {
				e.time(`,"ended_at":`, s.EndedAt)
			}
			e.strOmit(`,"error_code":`, s.ErrorCode)
			e.b = append(e.b, '}')
		}
		e.b = append(e.b, '}')
	}
	if len(u.Keys) > 0 {
		e.b = append(e.b, `,"keys":{`...)
		for i, role := range sortedKeys(u.Keys) {
			k := u.Keys[role]
			if i > 0 {
				e.b = append(e.b, ',')
			}
			e.str("", role)
			e.uint(`:{"handle":`, uint64(k.Handle))
			if len(k.Name) > 0 {
				e.b = append(e.b, `,"name":"`...)
				e.b = base64.StdEncoding.AppendEncode(e.b, k.Name)
				e.b = append(e.b, '"')
			}
			e.b = append(e.b, '}')
		}
		e.b = append(e.b, '}')
	}
	if len(u.Certificates) > 0 {
		e.b = append(e.b, `,"certificates":[`...)
		for i, c := range u.Certificates {
			if i > 0 {
				e.b = append(e.b, ',')
			}
			e.str(`{"role":`, string(c.Role))
			e.str(`,"sha256":`, c.SHA256)
			e.str(`,"issuer_hash":`, c.IssuerHash)
			e.str(`,"serial_hex":`, c.SerialHex)
			if c.Duplicate {
				e.b = append(e.b, `,"duplicate":true`...)
			}
			e.strOmit(`,"status":`, string(c.Status))
			e.strOmit(`,"reason":`, c.Reason)
			e.b = append(e.b, '}')
		}
		e.b = append(e.b, ']')
	}
	if u.Rework != nil {
		e.rework(`,"rework":`, u.Rework)
	}
	if len(u.Reworks) > 0 {
		e.b = append(e.b, `,"reworks":[`...)
		for i := range u.Reworks {
			sep := ","
			if i == 0 {
				sep = ""
			}
			e.rework(sep, &u.Reworks[i])
		}
		e.b = append(e.b, ']')
	}
	e.time(`,"created_at":`, u.CreatedAt)
	e.time(`,"updated_at":`, u.UpdatedAt)
	e.b = append(e.b, '}')
	return e.b, e.err
}

// unitEncoder appends JSON to b; the first error sticks.
type unitEncoder struct {
	b   []byte
	err error
}

func (e *unitEncoder) rework(prefix string, r *Rework) {
	e.str(prefix+`{"by":`, r.By)
	e.str(`,"reason":`, r.Reason)
	e.time(`,"authorized_at":`, r.AuthorizedAt)
	if !r.UsedAt.IsZero() {
		e.time(`,"used_at":`, r.UsedAt)
	}
	e.b = append(e.b, '}')
}

func (e *unitEncoder) uint(prefix string, n uint64) {
	e.b = strconv.AppendUint(append(e.b, prefix...), n, 10)
}

func (e *unitEncoder) strOmit(prefix, s string) {
	if s != "" {
		e.str(prefix, s)
	}
}

// str appends prefix and s as a JSON string: directly when it holds only printable ASCII that
// encoding/json writes as it is (it escapes <, > and & too), else as encoding/json writes it.
func (e *unitEncoder) str(prefix, s string) {
	e.b = append(e.b, prefix...)
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			e.marshal(s)
			return
		}
	}
	e.b = append(append(append(e.b, '"'), s...), '"')
}

// time appends prefix and t as time.Time.MarshalJSON does (RFC 3339 with nanoseconds): directly
// for the store's UTC times of years 0 to 9999, else through encoding/json (which refuses some).
func (e *unitEncoder) time(prefix string, t time.Time) {
	e.b = append(e.b, prefix...)
	if _, off := t.Zone(); off != 0 || t.Year() < 0 || t.Year() > 9999 {
		e.marshal(t)
		return
	}
	e.b = append(t.AppendFormat(append(e.b, '"'), time.RFC3339Nano), '"')
}

func (e *unitEncoder) marshal(v any) {
	b, err := json.Marshal(v)
	if err != nil && e.err == nil {
		e.err = err
	}
	e.b = append(e.b, b...)
}

// sortedKeys returns m's keys in encoding/json's order for map keys.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// decodeUnitJSON decodes a unit's stored JSON as json.Unmarshal does into a zero UnitState:
// reading a unit (a traveler, a QA export) spent most of it in encoding/json's reflection.
// decodeUnitFast reads the plain form encodeUnit writes (recjson.go) and declines anything
// else to encoding/json; TestDecodeUnit and FuzzRecordJSON hold it to json.Unmarshal.
func decodeUnitJSON(data []byte, u *UnitState) error {
	return decodePlain(data, u, decodeUnitFast)
}

// decodeUnitFast decodes data when it is in the plain form into exactly the value
// json.Unmarshal decodes from it; ok false leaves *u undefined.
func decodeUnitFast(data []byte, u *UnitState) (ok bool) {
	*u = UnitState{}
	r := objReader{b: data}
	if !r.open() {
		return false
	}
	for _, f := range [...]struct {
		name string
		s    *string
	}{{"serial", &u.Serial}, {"work_order_id", &u.WorkOrderID}, {"profile", &u.Profile},
		{"ek_fingerprint", &u.EKFingerprint}, {"ek_cert_sha256", &u.EKCertSHA256}, {"fixture_slot", &u.FixtureSlot},
		{"current_step", &u.CurrentStep}} {
		if r.key(f.name) {
			*f.s = r.str()
		}
	}
	if r.key("status") {
		u.Status = Status(r.str())
	}
	if r.key("error_code") {
		u.ErrorCode = r.str()
	}
	if r.key("error_message") {
		u.ErrorMessage = r.str()
	}
	if r.key("attempts") {
		u.Attempts = r.uint()
	}
	if r.key("steps") {
		u.Steps = objMap(&r, func(s *StepSummary) {
			if r.key("attempts") {
				s.Attempts = r.uint()
			}
			if r.key("started_at") {
				s.StartedAt = r.time()
			}
			if r.key("ended_at") {
				s.EndedAt = r.time()
			}
			if r.key("error_code") {
				s.ErrorCode = r.str()
			}
		})
	}
	if r.key("keys") {
		u.Keys = objMap(&r, func(k *KeyRef) {
			if r.key("handle") {
				if h := r.uint(); h <= math.MaxUint32 {
					k.Handle = uint32(h)
				} else {
					r.bad = true
				}
			}
			if r.key("name") {
				k.Name = r.bin()
			}
		})
	}
	if r.key("certificates") {
		u.Certificates = objList(&r, func(c *CertRef) {
			if r.key("role") {
				c.Role = Role(r.str())
			}
			if r.key("sha256") {
				c.SHA256 = r.str()
			}
			if r.key("issuer_hash") {
				c.IssuerHash = r.str()
			}
			if r.key("serial_hex") {
				c.SerialHex = r.str()
			}
			if r.key("duplicate") {
				c.Duplicate = r.bool()
			}
			if r.key("status") {
				c.Status = CertStatus(r.str())
			}
			if r.key("reason") {
				c.Reason = r.str()
			}
		})
	}
	rework := func(w *Rework) {
		if r.key("by") {
			w.By = r.str()
		}
		if r.key("reason") {
			w.Reason = r.str()
		}
		if r.key("authorized_at") {
			w.AuthorizedAt = r.time()
		}
		if r.key("used_at") {
			w.UsedAt = r.time()
		}
	}
	if r.key("rework") {
		u.Rework = new(Rework)
		r.object(func() { rework(u.Rework) })
	}
	if r.key("reworks") {
		u.Reworks = objList(&r, rework)
	}
	if r.key("created_at") {
		u.CreatedAt = r.time()
	}
	if r.key("updated_at") {
		u.UpdatedAt = r.time()
	}
	return r.close()
}
