package traveler

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/journal"
)

// The identify report is stored three times encoded: its messages in protojson inside a JSON
// object (journal.Identify's stored form), that object as a string in verify_ek's intent, the
// intent as base64 in the step record. Decoding it with encoding/json, then protojson, was the
// most expensive part of a traveler. decodeIdentifyIntent reads the form the station writes
// (every string plain, no whitespace, each member once, the messages' fields by their proto
// names in their canonical JSON form) in one pass and declines anything else to the decoders
// it stands in for, so that the report read is always the one they read: TestIdentifyIntent
// and FuzzIdentifyIntent hold it to them.

// decodeIdentifyIntent returns the identify report of a verify_ek intent: the zero Identify
// when the intent holds none, an error when the intent or the report does not decode.
func decodeIdentifyIntent(intent []byte) (journal.Identify, error) {
	if id, ok := identifyIntentFast(intent); ok {
		return id, nil
	}
	return identifyIntentSlow(intent)
}

// identifyIntentSlow is decodeIdentifyIntent with encoding/json and protojson.
func identifyIntentSlow(intent []byte) (journal.Identify, error) {
	var in journal.Intent
	if err := json.Unmarshal(intent, &in); err != nil {
		return journal.Identify{}, fmt.Errorf("decoding the verify_ek intent: %w", err)
	}
	var id journal.Identify
	if raw := in.Identify; raw != "" {
		if err := json.Unmarshal([]byte(raw), &id); err != nil {
			return journal.Identify{}, fmt.Errorf("decoding the identify report: %w", err)
		}
	}
	return id, nil
}

// intentFields are journal.Intent's members, by their JSON names; all are strings.
var intentFields = [...]string{"ca", "csr_sha256", "identify", "key_name", "public_key_sha256", "step"}

// identifyIntentFast decodes intent in the form the station writes; ok false when it is not.
func identifyIntentFast(intent []byte) (id journal.Identify, ok bool) {
	r := jsonReader{b: intent}
	var report []byte
	seen := 0
	if !r.eat('{') {
		return id, false
	}
	for i := 0; !r.eat('}'); i++ {
		if i > 0 && !r.eat(',') {
			return id, false
		}
		k := r.plain()
		if !r.eat(':') {
			return id, false
		}
		f := -1
		for j, name := range intentFields {
			if string(k) == name {
				f = j
			}
		}
		if f < 0 || seen&(1<<f) != 0 {
			return id, false // another member (encoding/json matches names loosely) or twice
		}
		seen |= 1 << f
		if intentFields[f] == "identify" {
			report = r.unescaped()
		} else {
			r.plain()
		}
		if r.bad {
			return id, false
		}
	}
	if r.bad || len(r.b) != 0 {
		return id, false
	}
	if len(report) == 0 {
		return id, true
	}
	return identifyFast(report)
}

// identifyFast decodes an identify report (journal.Identify's stored form) written as the
// station writes it; ok false when it is not.
func identifyFast(report []byte) (id journal.Identify, ok bool) {
	r := jsonReader{b: report}
	seen := 0
	if !r.eat('{') {
		return id, false
	}
	for i := 0; !r.eat('}'); i++ {
		if i > 0 && !r.eat(',') {
			return id, false
		}
		k := string(r.plain())
		if !r.eat(':') {
			return id, false
		}
		var f int
		switch k {
		case "info":
			f, id.Info = 0, &agentv1.InfoResult{}
			r.message(id.Info)
		case "eks":
			f = 1
			if !r.eat('[') {
				return id, false
			}
			for j := 0; !r.eat(']'); j++ {
				if j > 0 && !r.eat(',') {
					return id, false
				}
				ek := &agentv1.EndorsementKey{}
				r.message(ek)
				if r.bad {
					return id, false
				}
				id.EKs = append(id.EKs, ek)
			}
		case "chain":
			f, id.Chain = 2, [][]byte{}
			if !r.eat('[') {
				return id, false
			}
			for j := 0; !r.eat(']'); j++ {
				if j > 0 && !r.eat(',') {
					return id, false
				}
				id.Chain = append(id.Chain, r.base64())
				if r.bad {
					return id, false
				}
			}
		case "hello":
			f, id.Hello = 3, &agentv1.Hello{}
			r.message(id.Hello)
		default:
			return id, false
		}
		if r.bad || seen&(1<<f) != 0 {
			return id, false
		}
		seen |= 1 << f
	}
	return id, !r.bad && len(r.b) == 0
}

// jsonReader reads JSON of the plain form; any other input makes it bad (and its results
// meaningless).
type jsonReader struct {
	b   []byte
	bad bool
}

// eat consumes c when the input continues with it.
func (r *jsonReader) eat(c byte) bool {
	if r.bad || len(r.b) == 0 || r.b[0] != c {
		return false
	}
	r.b = r.b[1:]
	return true
}

// plain reads a quoted string of printable ASCII without escapes and returns its bytes (no
// copy).
func (r *jsonReader) plain() []byte {
	if r.bad || len(r.b) == 0 || r.b[0] != '"' {
		r.bad = true
		return nil
	}
	for i := 1; i < len(r.b); i++ {
		switch c := r.b[i]; {
		case c == '"':
			s := r.b[1:i]
			r.b = r.b[i+1:]
			return s
		case c < 0x20 || c > 0x7e || c == '\\':
			r.bad = true
			return nil
		}
	}
	r.bad = true
	return nil
}

// unescaped reads a quoted string of printable ASCII whose escapes are \", \\ and \u00XX of a
// printable ASCII character, and returns it unescaped (a copy).
func (r *jsonReader) unescaped() []byte {
	if r.bad || len(r.b) == 0 || r.b[0] != '"' {
		r.bad = true
		return nil
	}
	out := make([]byte, 0, len(r.b))
	for i := 1; i < len(r.b); i++ {
		c := r.b[i]
		switch {
		case c == '"':
			r.b = r.b[i+1:]
			return out
		case c < 0x20 || c > 0x7e:
			r.bad = true
			return nil
		case c != '\\':
			out = append(out, c)
			continue
		}
		if i+1 >= len(r.b) {
			break
		}
		switch r.b[i+1] {
		case '"', '\\':
			out = append(out, r.b[i+1])
			i++
			continue
		case 'u':
			if i+5 < len(r.b) {
				if v, err := strconv.ParseUint(string(r.b[i+2:i+6]), 16, 16); err == nil && v >= 0x20 && v <= 0x7e {
					out = append(out, byte(v))
					i += 5
					continue
				}
			}
		}
		break
	}
	r.bad = true
	return nil
}

// digits returns the decimal digits that follow, as encoding/json and protojson write an
// unsigned integer (no sign, no leading zero, no fraction or exponent).
func (r *jsonReader) digits() []byte {
	i := 0
	for i < len(r.b) && r.b[i] >= '0' && r.b[i] <= '9' {
		i++
	}
	if r.bad || i == 0 || (i > 1 && r.b[0] == '0') || (i < len(r.b) && (r.b[i] == '.' || r.b[i] == 'e' || r.b[i] == 'E')) {
		r.bad = true
		return nil
	}
	d := r.b[:i]
	r.b = r.b[i:]
	return d
}

// uint reads an unsigned integer of at most max, as a number or (quoted) a string.
func (r *jsonReader) uint(quoted bool, max uint64) uint64 {
	if quoted && !r.eat('"') {
		r.bad = true
		return 0
	}
	d := r.digits()
	if r.bad {
		return 0
	}
	v, err := strconv.ParseUint(string(d), 10, 64)
	if err != nil || v > max || (quoted && !r.eat('"')) {
		r.bad = true
		return 0
	}
	return v
}

// base64 reads a quoted string of standard base64 with its padding.
func (r *jsonReader) base64() []byte {
	s := r.plain()
	if r.bad || len(s)%4 != 0 {
		r.bad = true
		return nil
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(out, s)
	if err != nil {
		r.bad = true
		return nil
	}
	return out[:n]
}

// boolean reads true or false.
func (r *jsonReader) boolean() bool {
	switch {
	case r.bad:
	case len(r.b) >= 4 && string(r.b[:4]) == "true":
		r.b = r.b[4:]
		return true
	case len(r.b) >= 5 && string(r.b[:5]) == "false":
		r.b = r.b[5:]
		return false
	}
	r.bad = true
	return false
}

// message reads m as protojson writes it with its proto names: each field once, by its proto
// name, in the JSON form protojson writes for its kind. It reads the scalar kinds a report's
// messages have (unsigned integers, strings, bytes, bools, enums by name) and lists of them;
// anything else makes r bad.
func (r *jsonReader) message(m proto.Message) {
	pm := m.ProtoReflect()
	fields := pm.Descriptor().Fields()
	if !r.eat('{') {
		r.bad = true
		return
	}
	var seen [64]bool
	for i := 0; !r.eat('}'); i++ {
		if r.bad || (i > 0 && !r.eat(',')) {
			r.bad = true
			return
		}
		fd := fields.ByName(protoreflect.Name(r.plain()))
		if r.bad || fd == nil || !r.eat(':') || fd.Number() >= protoreflect.FieldNumber(len(seen)) || seen[fd.Number()] {
			r.bad = true // a JSON name, an unknown field (protojson skips it), or a field twice
			return
		}
		seen[fd.Number()] = true
		if !fd.IsList() {
			if v, ok := r.scalar(fd); ok {
				pm.Set(fd, v)
			}
			continue
		}
		if fd.IsMap() || !r.eat('[') {
			r.bad = true
			return
		}
		list := pm.Mutable(fd).List()
		for j := 0; !r.eat(']'); j++ {
			if r.bad || (j > 0 && !r.eat(',')) {
				r.bad = true
				return
			}
			if v, ok := r.scalar(fd); ok {
				list.Append(v)
			}
		}
	}
}

// scalar reads one value of fd's kind.
func (r *jsonReader) scalar(fd protoreflect.FieldDescriptor) (protoreflect.Value, bool) {
	var v protoreflect.Value
	switch fd.Kind() {
	case protoreflect.Uint32Kind:
		v = protoreflect.ValueOfUint32(uint32(r.uint(false, math.MaxUint32)))
	case protoreflect.Uint64Kind:
		v = protoreflect.ValueOfUint64(r.uint(true, math.MaxUint64))
	case protoreflect.StringKind:
		v = protoreflect.ValueOfString(string(r.plain()))
	case protoreflect.BytesKind:
		v = protoreflect.ValueOfBytes(r.base64())
	case protoreflect.BoolKind:
		v = protoreflect.ValueOfBool(r.boolean())
	case protoreflect.EnumKind:
		ev := fd.Enum().Values().ByName(protoreflect.Name(r.plain()))
		if ev == nil {
			r.bad = true
			break
		}
		v = protoreflect.ValueOfEnum(ev.Number())
	default:
		r.bad = true
	}
	return v, !r.bad
}
