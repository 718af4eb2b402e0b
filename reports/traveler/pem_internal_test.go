package traveler

import (
	"encoding/pem"
	"testing"
)

// TestCertificatePEM holds certificatePEM to encoding/pem, at every length around the line
// and padding boundaries.
func TestCertificatePEM(t *testing.T) {
	for n := 0; n <= 200; n++ {
		der := make([]byte, n)
		for i := range der {
			der[i] = byte(i*7 + n)
		}
		want := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
		if got := certificatePEM(der); got != want {
			t.Fatalf("%d bytes: got\n%s\nwant\n%s", n, got, want)
		}
	}
}
