package tpm

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
)

// maxResponse bounds a TPM response read from a stream (TPM2 responses are far smaller).
const maxResponse = 64 << 10

// streamTPM speaks raw TPM 2.0 commands over one stream connection, as swtpm's data channel
// does (swtpm 0.7 has no MS-simulator framing). It frames responses by the size in their
// header and reads them fully, so a response split over several segments is never cut short.
type streamTPM struct {
	mu   sync.Mutex
	conn net.Conn
}

var _ transport.TPMCloser = (*streamTPM)(nil)

// dialStream connects to a raw TPM command stream.
func dialStream(ctx context.Context, network, addr string) (*streamTPM, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &streamTPM{conn: c}, nil
}

// TPM warnings after which a command is sent again (TPM 2.0 Part 2, 6.6.3).
const (
	rcYielded = 0x908
	rcTesting = 0x90A
	rcRetry   = 0x922
)

// Send implements transport.TPM. It resends a command the TPM answers with TPM_RC_RETRY,
// TPM_RC_YIELDED or TPM_RC_TESTING, backing off from 1 ms to about 1 s in total.
func (s *streamTPM) Send(cmd []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for backoff := time.Millisecond; ; backoff *= 2 {
		rsp, err := s.roundTrip(cmd)
		if err != nil {
			return nil, err
		}
		switch binary.BigEndian.Uint32(rsp[6:10]) {
		case rcRetry, rcYielded, rcTesting:
			if backoff < 512*time.Millisecond {
				time.Sleep(backoff)
				continue
			}
		}
		return rsp, nil
	}
}

// roundTrip sends one command and reads its whole response.
func (s *streamTPM) roundTrip(cmd []byte) ([]byte, error) {
	if _, err := s.conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("sending TPM command: %w", err)
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(s.conn, hdr); err != nil {
		return nil, fmt.Errorf("reading TPM response header: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > maxResponse {
		return nil, fmt.Errorf("reading TPM response: bad size %d", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	if _, err := io.ReadFull(s.conn, rsp[10:]); err != nil {
		return nil, fmt.Errorf("reading TPM response: %w", err)
	}
	return rsp, nil
}

// Close implements io.Closer.
func (s *streamTPM) Close() error { return s.conn.Close() }
