package reserved

import "testing"

func TestEndorsement(t *testing.T) {
	for _, tc := range []struct {
		v    uint32
		want bool
	}{
		{0x81010000, true}, {0x81010001, true}, {0x81010002, true}, {0x810100FF, true},
		{0x8100FFFF, false}, {0x81010100, false}, {0x81000001, false}, {0x81020000, false},
		{0x01C00000, true}, {0x01C00002, true}, {0x01C0000A, true}, {0x01C00016, true}, {0x01C00100, true}, {0x01C07FFF, true},
		{0x01BFFFFF, false}, {0x01C08000, false}, {0x01C90000, false}, {0x01500000, false},
	} {
		if got := Endorsement(tc.v); got != tc.want {
			t.Errorf("Endorsement(%#x) = %v, want %v", tc.v, got, tc.want)
		}
	}
}
