package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
)

// finishDrainTimeout bounds how long the agent waits, after answering Finish, for the station
// to end the stream (so the answer is delivered before the connection closes).
const finishDrainTimeout = 5 * time.Second

// Run connects to the station and serves its commands on t until the station sends Finish,
// then returns the verdict. When a session breaks (station restart, network failure, a
// message above the bound) it reconnects after a backoff, sending a new Hello with the next
// session_attempt; the backoff restarts from Backoff.Initial after a session that received
// at least one command. Run returns an error only for an invalid Config, an unreadable
// serial or roots that cannot be created below the Sysroot (before any connection), or when
// ctx is cancelled (an error wrapping ctx.Err()). Run does not close t. Runs for distinct
// units (each with its own TPM) may proceed concurrently.
func Run(ctx context.Context, cfg Config, t TPM) (Verdict, error) {
	s, err := cfg.validate()
	if err != nil {
		return Verdict{}, err
	}
	serial, source, err := cfg.Serial.Read()
	if err != nil {
		return Verdict{}, err
	}
	// Hello strings must be valid UTF-8 or the message cannot be sent at all.
	serial = validUTF8(serial)
	log := s.log.With(logKeySerial, serial)
	bootID := ""
	if b, err := os.ReadFile(s.cfg.BootIDFile); err != nil {
		log.Warn("boot id unreadable; reporting none", logKeyErr, err)
	} else {
		bootID = validUTF8(strings.TrimSpace(string(b)))
	}
	files := &fileRoots{roots: s.roots, sysroot: s.sysroot}
	if err := files.makeRoots(); err != nil {
		return Verdict{}, fmt.Errorf("config: sysroot: %w", err)
	}
	a := &runner{
		s:   s,
		log: log,
		d: &dispatcher{
			tpm:      t,
			files:    files,
			keyFile:  cfg.LDevIDKeyFile,
			maxBytes: s.maxBytes,
			log:      log,
		},
		hello: &agentv1.Hello{
			ProtocolVersion: 1,
			AgentVersion:    agentVersion(),
			HardwareSerial:  serial,
			SerialSource:    validUTF8(source),
			FixtureSlot:     validUTF8(cfg.FixtureSlot),
			BootId:          bootID,
			TpmTransport:    validUTF8(t.Description()),
			FileRoots:       s.unit,
		},
	}
	return a.run(ctx)
}

// runner is one Run's state. It is used by one goroutine.
type runner struct {
	s        *settings
	log      *slog.Logger
	d        *dispatcher
	hello    *agentv1.Hello
	attempts uint32 // sessions opened so far
}

func (a *runner) run(ctx context.Context) (Verdict, error) {
	a.log.Info("device agent starting", logKeyStation, a.s.cfg.StationAddr, "version", a.hello.AgentVersion,
		"tpm", a.hello.TpmTransport)
	failures := 0
	for {
		v, gotCommand, err := a.session(ctx)
		if err == nil {
			a.log.Info("verdict", logKeyPassed, v.Passed, logKeyCode, v.Code, logKeyMessage, v.Message)
			return v, nil
		}
		if ctx.Err() != nil {
			return Verdict{}, fmt.Errorf("agent stopped: %w", ctx.Err())
		}
		if gotCommand {
			failures = 0
		}
		delay := a.s.backoff.delay(failures, rand.Float64)
		failures++
		a.log.Warn("session ended; reconnecting", logKeyAttempt, a.attempts, logKeyFailures, failures, logKeyErr, err, logKeyDelay, delay)
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return Verdict{}, fmt.Errorf("agent stopped: %w", ctx.Err())
		case <-timer.C:
		}
	}
}

// dialOptions returns the client options: pinned-CA TLS (never system roots), message bounds
// and optional keepalive. Each session dials a fresh connection and its RPC fails fast, so
// reconnect pacing is Run's backoff alone.
func (a *runner) dialOptions() []grpc.DialOption {
	tlsConf := &tls.Config{
		RootCAs:    a.s.pool,
		ServerName: a.s.cfg.ServerName,
		MinVersion: tls.VersionTLS13,
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(a.s.maxBytes),
			grpc.MaxCallSendMsgSize(a.s.maxBytes),
		),
	}
	if k := a.s.cfg.KeepaliveInterval; k > 0 {
		opts = append(opts, grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: k, Timeout: k}))
	}
	return opts
}

// session runs one session on a fresh connection. It returns the verdict and a nil error
// after Finish; otherwise the error that ended the session and whether any command arrived.
func (a *runner) session(ctx context.Context) (v Verdict, gotCommand bool, err error) {
	conn, err := grpc.NewClient(a.s.cfg.StationAddr, a.dialOptions()...)
	if err != nil {
		return Verdict{}, false, fmt.Errorf("dialing station: %w", err)
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := agentv1.NewAgentGatewayClient(conn).Session(sctx)
	if err != nil {
		return Verdict{}, false, fmt.Errorf("opening session: %w", err)
	}
	a.attempts++
	hello := proto.CloneOf(a.hello)
	hello.SessionAttempt = a.attempts
	if err := stream.Send(&agentv1.AgentMessage{Body: &agentv1.AgentMessage_Hello{Hello: hello}}); err != nil {
		if errors.Is(err, io.EOF) {
			// The station ended the stream first (a refusal): its status is what Recv says.
			if _, rerr := stream.Recv(); rerr != nil {
				err = rerr
			}
		}
		return Verdict{}, false, fmt.Errorf("sending hello: %w", err)
	}
	a.log.Info("session opened", logKeyAttempt, a.attempts)
	for {
		msg, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("station ended the session without a verdict")
			}
			return Verdict{}, gotCommand, fmt.Errorf("receiving command: %w", err)
		}
		cmd := msg.GetCommand()
		if cmd == nil {
			a.log.Warn("ignoring station message without a command", logKeyAttempt, a.attempts)
			continue
		}
		gotCommand = true
		res := a.d.execute(cmd)
		if err := stream.Send(&agentv1.AgentMessage{Body: &agentv1.AgentMessage_Result{Result: res}}); err != nil {
			return Verdict{}, gotCommand, fmt.Errorf("sending result %d: %w", cmd.GetId(), err)
		}
		if f := cmd.GetFinish(); f != nil && res.GetError() == nil {
			a.closeAfterFinish(stream)
			return verdictOf(f), true, nil
		}
	}
}

// closeAfterFinish half-closes the stream and waits (bounded) for the station to end it, so
// the Finish answer is delivered before the connection is torn down.
func (a *runner) closeAfterFinish(stream grpc.BidiStreamingClient[agentv1.AgentMessage, agentv1.StationMessage]) {
	if err := stream.CloseSend(); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(finishDrainTimeout):
		a.log.Warn("station did not end the session after finish")
	}
}
