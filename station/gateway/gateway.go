// Package gateway is the station's side of the agent contract (proto/agent/v1): it accepts
// device-agent sessions over TLS, reads each agent's Hello, and hands the workflow a Session
// that sends one command at a time and waits for the result with the same id.
//
// Every wait has a deadline (Hello, a provisioning slot, each command's result by its
// caller's context). A session takes one of MaxInFlight provisioning slots only when the
// workflow admits it (Session.Admit), after its first checks passed, so sessions that never
// pass them hold no slot. One peer address cannot starve the others: it may hold at most
// MaxSessionsPerPeer open sessions, and after MaxRefusalsPerPeer refused sessions within
// RefusalWindow its new sessions are refused at once until the window's deadline.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/devid-station/devid/ca-client/clock"
	agentv1 "github.com/devid-station/devid/proto/agent/v1"
)

// ProtocolVersion is the agent contract version this station speaks.
const ProtocolVersion = 1

// DefaultHelloTimeout is the wait for an agent's Hello when Config.HelloTimeout is 0.
const DefaultHelloTimeout = 30 * time.Second

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
	// ErrNoSlot: no provisioning slot came free within SlotWait.
	ErrNoSlot = errors.New("no provisioning slot free")
	// ErrRefused is what a Handler returns (wrapped) for a session it refused: the refusal
	// counts against the session's peer.
	ErrRefused = errors.New("session refused")
	// ErrPeerLimit: the peer has too many open sessions, or too many recent refusals.
	ErrPeerLimit = errors.New("peer limit")
)

// Handler runs the workflow for one session; the session ends when it returns. An error
// wrapping ErrRefused marks a refused session.
type Handler func(ctx context.Context, s *Session) error

// Clock tells the time.
type Clock = clock.Clock

// Config configures a Server.
type Config struct {
	// Handler is called once per accepted session.
	Handler Handler
	// MaxInFlight bounds the sessions that hold a provisioning slot (0 = 256).
	MaxInFlight int
	// SlotWait bounds a session's wait for a slot in Admit (0 = 1 min).
	SlotWait time.Duration
	// HelloTimeout bounds the wait for Hello (0 = DefaultHelloTimeout).
	HelloTimeout time.Duration
	// MaxSessionsPerPeer bounds the open sessions of one peer address (0 = 16).
	MaxSessionsPerPeer int
	// MaxRefusalsPerPeer is how many refused sessions (a bad or missing Hello, or a Handler's
	// ErrRefused, which the station also returns for a security failure) one peer address
	// may have within RefusalWindow; past it its new sessions are refused at once until the
	// window's deadline (0 = 30; window 0 = 1 min).
	MaxRefusalsPerPeer int
	RefusalWindow      time.Duration
	// Clock defaults to the system clock.
	Clock Clock
	// Logger receives session logs; nil discards them.
	Logger *slog.Logger
}

// Server implements agentv1.AgentGatewayServer. It is safe for concurrent use.
type Server struct {
	agentv1.UnimplementedAgentGatewayServer
	cfg       Config
	slots     chan struct{}
	connected atomic.Int64
	peers     peers
}

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 256
	}
	if cfg.SlotWait <= 0 {
		cfg.SlotWait = time.Minute
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = DefaultHelloTimeout
	}
	if cfg.MaxSessionsPerPeer <= 0 {
		cfg.MaxSessionsPerPeer = 16
	}
	if cfg.MaxRefusalsPerPeer <= 0 {
		cfg.MaxRefusalsPerPeer = 30
	}
	if cfg.RefusalWindow <= 0 {
		cfg.RefusalWindow = time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, slots: make(chan struct{}, cfg.MaxInFlight)}
	s.peers = peers{m: map[string]*peerState{}, maxOpen: cfg.MaxSessionsPerPeer, maxRefusals: cfg.MaxRefusalsPerPeer,
		window: cfg.RefusalWindow, clock: cfg.Clock}
	return s
}

// Connected reports the number of open agent sessions.
func (s *Server) Connected() int { return int(s.connected.Load()) }

// SlotsHeld reports the provisioning slots admitted sessions hold now.
func (s *Server) SlotsHeld() int { return len(s.slots) }

// Session implements the AgentGateway Session RPC.
func (s *Server) Session(stream agentv1.AgentGateway_SessionServer) error {
	s.connected.Add(1)
	defer s.connected.Add(-1)
	ctx := stream.Context()
	sess := &Session{stream: stream, slots: s.slots, slotWait: s.cfg.SlotWait,
		results: make(chan *agentv1.Result, 1), done: make(chan struct{})}
	if p, ok := peer.FromContext(ctx); ok {
		sess.peer = p.Addr.String()
	}
	host := peerHost(sess.peer)
	if err := s.peers.enter(host); err != nil {
		s.cfg.Logger.Debug("agent session refused", "peer", sess.peer, "error", err)
		return status.Error(codes.ResourceExhausted, err.Error())
	}
	refused := false
	defer func() {
		if s.peers.leave(host, refused) {
			s.cfg.Logger.Warn("agent peer reached its refusal limit; its sessions are refused until the window ends",
				"peer", host, "refusals", s.cfg.MaxRefusalsPerPeer, "window", s.cfg.RefusalWindow)
		}
	}()

	helloCtx, cancel := context.WithTimeout(ctx, s.cfg.HelloTimeout)
	defer cancel()
	hello, err := recvHello(helloCtx, stream)
	if err != nil {
		refused = true
		s.cfg.Logger.Warn("agent session refused", "peer", sess.peer, "error", err)
		return status.Error(codes.InvalidArgument, err.Error())
	}
	sess.hello = hello
	log := s.cfg.Logger.With("serial", hello.GetHardwareSerial(), "peer", sess.peer)

	go sess.recvLoop()
	defer sess.release()
	log.Info("agent session started", "attempt", hello.GetSessionAttempt(), "boot_id", hello.GetBootId())
	err = s.cfg.Handler(ctx, sess)
	switch {
	case errors.Is(err, ErrRefused):
		refused = true
		log.Info("agent session refused", "error", err)
		return status.Error(codes.PermissionDenied, err.Error())
	case err != nil:
		log.Info("agent session ended", "error", err)
		return status.Error(codes.Aborted, "session ended by the station")
	}
	log.Info("agent session ended")
	return nil
}

// peerHost is the host part of a peer address: sessions of one machine share their limits
// whatever their source ports. IPv6 peers are grouped by /64, the block one host can draw
// addresses from at will.
func peerHost(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.To4() != nil {
		return host
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// peers tracks each peer address's open sessions and recent refusals. It is safe for
// concurrent use.
type peers struct {
	mu          sync.Mutex
	m           map[string]*peerState
	maxOpen     int
	maxRefusals int
	window      time.Duration
	clock       Clock
}

type peerState struct {
	open     int
	refusals int       // within the window
	until    time.Time // the refusal window's deadline; zero when no window is open
}

// peersSwept is the map size past which enter drops the entries of idle peers whose window
// has passed.
const peersSwept = 4096

// expire closes p's refusal window once its deadline passed.
func (p *peerState) expire(now time.Time) {
	if !p.until.IsZero() && !now.Before(p.until) {
		p.refusals, p.until = 0, time.Time{}
	}
}

// enter admits one more session of host, or says why not.
func (ps *peers) enter(host string) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	now := ps.clock.Now()
	p := ps.m[host]
	if p == nil {
		if len(ps.m) >= peersSwept {
			for h, q := range ps.m {
				if q.expire(now); q.open == 0 && q.until.IsZero() {
					delete(ps.m, h)
				}
			}
		}
		p = &peerState{}
		ps.m[host] = p
	}
	p.expire(now)
	switch {
	case p.refusals >= ps.maxRefusals:
		return fmt.Errorf("%w: %s had %d refused sessions; refused until %s", ErrPeerLimit, host, p.refusals, p.until.UTC().Format(time.RFC3339))
	case p.open >= ps.maxOpen:
		return fmt.Errorf("%w: %s has %d open sessions", ErrPeerLimit, host, p.open)
	}
	p.open++
	return nil
}

// leave ends a session of host, counting it when it was refused; true when that refusal
// reached the limit.
func (ps *peers) leave(host string, refused bool) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	now := ps.clock.Now()
	p := ps.m[host]
	if p == nil {
		return false
	}
	p.open--
	p.expire(now)
	if refused {
		if p.until.IsZero() {
			p.until = now.Add(ps.window)
		}
		p.refusals++
	}
	if p.open == 0 && p.until.IsZero() {
		delete(ps.m, host)
	}
	return refused && p.refusals == ps.maxRefusals
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
	hello    *agentv1.Hello
	peer     string
	stream   agentv1.AgentGateway_SessionServer
	slots    chan struct{}
	slotWait time.Duration
	admitMu  sync.Mutex // one Admit at a time
	admitted atomic.Bool
	mu       sync.Mutex
	nextID   uint64
	results  chan *agentv1.Result
	done     chan struct{}
	err      error // set before done is closed
}

// Hello returns the agent's Hello. Its fields are claims.
func (s *Session) Hello() *agentv1.Hello { return s.hello }

// Peer returns the agent's network address.
func (s *Session) Peer() string { return s.peer }

// Admit takes one of the station's provisioning slots for this session, waiting up to the
// server's SlotWait (and ctx); the slot is released when the session ends. Admitting an
// admitted session does nothing.
func (s *Session) Admit(ctx context.Context) error {
	s.admitMu.Lock()
	defer s.admitMu.Unlock()
	if s.admitted.Load() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.slotWait)
	defer cancel()
	select {
	case s.slots <- struct{}{}:
		s.admitted.Store(true)
		return nil
	case <-s.done:
		return fmt.Errorf("%w: %v", ErrSessionClosed, s.err)
	case <-ctx.Done():
		return fmt.Errorf("%w within %s: %v", ErrNoSlot, s.slotWait, ctx.Err())
	}
}

// release frees the session's slot, if it holds one.
func (s *Session) release() {
	if s.admitted.CompareAndSwap(true, false) {
		<-s.slots
	}
}

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
