package batch

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

func TestCountingTransport(t *testing.T) {
	tests := []struct {
		name      string
		keepAlive bool
		requests  int
		want      int64
	}{
		{name: "keep-alive reuses one connection", keepAlive: true, requests: 5, want: 1},
		{name: "no keep-alive opens one per request", keepAlive: false, requests: 5, want: 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w, "ok")
			}))
			t.Cleanup(srv.Close)
			base := srv.Client().Transport.(*http.Transport)
			base.DisableKeepAlives = !tc.keepAlive
			tr, n := CountingTransport(base)
			t.Cleanup(tr.CloseIdleConnections)
			client := &http.Client{Transport: tr}
			for range tc.requests {
				resp, err := client.Get(srv.URL)
				if err != nil {
					t.Fatalf("GET: %v", err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if got := n.Load(); got != tc.want {
				t.Errorf("%d connections opened, want %d", got, tc.want)
			}
		})
	}
}

func TestCountingTransportConcurrentAndTLSDialer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	t.Cleanup(srv.Close)
	var tlsDials atomic.Int64
	base := &http.Transport{
		// Only used for https URLs; wrapped too.
		DialTLSContext: func(context.Context, string, string) (net.Conn, error) {
			tlsDials.Add(1)
			return nil, io.ErrUnexpectedEOF
		},
		MaxIdleConnsPerHost: 4,
	}
	tr, n := CountingTransport(base)
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	if _, err := client.Get("https://127.0.0.1:1/"); err == nil {
		t.Fatal("GET over the failing TLS dialer succeeded")
	}
	if tlsDials.Load() != 1 || n.Load() != 0 {
		t.Errorf("TLS dialer called %d times, counted %d; want 1, 0 (failed dials do not count)", tlsDials.Load(), n.Load())
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			resp, err := client.Get(srv.URL)
			if err != nil {
				t.Errorf("GET: %v", err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	wg.Wait()
	if got := n.Load(); got < 1 || got > 8 {
		t.Errorf("%d connections for 8 concurrent requests, want 1..8", got)
	}
}
