package reconcile

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// MaxLog bounds an issuance log read by ParseLog: it fits one API call (4 MiB).
const MaxLog = 4<<20 - 64<<10

// ParseLog reads a CA's issuance log: JSON lines (one object per line with the certificate in
// "der", base64, and optionally "csr_sha256" and "time", RFC 3339 — the dev EST CA's ledger is
// such a file) or CSV with a header row naming the columns "der" (base64) or "pem", and
// optionally "csr_sha256" and "time".
func ParseLog(r io.Reader) ([]Issued, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxLog+1))
	if err != nil {
		return nil, fmt.Errorf("reading the issuance log: %w", err)
	}
	if len(data) > MaxLog {
		return nil, fmt.Errorf("issuance log larger than %d bytes", MaxLog)
	}
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		return parseJSONLines(data)
	}
	return parseCSV(data)
}

func parseJSONLines(data []byte) ([]Issued, error) {
	var out []Issued
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, MaxLog)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var e struct {
			DER       []byte    `json:"der"`
			CSRSHA256 string    `json:"csr_sha256"`
			Time      time.Time `json:"time"`
		}
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("issuance log line %d: %w", n, err)
		}
		if len(e.DER) == 0 {
			return nil, fmt.Errorf("issuance log line %d: no certificate (der)", n)
		}
		out = append(out, Issued{DER: e.DER, CSRSHA256: strings.ToLower(e.CSRSHA256), Time: e.Time})
	}
	return out, sc.Err()
}

func parseCSV(data []byte) ([]Issued, error) {
	rows, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("issuance log (CSV): %w", err)
	}
	if len(rows) == 0 {
		return nil, errors.New("issuance log is empty")
	}
	col := func(name string) int {
		return slices.IndexFunc(rows[0], func(h string) bool { return strings.EqualFold(strings.TrimSpace(h), name) })
	}
	der, pemCol, csrCol, timeCol := col("der"), col("pem"), col("csr_sha256"), col("time")
	if der < 0 && pemCol < 0 {
		return nil, errors.New(`issuance log (CSV): the header names no "der" or "pem" column`)
	}
	var out []Issued
	for i, row := range rows[1:] {
		var e Issued
		switch {
		case der >= 0:
			if e.DER, err = base64.StdEncoding.DecodeString(strings.TrimSpace(row[der])); err != nil {
				return nil, fmt.Errorf("issuance log row %d: der: %w", i+2, err)
			}
		default:
			b, _ := pem.Decode([]byte(row[pemCol]))
			if b == nil || b.Type != "CERTIFICATE" {
				return nil, fmt.Errorf("issuance log row %d: pem: no certificate", i+2)
			}
			e.DER = b.Bytes
		}
		if csrCol >= 0 {
			e.CSRSHA256 = strings.ToLower(strings.TrimSpace(row[csrCol]))
		}
		if timeCol >= 0 && strings.TrimSpace(row[timeCol]) != "" {
			if e.Time, err = time.Parse(time.RFC3339Nano, strings.TrimSpace(row[timeCol])); err != nil {
				return nil, fmt.Errorf("issuance log row %d: time: %w", i+2, err)
			}
		}
		out = append(out, e)
	}
	return out, nil
}
