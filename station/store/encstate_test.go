package store

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"
)

// encodeStateParts is encodeState as the parts put together: the format byte, the row's
// length and the row, then encodeUnit's JSON.
func encodeStateParts(u *UnitState) ([]byte, error) {
	js, err := encodeUnit(u)
	if err != nil {
		return nil, err
	}
	row := appendRow(nil, u)
	b := append([]byte{stateRowFormat}, binary.AppendUvarint(nil, uint64(len(row)))...)
	return append(append(b, row...), js...), nil
}

// TestEncodeState holds encodeState, which appends the JSON in place after the row, to the
// parts put together, on random states and on states whose times encodeUnit refuses.
func TestEncodeState(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	states := []UnitState{{}, {Serial: "SN", CreatedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}}
	for range 500 {
		states = append(states, randomUnit(rng))
	}
	for i, u := range states {
		got, gerr := encodeState(&u)
		want, werr := encodeStateParts(&u)
		if (gerr != nil) != (werr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("state %d: encodeState %q (%v), parts %q (%v)", i, got, gerr, want, werr)
		}
		if gerr == nil {
			row, js, err := splitState(got)
			if err != nil || !bytes.Equal(row, appendRow(nil, &u)) || !bytes.HasPrefix(js, []byte(`{`)) {
				t.Fatalf("state %d: split %q %q %v", i, row, js, err)
			}
		}
	}
}
