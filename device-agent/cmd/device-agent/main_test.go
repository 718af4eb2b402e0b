package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devid-station/devid/device-agent/tpm"
	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

func TestFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"no station", []string{"-station-ca", "ca.pem", "-serial", "S"}, 2},
		{"no CA", []string{"-station", "s:1", "-serial", "S"}, 2},
		{"no serial", []string{"-station", "s:1", "-station-ca", "ca.pem"}, 2},
		{"two serial sources", []string{"-station", "s:1", "-station-ca", "ca.pem", "-serial", "S", "-serial-file", "f"}, 2},
		{"bad log level", []string{"-station", "s:1", "-station-ca", "ca.pem", "-serial", "S", "-log-level", "loud"}, 2},
		{"unknown flag", []string{"-bogus"}, 2},
		{"stray argument", []string{"-station", "s:1", "-station-ca", "ca.pem", "-serial", "S", "extra"}, 2},
		{"bad TPM spec", []string{"-station", "s:1", "-station-ca", "ca.pem", "-serial", "S", "-tpm", "floppy:/dev/fd0"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if got := run(tc.args, &out); got != tc.want {
				t.Fatalf("run(%q) = %d, want %d; output:\n%s", tc.args, got, tc.want, out.String())
			}
		})
	}
}

// gateway runs script on each session after Hello.
type gateway struct {
	agentv1.UnimplementedAgentGatewayServer
	script func(hello *agentv1.Hello, stream agentv1.AgentGateway_SessionServer) error
}

func (g *gateway) Session(stream agentv1.AgentGateway_SessionServer) error {
	msg, err := stream.Recv()
	if err != nil {
		return err
	}
	return g.script(msg.GetHello(), stream)
}

// startStation serves g over TLS on loopback and returns its address and a PEM CA file.
func startStation(t *testing.T, g *gateway) (addr, caFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "station"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "station-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})))
	agentv1.RegisterAgentGatewayServer(srv, g)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), caFile
}

// needSimulator skips unless this build can open the TPM simulator.
func needSimulator(t *testing.T) {
	t.Helper()
	sim, err := tpm.Open("simulator")
	if err != nil {
		t.Skipf("TPM simulator unavailable (needs cgo): %v", err)
	}
	sim.Close()
}

// runAsync runs main's run in a goroutine.
func runAsync(args []string) (<-chan int, *bytes.Buffer) {
	out := &bytes.Buffer{}
	code := make(chan int, 1)
	go func() { code <- run(args, out) }()
	return code, out
}

func waitCode(t *testing.T, code <-chan int) int {
	t.Helper()
	select {
	case c := <-code:
		return c
	case <-time.After(time.Minute):
		t.Fatal("device-agent did not exit within a minute")
		return -1
	}
}

func TestFailedVerdictExitCode(t *testing.T) {
	needSimulator(t)
	results := make(chan *agentv1.Result, 1)
	addr, ca := startStation(t, &gateway{script: func(_ *agentv1.Hello, s agentv1.AgentGateway_SessionServer) error {
		cmd := &agentv1.Command{Id: 1, Op: &agentv1.Command_Finish{Finish: &agentv1.FinishRequest{Code: "EK_UNTRUSTED"}}}
		if err := s.Send(&agentv1.StationMessage{Body: &agentv1.StationMessage_Command{Command: cmd}}); err != nil {
			return err
		}
		m, err := s.Recv()
		if err != nil {
			return err
		}
		results <- m.GetResult()
		return nil
	}})
	code, out := runAsync([]string{"-station", addr, "-station-ca", ca, "-serial", "SN-MAIN-1", "-tpm", "simulator"})
	if c := waitCode(t, code); c != 3 {
		t.Fatalf("exit code %d, want 3; output:\n%s", c, out)
	}
	if r := <-results; r.GetFinish().GetExitCode() != 3 {
		t.Errorf("finish result = %v, want exit_code 3", r)
	}
}

func TestStoppedBySignal(t *testing.T) {
	needSimulator(t)
	hellos := make(chan *agentv1.Hello, 1)
	addr, ca := startStation(t, &gateway{script: func(h *agentv1.Hello, s agentv1.AgentGateway_SessionServer) error {
		hellos <- h
		<-s.Context().Done()
		return nil
	}})
	code, out := runAsync([]string{"-station", addr, "-station-ca", ca, "-serial", "SN-MAIN-2", "-slot", "A3", "-tpm", "simulator"})
	select {
	case h := <-hellos:
		if h.GetHardwareSerial() != "SN-MAIN-2" || h.GetSerialSource() != "flag" || h.GetFixtureSlot() != "A3" || h.GetTpmTransport() != "simulator" {
			t.Errorf("hello = %v", h)
		}
	case c := <-code:
		t.Fatalf("device-agent exited with %d before its session; output:\n%s", c, out)
	case <-time.After(time.Minute):
		t.Fatal("no session within a minute")
	}
	// The session is up, so the signal handler is installed.
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if c := waitCode(t, code); c != 0 {
		t.Fatalf("exit code %d, want 0; output:\n%s", c, out)
	}
	if !strings.Contains(out.String(), "stopped by signal") {
		t.Errorf("output lacks \"stopped by signal\":\n%s", out)
	}
}
