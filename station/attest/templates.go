package attest

import (
	"bytes"
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/devid-station/devid/device-agent/tpm/tcgek"
	"github.com/google/go-tpm/tpm2"
)

// template is a public area parsed before, its unique field aside: every unit of a line
// reports its EK and its DevID keys in the same few templates, and go-tpm decodes and encodes
// a public area by reflection (most of the cost of a key check, and most of its garbage).
//
// A TPMT_PUBLIC is a sequence of fields decoded one after the other, the unique field last,
// its type chosen by the type field. A public area that starts with the bytes of a template
// (prefix) therefore decodes to the template's fields whatever follows them; only the unique
// field is left to decode, and its encoding is one TPM2B (RSA) or two (ECC), decoded here
// without reflection and refused unless they fill the rest exactly. The result is what
// decoding the whole area with go-tpm and checking its encoding is canonical gives
// (TestTemplateMemoMatchesFullParse).
type template struct {
	// prefix is the canonical encoding of the fields before unique.
	prefix []byte
	// pub is their decoding; its Unique is replaced by each public area's own. Its Parameters
	// are shared by every Key parsed through the template: nothing may modify them.
	pub tpm2.TPMTPublic
	// ekType is the TCG EK type the template follows, if ekOK (tcgek.Match reads every field
	// but unique).
	ekType tcgek.Type
	ekOK   bool
}

// templatesMax bounds the templates remembered; the memo starts over when full (a line uses
// a handful: its EK types and its DevID key templates).
const templatesMax = 16

var (
	// templates holds the remembered templates; the slice is never modified, only replaced
	// (under templatesMu).
	templates   atomic.Pointer[[]*template]
	templatesMu sync.Mutex
)

// parseMemo decodes raw through a remembered template; ok is false when none applies (the
// caller decodes raw in full).
func parseMemo(raw []byte) (pub tpm2.TPMTPublic, t *template, ok bool) {
	list := templates.Load()
	if list == nil {
		return pub, nil, false
	}
	for _, t := range *list {
		if !bytes.HasPrefix(raw, t.prefix) {
			continue
		}
		unique, ok := parseUnique(t.pub.Type, raw[len(t.prefix):])
		if !ok {
			continue
		}
		pub = t.pub
		pub.Unique = unique
		return pub, t, true
	}
	return pub, nil, false
}

// remember keeps the template of pub, whose canonical encoding is raw.
func remember(pub *tpm2.TPMTPublic, raw []byte) *template {
	n, ok := uniqueLen(pub)
	if !ok || n > len(raw) {
		return nil
	}
	prefix := raw[:len(raw)-n]
	if _, ok := parseUnique(pub.Type, raw[len(prefix):]); !ok {
		return nil
	}
	t := &template{prefix: bytes.Clone(prefix), pub: *pub}
	t.pub.Unique = tpm2.TPMUPublicID{}
	t.ekType, t.ekOK = tcgek.Match(*pub)
	templatesMu.Lock()
	defer templatesMu.Unlock()
	var list []*template
	if old := templates.Load(); old != nil && len(*old) < templatesMax {
		list = append(list, *old...)
	}
	list = append(list, t)
	templates.Store(&list)
	return t
}

// uniqueLen is the length of the encoding of pub's unique field, for the types parseUnique
// decodes.
func uniqueLen(pub *tpm2.TPMTPublic) (int, bool) {
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		n, err := pub.Unique.RSA()
		if err != nil {
			return 0, false
		}
		return 2 + len(n.Buffer), true
	case tpm2.TPMAlgECC:
		p, err := pub.Unique.ECC()
		if err != nil {
			return 0, false
		}
		return 4 + len(p.X.Buffer) + len(p.Y.Buffer), true
	}
	return 0, false
}

// parseUnique decodes b as the whole unique field of a public area of type typ: an RSA
// modulus (TPM2B_PUBLIC_KEY_RSA) or an ECC point (TPMS_ECC_POINT, two TPM2B_ECC_PARAMETER).
// The buffers alias b.
func parseUnique(typ tpm2.TPMAlgID, b []byte) (tpm2.TPMUPublicID, bool) {
	switch typ {
	case tpm2.TPMAlgRSA:
		n, rest, ok := tpm2b(b)
		if !ok || len(rest) != 0 {
			return tpm2.TPMUPublicID{}, false
		}
		return tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: n}), true
	case tpm2.TPMAlgECC:
		x, rest, ok := tpm2b(b)
		if !ok {
			return tpm2.TPMUPublicID{}, false
		}
		y, rest, ok := tpm2b(rest)
		if !ok || len(rest) != 0 {
			return tpm2.TPMUPublicID{}, false
		}
		return tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y}}), true
	}
	return tpm2.TPMUPublicID{}, false
}

// tpm2b splits a TPM2B (a big-endian uint16 size, then that many bytes) off b.
func tpm2b(b []byte) (buf, rest []byte, ok bool) {
	if len(b) < 2 {
		return nil, nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b)-2 < n {
		return nil, nil, false
	}
	return b[2 : 2+n : 2+n], b[2+n:], true
}
