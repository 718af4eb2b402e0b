package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devid-station/devid/device-agent/tpm"
	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// simTPM is the one simulator of this test binary (nil with simErr set when the build has no
// cgo); tests using it run sequentially.
var (
	simTPM *tpm.TPM
	simErr error
)

func TestMain(m *testing.M) {
	simTPM, simErr = tpm.Open("simulator")
	code := m.Run()
	if simTPM != nil {
		simTPM.Close()
	}
	os.Exit(code)
}

// needSim returns the shared simulator or skips.
func needSim(t testing.TB) *tpm.TPM {
	t.Helper()
	if simTPM == nil {
		t.Skipf("TPM simulator unavailable (needs cgo): %v", simErr)
	}
	return simTPM
}

// testPKI is a throwaway station CA and a server certificate for 127.0.0.1.
type testPKI struct {
	pool   *x509.CertPool
	server tls.Certificate
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test station CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "station"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"station.test"},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{pool: pool, server: tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}}
}

// stubSession is one agent session as the stub station sees it; the test drives it.
type stubSession struct {
	hello  *agentv1.Hello
	stream agentv1.AgentGateway_SessionServer
	end    chan error
	nextID uint64
}

// call sends cmd with the next id and returns the agent's Result, checking the id.
func (s *stubSession) call(t testing.TB, cmd *agentv1.Command) *agentv1.Result {
	t.Helper()
	s.nextID++
	cmd.Id = s.nextID
	if err := s.stream.Send(&agentv1.StationMessage{Body: &agentv1.StationMessage_Command{Command: cmd}}); err != nil {
		t.Fatalf("sending command: %v", err)
	}
	msg, err := s.stream.Recv()
	if err != nil {
		t.Fatalf("receiving result: %v", err)
	}
	res := msg.GetResult()
	if res == nil || res.GetId() != cmd.Id {
		t.Fatalf("got %v, want a result with id %d", msg, cmd.Id)
	}
	return res
}

// close ends the session's RPC with err (nil: a clean end of stream).
func (s *stubSession) close(err error) { s.end <- err }

// stubGateway implements AgentGateway by handing each session to the test.
type stubGateway struct {
	agentv1.UnimplementedAgentGatewayServer
	sessions chan *stubSession
	opened   atomic.Int32
}

func (g *stubGateway) Session(stream agentv1.AgentGateway_SessionServer) error {
	g.opened.Add(1)
	msg, err := stream.Recv()
	if err != nil {
		return err
	}
	if msg.GetHello() == nil {
		return status.Error(codes.InvalidArgument, "first message is not hello")
	}
	s := &stubSession{hello: msg.GetHello(), stream: stream, end: make(chan error, 1)}
	select {
	case g.sessions <- s:
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
	select {
	case err := <-s.end:
		return err
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
}

// stubStation is a real gRPC server with TLS on loopback serving stubGateway.
type stubStation struct {
	t       testing.TB
	addr    string
	cert    tls.Certificate
	gateway *stubGateway
	mu      sync.Mutex
	srv     *grpc.Server
}

// startStation serves on 127.0.0.1 with an ephemeral port.
func startStation(t testing.TB, pki *testPKI) *stubStation {
	t.Helper()
	st := &stubStation{t: t, addr: "127.0.0.1:0", cert: pki.server,
		gateway: &stubGateway{sessions: make(chan *stubSession, 4)}}
	st.start()
	t.Cleanup(st.stop)
	return st
}

// start (re)starts the server on st.addr.
func (st *stubStation) start() {
	st.t.Helper()
	lis, err := net.Listen("tcp", st.addr)
	if err != nil {
		st.t.Fatalf("listen %s: %v", st.addr, err)
	}
	st.addr = lis.Addr().String()
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{st.cert}, MinVersion: tls.VersionTLS13})))
	agentv1.RegisterAgentGatewayServer(srv, st.gateway)
	st.mu.Lock()
	st.srv = srv
	st.mu.Unlock()
	go srv.Serve(lis)
}

// stop stops the server, breaking every open session.
func (st *stubStation) stop() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.srv != nil {
		st.srv.Stop()
		st.srv = nil
	}
}

// next waits for the next session.
func (st *stubStation) next(t testing.TB) *stubSession {
	t.Helper()
	select {
	case s := <-st.gateway.sessions:
		return s
	case <-time.After(time.Minute):
		t.Fatal("no agent session within a minute")
		return nil
	}
}

// agentRun is a Run in progress.
type agentRun struct {
	cancel context.CancelFunc
	done   chan struct{}
	v      Verdict
	err    error
}

// wait returns Run's result, failing the test after d.
func (r *agentRun) wait(t testing.TB, d time.Duration) (Verdict, error) {
	t.Helper()
	select {
	case <-r.done:
		return r.v, r.err
	case <-time.After(d):
		t.Fatalf("Run did not return within %v", d)
		return Verdict{}, nil
	}
}

// testConfig returns a Config for st with a serial and boot id from files in a temp dir.
func testConfig(t testing.TB, st *stubStation, pool *x509.CertPool) Config {
	t.Helper()
	dir := t.TempDir()
	serialFile := filepath.Join(dir, "product_serial")
	bootFile := filepath.Join(dir, "boot_id")
	if err := os.WriteFile(serialFile, []byte("  SN-TEST-0001\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bootFile, []byte("6f1c3a9e-0b7d-4c52-9d2e-1a2b3c4d5e6f\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return Config{
		StationAddr: st.addr,
		StationCA:   pool,
		Serial:      SerialSource{File: serialFile},
		FixtureSlot: "slot-7",
		BootIDFile:  bootFile,
		Backoff:     Backoff{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond},
		Logger:      testLogger(t),
	}
}

// testLogger logs to the test log when -v is set.
func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// startAgent runs Run in a goroutine; cleanup cancels it and waits for it to return.
func startAgent(t testing.TB, cfg Config, tp TPM) *agentRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &agentRun{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.v, r.err = Run(ctx, cfg, tp)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(time.Minute):
			panic(fmt.Sprintf("agent Run did not stop after cancel in %s", t.Name()))
		}
	})
	return r
}
