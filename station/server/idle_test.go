package server

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"

	"github.com/devid-station/devid/station/config"
)

// TestIdleAgentConnectionsClosed: agent connections that never open a session, whether they
// stop before TLS or keep HTTP/2 alive by answering every keepalive ping, used to stay open
// (for ever, or two minutes before TLS) beside the per-peer session limits. Now the station
// closes them once the hello timeout passed. The waits are hang guards.
func TestIdleAgentConnectionsClosed(t *testing.T) {
	l := newTestLine(t, lineOptions{configure: func(f *config.File) { f.Agents.HelloTimeout = config.Duration(time.Second) }})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// An HTTP/2 client with no session: gRPC's own client answers pings.
	conn, err := grpc.NewClient(l.file.Agents.Listen, grpc.WithTransportCredentials(credentials.NewTLS(
		&tls.Config{RootCAs: l.stationCA, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The connection leaves Idle (connecting, ready) and comes back to it when the station
	// closes it; a failed handshake would be TransientFailure.
	conn.Connect()
	for st, left := conn.GetState(), false; ; st = conn.GetState() {
		if st == connectivity.Idle && left {
			break
		}
		if st == connectivity.TransientFailure || st == connectivity.Shutdown {
			t.Fatalf("the connection failed (%s)", st)
		}
		left = left || st != connectivity.Idle
		if !conn.WaitForStateChange(ctx, st) {
			t.Fatalf("the station kept an agent connection without a session open past the hang guard (%s)", st)
		}
	}

	// A TCP connection that never starts TLS.
	raw, err := net.Dial("tcp", l.file.Agents.Listen)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("reading a connection that never started TLS: %v, want the station to close it (EOF)", err)
	}
}
