package batch

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// CountingTransport returns a clone of base (of http.DefaultTransport when base
// is nil) whose dialers count every connection they open, and the counter.
// Both DialContext and DialTLSContext (when set) are wrapped, so TLS
// connections count once. Use it to show that connections stay flat as units
// grow: a batched client reuses keep-alive connections, a naive one does not.
// The counter is safe for concurrent use.
func CountingTransport(base *http.Transport) (*http.Transport, *atomic.Int64) {
	if base == nil {
		base = http.DefaultTransport.(*http.Transport)
	}
	t := base.Clone()
	n := new(atomic.Int64)
	type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)
	count := func(dial dialFunc) dialFunc {
		return func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err == nil {
				n.Add(1)
			}
			return c, err
		}
	}
	if t.DialTLSContext != nil {
		t.DialTLSContext = count(t.DialTLSContext)
	}
	dial := t.DialContext
	if dial == nil {
		if t.Dial != nil { // a legacy Dial in base
			legacy := t.Dial
			dial = func(_ context.Context, network, addr string) (net.Conn, error) { return legacy(network, addr) }
		} else {
			d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
			dial = d.DialContext
		}
	}
	t.DialContext = count(dial)
	return t, n
}
