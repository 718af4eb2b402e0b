package store

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bRefused holds the most recent refused sessions in Options.RefusalsKept slots; it is created
// by the first RecordRefusal (older store files do not have it).
var bRefused = []byte("refused")

// DefaultRefusalsKept is how many refused sessions the store keeps when Options.RefusalsKept
// is 0.
const DefaultRefusalsKept = 4096

// Bounds of a Refusal's fields: RecordRefusal cuts longer values.
const (
	refusalFieldMax   = 128
	refusalMessageMax = 256
	refusalFPsMax     = 4
)

// Refusal is what the store keeps of an agent session refused before it passed its first
// checks (EK certificate chain verified, serial in an open work order): who connected, what it
// claimed, the fingerprints it showed and why it was refused. Its size is bounded, and the
// store keeps only the most recent ones (a ring of Options.RefusalsKept), so a flood of junk
// sessions cannot grow the store. Refusals are not in the audit chain, which only grows.
type Refusal struct {
	// Seq numbers refusals since the store was created.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Peer is the agent's network address.
	Peer string `json:"peer,omitempty"`
	// Serial and BootID are the agent's claims.
	Serial string `json:"serial,omitempty"`
	BootID string `json:"boot_id,omitempty"`
	// Code is the workflow's stable code; Message explains it.
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
	// Fingerprints are the EK fingerprint and EK certificate digests the session showed.
	Fingerprints []string `json:"fingerprints,omitempty"`
}

// clip cuts s to at most n bytes of valid UTF-8.
func clip(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.ToValidUTF8(s, "")
}

// bounded returns r with every field cut to its bound.
func (r Refusal) bounded() Refusal {
	r.Peer, r.Serial, r.BootID = clip(r.Peer, refusalFieldMax), clip(r.Serial, refusalFieldMax), clip(r.BootID, refusalFieldMax)
	r.Code, r.Message = clip(r.Code, refusalFieldMax), clip(r.Message, refusalMessageMax)
	if len(r.Fingerprints) > refusalFPsMax {
		r.Fingerprints = r.Fingerprints[:refusalFPsMax]
	}
	fps := make([]string, 0, len(r.Fingerprints))
	for _, f := range r.Fingerprints {
		fps = append(fps, clip(f, refusalFieldMax))
	}
	r.Fingerprints = fps
	return r
}

// RecordRefusal keeps a bounded record of a refused session (Seq and Time are filled in) in
// the ring's next slot, overwriting the oldest record once the ring is full. It writes nothing else: no unit, event,
// outbox entry or audit record.
func (s *Store) RecordRefusal(ctx context.Context, r Refusal) error {
	if r.Code == "" {
		return fmt.Errorf("refusal: code: %w", ErrInvalidArgument)
	}
	r = r.bounded()
	return s.update(ctx, func(w *wtx) error {
		b, err := w.tx.CreateBucketIfNotExists(bRefused)
		if err != nil {
			return err
		}
		rec := r
		if rec.Seq, err = b.NextSequence(); err != nil {
			return err
		}
		rec.Time = w.now
		// A ring of fixed slots: a later refusal overwrites the oldest one.
		slot := (rec.Seq - 1) % uint64(w.s.refusalsKept)
		return put(b, u64key(slot), &rec)
	})
}

// Refusals returns the refused sessions the store still keeps, oldest first, and how many
// were recorded in all (the ones beyond the ring are gone).
func (s *Store) Refusals(ctx context.Context) ([]Refusal, uint64, error) {
	var out []Refusal
	var total uint64
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bRefused)
		if b == nil {
			return nil
		}
		total = b.Sequence()
		return b.ForEach(func(k, v []byte) error {
			var r Refusal
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decoding refusal slot %d: %w", binary.BigEndian.Uint64(k), err)
			}
			// Slots beyond a ring that was made smaller hold older refusals.
			if r.Seq+uint64(s.refusalsKept) > total {
				out = append(out, r)
			}
			return nil
		})
	})
	slices.SortFunc(out, func(a, b Refusal) int { return cmp.Compare(a.Seq, b.Seq) })
	return out, total, err
}
