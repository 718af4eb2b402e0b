package reconcile

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// HTTPSearcher asks a CA's issuance search over HTTPS: GET URL?public_key_sha256=<hex>,
// answered with JSON {"certificates": [{"der": <base64>, "csr_sha256": …, "time": …}, …]}
// (the dev EST CA's search; adapters for specific CAs can implement Searcher).
type HTTPSearcher struct {
	// URL is the search endpoint.
	URL string
	// Roots verify the CA's TLS certificate (nil: the system roots).
	Roots *x509.CertPool
	// HeaderName and HeaderValue, or BasicUser and BasicPassword, authenticate the station.
	HeaderName, HeaderValue  string
	BasicUser, BasicPassword string
	// Timeout bounds one search (0: 30 s).
	Timeout time.Duration
}

// maxAnswer bounds a search answer.
const maxAnswer = 16 << 20

// SearchByKey implements Searcher.
func (h *HTTPSearcher) SearchByKey(ctx context.Context, publicKeySHA256 string) ([]Issued, error) {
	timeout := h.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u, err := url.Parse(h.URL)
	if err != nil {
		return nil, fmt.Errorf("search URL: %w", err)
	}
	q := u.Query()
	q.Set("public_key_sha256", publicKeySHA256)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if h.HeaderName != "" {
		req.Header.Set(h.HeaderName, h.HeaderValue)
	}
	if h.BasicUser != "" {
		req.SetBasicAuth(h.BasicUser, h.BasicPassword)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.Roots, MinVersion: tls.VersionTLS12}}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("reading the search answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("search answered %s", resp.Status)
	}
	var res struct {
		Certificates []struct {
			DER       []byte    `json:"der"`
			CSRSHA256 string    `json:"csr_sha256"`
			Time      time.Time `json:"time"`
		} `json:"certificates"`
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return nil, fmt.Errorf("decoding the search answer: %w", err)
	}
	out := make([]Issued, 0, len(res.Certificates))
	for _, c := range res.Certificates {
		out = append(out, Issued{DER: c.DER, CSRSHA256: c.CSRSHA256, Time: c.Time})
	}
	return out, nil
}
