package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
)

// A ListUnits page token is opaque to callers: base64url (no padding) of a version byte, 8
// bytes naming the request's filters, the last serial of the page, and 8 bytes of SHA-256 over
// a domain string and all of the above. It names a position in serial order, so it stays valid
// while units are added; it is no secret and grants nothing (any caller may list from any
// serial). A token that was changed, cut, or used with other filters is refused with
// InvalidArgument.
const (
	pageTokenVersion = 1
	pageTokenDomain  = "devid-station/list-units-page/v1\x00"
	pageTokenSum     = 8
)

// filterSum names the filters of req in a token.
func filterSum(req *stationv1.ListUnitsRequest) []byte {
	h := sha256.New()
	for _, f := range []string{fmt.Sprint(int32(req.GetStatus())), req.GetWorkOrder(), req.GetErrorCode()} {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(f))))
		h.Write([]byte(f))
	}
	return h.Sum(nil)[:pageTokenSum]
}

func tokenSum(b []byte) []byte {
	h := sha256.Sum256(append([]byte(pageTokenDomain), b...))
	return h[:pageTokenSum]
}

// pageToken is the token that continues req's listing after serial.
func pageToken(req *stationv1.ListUnitsRequest, serial string) string {
	b := append([]byte{pageTokenVersion}, filterSum(req)...)
	b = append(b, serial...)
	return base64.RawURLEncoding.EncodeToString(append(b, tokenSum(b)...))
}

// parsePageToken returns the serial req's page token continues after ("" without a token).
func parsePageToken(req *stationv1.ListUnitsRequest) (string, error) {
	t := req.GetPageToken()
	if t == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(t)
	switch {
	case err != nil || len(b) < 1+2*pageTokenSum || b[0] != pageTokenVersion:
		return "", fmt.Errorf("page_token is not a token this station issued: %w", ErrInvalidRequest)
	case !bytes.Equal(tokenSum(b[:len(b)-pageTokenSum]), b[len(b)-pageTokenSum:]):
		return "", fmt.Errorf("page_token was changed: %w", ErrInvalidRequest)
	case !bytes.Equal(b[1:1+pageTokenSum], filterSum(req)):
		return "", fmt.Errorf("page_token belongs to a listing with other filters (status, work_order, error_code): %w", ErrInvalidRequest)
	}
	return string(b[1+pageTokenSum : len(b)-pageTokenSum]), nil
}
