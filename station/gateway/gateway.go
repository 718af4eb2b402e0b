// Package gateway is the station's side of the agent contract (proto/agent/v1): it accepts
// device-agent sessions over TLS, reads each agent's Hello, and hands the workflow a Session
// that sends one command at a time and waits for the result with the same id. It bounds the
// number of units in flight; sessions past the bound wait for a slot.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
)

// ProtocolVersion is the agent contract version this station speaks.
const ProtocolVersion = 1

// serialRE is what the station accepts as a serial: it becomes a store key, a certificate
// serialNumber and a value in onboarding files, so it is kept to a safe alphabet.
var serialRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$`)

// Bounds of Hello's file_roots (the contract's): they are kept in the unit's identify evidence.
const (
	maxFileRoots     = 16
	maxFileRootBytes = 1024
)

// Errors a Session returns.
var (
	// ErrSessionClosed: the stream ended (agent gone, network broken) before the result came.
	ErrSessionClosed = errors.New("agent session closed")
	// ErrProtocol: the agent broke the contract (a result for another command, a second Hello).
	ErrProtocol = errors.New("agent protocol violation")
	// ErrBadHello: the first message is not a valid Hello.
	ErrBadHello = errors.New("invalid hello")
)

// Handler runs the workflow for one session; the session ends when it returns.
type Handler func(ctx context.Context, s *Session) error

// Config configures a Server.
type Config struct {
	// Handler is called once per accepted session.
	Handler Handler
	// MaxInFlight bounds concurrently handled sessions (0 = 256).
	MaxInFlight int
	// HelloTimeout bounds the wait for Hello (0 = 30 s).
	HelloTimeout time.Duration
	// Logger receives session logs; nil discards them.
	Logger *slog.Logger
}

// Server implements agentv1.AgentGatewayServer. It is safe for concurrent use.
type Server struct {
	agentv1.UnimplementedAgentGatewayServer
	cfg       Config
	slots     chan struct{}
	connected atomic.Int64
}

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 256
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, slots: make(chan struct{}, cfg.MaxInFlight)}
}

// Connected reports the number of open agent sessions.
func (s *Server) Connected() int { return int(s.connected.Load()) }

// Session implements the AgentGateway Session RPC.
func (s *Server) Session(stream agentv1.AgentGateway_SessionServer) error {
	s.connected.Add(1)
	defer s.connected.Add(-1)
	ctx := stream.Context()
	sess := &Session{stream: stream, results: make(chan *agentv1.Result, 1), done: make(chan struct{})}
	if p, ok := peer.FromContext(ctx); ok {
		sess.peer = p.Addr.String()
	}

	helloCtx, cancel := context.WithTimeout(ctx, s.cfg.HelloTimeout)
	defer cancel()
	hello, err := recvHello(helloCtx, stream)
	if err != nil {
		s.cfg.Logger.Warn("agent session refused", "peer", sess.peer, "error", err)
		return status.Error(codes.InvalidArgument, err.Error())
	}
	sess.hello = hello
	log := s.cfg.Logger.With("serial", hello.GetHardwareSerial(), "peer", sess.peer)

	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
	defer func() { <-s.slots }()

	go sess.recvLoop()
	log.Info("agent session started", "attempt", hello.GetSessionAttempt(), "boot_id", hello.GetBootId())
	err = s.cfg.Handler(ctx, sess)
	if err != nil {
		log.Info("agent session ended", "error", err)
		return status.Error(codes.Aborted, "session ended by the station")
	}
	log.Info("agent session ended")
	return nil
}

func recvHello(ctx context.Context, stream agentv1.AgentGateway_SessionServer) (*agentv1.Hello, error) {
	type recv struct {
		msg *agentv1.AgentMessage
		err error
	}
	ch := make(chan recv, 1)
	go func() {
		m, err := stream.Recv()
		ch <- recv{m, err}
	}()
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: none received: %v", ErrBadHello, ctx.Err())
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("receiving hello: %w", r.err)
		}
		h := r.msg.GetHello()
		if h == nil {
			return nil, fmt.Errorf("%w: first message is not a hello", ErrBadHello)
		}
		return h, ValidateHello(h)
	}
}

// ValidateHello checks the shape of a Hello: the version spoken and a printable serial of at
// most 64 characters. It says nothing about whether the claims are true.
func ValidateHello(h *agentv1.Hello) error {
	if h.GetProtocolVersion() != ProtocolVersion {
		return fmt.Errorf("%w: protocol version %d, want %d", ErrBadHello, h.GetProtocolVersion(), ProtocolVersion)
	}
	if serial := h.GetHardwareSerial(); !serialRE.MatchString(serial) {
		return fmt.Errorf("%w: serial %q is not 1-64 characters of [A-Za-z0-9._:-] starting with a letter or digit", ErrBadHello, serial)
	}
	for name, v := range map[string]string{"boot id": h.GetBootId(), "fixture slot": h.GetFixtureSlot(), "agent version": h.GetAgentVersion()} {
		if len(v) > 128 {
			return fmt.Errorf("%w: %s longer than 128 bytes", ErrBadHello, name)
		}
	}
	if n := len(h.GetFileRoots()); n > maxFileRoots {
		return fmt.Errorf("%w: %d file roots, at most %d", ErrBadHello, n, maxFileRoots)
	}
	for _, r := range h.GetFileRoots() {
		if len(r) > maxFileRootBytes {
			return fmt.Errorf("%w: a file root longer than %d bytes", ErrBadHello, maxFileRootBytes)
		}
	}
	return nil
}

// Session is one agent's open stream. Do is safe for concurrent use; commands are sent one at
// a time.
type Session struct {
	hello   *agentv1.Hello
	peer    string
	stream  agentv1.AgentGateway_SessionServer
	mu      sync.Mutex
	nextID  uint64
	results chan *agentv1.Result
	done    chan struct{}
	err     error // set before done is closed
}

// Hello returns the agent's Hello. Its fields are claims.
func (s *Session) Hello() *agentv1.Hello { return s.hello }

// Peer returns the agent's network address.
func (s *Session) Peer() string { return s.peer }

func (s *Session) recvLoop() {
	for {
		m, err := s.stream.Recv()
		if err != nil {
			s.err = err
			close(s.done)
			return
		}
		r := m.GetResult()
		if r == nil {
			s.err = fmt.Errorf("%w: unexpected message after hello", ErrProtocol)
			close(s.done)
			return
		}
		// Do takes results in order and drops late answers to commands whose caller gave up;
		// until it does, this waits (the stream's end also ends the wait).
		select {
		case s.results <- r:
		case <-s.stream.Context().Done():
			s.err = s.stream.Context().Err()
			close(s.done)
			return
		}
	}
}

// Do sends cmd (its id is assigned here) and waits for its result or ctx.
func (s *Session) Do(ctx context.Context, cmd *agentv1.Command) (*agentv1.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	cmd.Id = s.nextID
	if err := s.stream.Send(&agentv1.StationMessage{Body: &agentv1.StationMessage_Command{Command: cmd}}); err != nil {
		return nil, fmt.Errorf("%w: sending command: %v", ErrSessionClosed, err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.done:
			return nil, fmt.Errorf("%w: %v", ErrSessionClosed, s.err)
		case r := <-s.results:
			switch {
			case r.GetId() < cmd.Id:
				continue // the late answer to a command whose caller gave up
			case r.GetId() > cmd.Id:
				return nil, fmt.Errorf("%w: result id %d for command %d", ErrProtocol, r.GetId(), cmd.Id)
			}
			return r, nil
		}
	}
}
