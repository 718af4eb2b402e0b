// Package server assembles a running station from its validated configuration: the bbolt
// store, one batched EST client per CA, the workflow, the agent gateway and the MES/operator
// API, each on its own TLS listener, and (when reports_dir is set) the writer of the reports
// folder. stationd and the fixture both run a station through it.
package server

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/reports/reportdir"
	"github.com/devid-station/devid/station/api"
	"github.com/devid-station/devid/station/config"
	"github.com/devid-station/devid/station/gateway"
	"github.com/devid-station/devid/station/metrics"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// maxMessageBytes bounds every agent message (the agent uses the same bound).
const maxMessageBytes = 1 << 20

// maxStreamsPerConn bounds the concurrent streams of one agent connection: an agent opens one
// session per connection; the gateway bounds the sessions of each peer address.
const maxStreamsPerConn = 4

// Options are what the configuration file does not hold.
type Options struct {
	// Version is the station's build version, shown by the API.
	Version string
	// Logger receives the station's logs; nil discards them.
	Logger *slog.Logger
	// Clock defaults to the system clock.
	Clock workflow.Clock
	// WrapJournal, when set, wraps the store as the workflow sees it (tests use it to stop the
	// station at a chosen step boundary).
	WrapJournal func(workflow.Journal) workflow.Journal
	// AuditSigner signs the audit chain's checkpoints; nil means the key file
	// of the configuration ([audit] key_path, created when absent).
	AuditSigner crypto.Signer
	// AuditOverride, when set, is an admin's reason to start although the
	// audit chain does not verify; the start and the reason are recorded in
	// the chain.
	AuditOverride string
}

// Server is a station. Create it with New, then Start it; Close stops it.
type Server struct {
	rt      *config.Runtime
	log     *slog.Logger
	store   *store.Store
	issuers map[string]*issuer
	runner  *workflow.Runner
	gw      *gateway.Server

	agentSrv, apiSrv *grpc.Server
	api              *api.Server
	agentLis, apiLis net.Listener
	wg               sync.WaitGroup
	outcomes         chan workflow.Outcome
	fatal            chan error

	reports     *reportdir.Writer // nil: no reports folder configured
	stopReports context.CancelFunc
	// stopReconcile ends the reconciler (reconcile.go).
	stopReconcile context.CancelFunc

	registry   *prometheus.Registry
	metrics    *metrics.Metrics
	metricsSrv *http.Server // nil when metrics are off
	metricsLis net.Listener

	roles      api.RoleTable
	consoleSrv *http.Server // nil when the console is off
	consoleLis net.Listener

	// inFlight are the units in flight when the station started (resumeAtStart).
	inFlight []store.UnitState
}

// reportsFinal bounds the reports writer's last pass when the station closes.
const reportsFinal = 30 * time.Second

// verifyAtStart verifies the whole audit chain, logging its progress. A
// chain that does not verify stops the start unless override gives an
// admin's reason, which is then recorded in the chain.
func verifyAtStart(st *store.Store, override string, log *slog.Logger) error {
	start := time.Now()
	last := start
	rep, _, err := st.VerifyStation(context.Background(), func(done, total uint64) {
		if time.Since(last) >= time.Second {
			last = time.Now()
			log.Info("verifying the audit chain", "records", done, "of", total)
		}
	})
	if err == nil {
		log.Info("audit chain verified", "records", rep.Records, "values", rep.Values, "checkpoints", rep.Checkpoints,
			"head", rep.Head.Seq, "seconds", time.Since(start).Seconds())
		return nil
	}
	if override == "" {
		return fmt.Errorf("refusing to start: %w (an admin may start anyway with -audit-override REASON, which is recorded)", err)
	}
	log.Error("audit chain does not verify: starting on an admin's override", "code", store.CodeAuditChainBroken, "error", err, "reason", override)
	return st.AuditOverride(context.Background(), override, err)
}

// resumeAtStart reads the units the station had not finished when it stopped (the store's
// in-flight index: it reads those units only, however many are stored) and logs them. Each
// resumes when its agent reconnects: the workflow then settles its open intents first.
func resumeAtStart(st *store.Store, log *slog.Logger) ([]store.UnitState, error) {
	units, err := st.InFlight(context.Background())
	if err != nil {
		return nil, fmt.Errorf("reading the units in flight: %w", err)
	}
	steps := map[string]int{}
	for _, u := range units {
		steps[u.CurrentStep]++
	}
	log.Info("units in flight at start: each resumes when its agent reconnects", "units", len(units), "by_step", steps)
	return units, nil
}

// New opens the store and builds every part; it listens on nothing yet.
func New(rt *config.Runtime, opts Options) (*Server, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg, m, err := newMetrics()
	if err != nil {
		return nil, err
	}
	fatal := make(chan error, 1)
	onCorrupt := func(err error) {
		log.Error("station must stop: its store is corrupt; nothing more is issued", "code", store.CodeStoreCorrupt, "error", err)
		select {
		case fatal <- err:
		default:
		}
	}
	signer := opts.AuditSigner
	if signer == nil {
		if signer, err = auditKey(rt.AuditKeyPath); err != nil {
			return nil, err
		}
	}
	st, err := store.Open(rt.StorePath, store.Options{StationID: rt.StationID, MaxBatchSize: rt.MaxUnitsInFlight,
		Logger: log, Clock: opts.Clock, OnCorrupt: onCorrupt, Commits: m.StoreCommit,
		Checkpoints: store.CheckpointOptions{Signer: signer, Every: rt.CheckpointEvery, Interval: rt.CheckpointInterval}})
	if err != nil {
		return nil, fmt.Errorf("opening the store: %w", err)
	}
	if err := verifyAtStart(st, opts.AuditOverride, log); err != nil {
		st.Close()
		return nil, err
	}
	inFlight, err := resumeAtStart(st, log)
	if err != nil {
		st.Close()
		return nil, err
	}
	s := &Server{rt: rt, log: log, store: st, issuers: map[string]*issuer{}, fatal: fatal, registry: reg, metrics: m, inFlight: inFlight}
	wfIssuers := map[string]workflow.Issuer{}
	for _, c := range rt.CAs {
		is, err := newIssuer(c, log, m)
		if err != nil {
			s.closeIssuers()
			st.Close()
			return nil, err
		}
		s.issuers[c.Name], wfIssuers[c.Name] = is, is
	}
	var journal workflow.Journal = st
	if opts.WrapJournal != nil {
		journal = opts.WrapJournal(st)
	}
	steps := newStepTimer(journal, m)
	journal = steps
	s.runner, err = workflow.New(workflow.Config{
		Journal: journal, Profiles: rt.Profiles, Issuers: wfIssuers,
		EKRoots: rt.EKRoots, EKIntermediates: rt.EKIntermediates, EKAlgorithms: rt.EKAlgorithms,
		StepTimeout: rt.StepTimeout, StepTimeouts: rt.StepTimeouts, HandoverWait: rt.HandoverWait, Clock: opts.Clock, Logger: log,
	})
	if err != nil {
		s.closeIssuers()
		st.Close()
		return nil, err
	}
	s.gw = gateway.New(gateway.Config{
		MaxInFlight: rt.MaxUnitsInFlight, SlotWait: rt.SlotWait, HelloTimeout: rt.HelloTimeout,
		MaxSessionsPerPeer: rt.MaxSessionsPerPeer, MaxRefusalsPerPeer: rt.MaxRefusalsPerPeer, RefusalWindow: rt.RefusalWindow,
		Logger: log,
		Handler: func(ctx context.Context, sess *gateway.Session) error {
			out := s.runner.Run(ctx, sess)
			steps.forget(out.Serial)
			s.countOutcome(out)
			if s.outcomes != nil {
				select {
				case s.outcomes <- out:
				default:
				}
			}
			switch {
			case out.Refused:
				return fmt.Errorf("%w: %s", gateway.ErrRefused, out.Code)
			case workflow.Class(out.Code) == workflow.ClassSecurity:
				// EK certificates are public: a client without the TPM passes the first checks
				// and is journaled before its credential activation fails. Its security failures
				// count against its peer's refusal limit as refusals do.
				return fmt.Errorf("%w: %s", gateway.ErrRefused, out.Code)
			case out.Interrupted:
				return errors.New(out.Message)
			}
			return nil
		},
	})
	// An agent connection has as long as a session has to say Hello to finish its TLS and
	// HTTP/2 handshake and, whenever it has no session, to open one: the per-peer limits
	// count sessions, so a client that answers keepalive pings would otherwise hold a
	// connection (a socket, goroutines, buffers) for ever without one.
	idle := rt.HelloTimeout
	if idle <= 0 {
		idle = gateway.DefaultHelloTimeout
	}
	s.agentSrv = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(rt.AgentTLS)), grpc.ConnectionTimeout(idle),
		grpc.MaxRecvMsgSize(maxMessageBytes), grpc.MaxSendMsgSize(maxMessageBytes), grpc.MaxConcurrentStreams(maxStreamsPerConn),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, MaxConnectionIdle: idle}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	agentv1.RegisterAgentGatewayServer(s.agentSrv, s.gw)
	if s.apiSrv, s.api, err = s.newAPI(opts); err != nil {
		s.closeIssuers()
		st.Close()
		return nil, err
	}
	if rt.ReportsDir != "" {
		if s.reports, err = reportdir.New(rt.ReportsDir, st, log.With("part", "reports")); err != nil {
			s.closeIssuers()
			st.Close()
			return nil, err
		}
	}
	if err := s.watch(); err != nil {
		s.closeIssuers()
		st.Close()
		return nil, err
	}
	return s, nil
}

// Start listens on the configured addresses and serves until Close.
func (s *Server) Start() error {
	var err error
	if s.agentLis, err = net.Listen("tcp", s.rt.AgentListen); err != nil {
		return fmt.Errorf("agent listener: %w", err)
	}
	if s.apiLis, err = net.Listen("tcp", s.rt.APIListen); err != nil {
		s.agentLis.Close()
		return fmt.Errorf("API listener: %w", err)
	}
	if err := s.serveMetrics(s.registry); err != nil {
		s.agentLis.Close()
		s.apiLis.Close()
		return err
	}
	if err := s.serveConsole(); err != nil {
		s.agentLis.Close()
		s.apiLis.Close()
		if s.metricsSrv != nil {
			s.metricsSrv.Close()
		}
		return err
	}
	for _, p := range []struct {
		srv *grpc.Server
		lis net.Listener
	}{{s.agentSrv, s.agentLis}, {s.apiSrv, s.apiLis}} {
		s.wg.Go(func() {
			if err := p.srv.Serve(p.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				s.log.Error("gRPC server stopped", "addr", p.lis.Addr().String(), "error", err)
			}
		})
	}
	s.startReconciler()
	if s.reports != nil {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopReports = cancel
		s.wg.Go(func() { s.reports.Run(ctx, reportsFinal) })
	}
	s.log.Info("station started", "station_id", s.rt.StationID, "agents", s.agentLis.Addr().String(), "api", s.apiLis.Addr().String(),
		"metrics", s.MetricsAddr(), "console", s.ConsoleURL())
	return nil
}

// AgentAddr is the agent gateway's listening address (after Start).
func (s *Server) AgentAddr() string { return s.agentLis.Addr().String() }

// APIAddr is the API's listening address (after Start).
func (s *Server) APIAddr() string { return s.apiLis.Addr().String() }

// Fatal delivers the error after which the station must not go on (a store found corrupt at
// run time, code store.CodeStoreCorrupt; every write is already refused). The owner closes the
// station and exits.
func (s *Server) Fatal() <-chan error { return s.fatal }

// ReportsWritten is the outbox position up to which the station's reports folder is written
// (reportdir.Writer.Written); ok is false when the station has no reports folder.
func (s *Server) ReportsWritten() (pos uint64, ok bool) {
	if s.reports == nil {
		return 0, false
	}
	return s.reports.Written(), true
}

// SlotsHeld reports the provisioning slots agent sessions hold now (after Start).
func (s *Server) SlotsHeld() int { return s.gw.SlotsHeld() }

// InFlightAtStart returns the units the station had not finished when it started; each
// resumes when its agent reconnects.
func (s *Server) InFlightAtStart() []store.UnitState { return s.inFlight }

// Store returns the station's store.
func (s *Server) Store() *store.Store { return s.store }

// Outcomes returns a channel that receives the outcome of every agent session (dropped when
// nobody reads fast enough). Call it before Start.
func (s *Server) Outcomes() <-chan workflow.Outcome {
	if s.outcomes == nil {
		s.outcomes = make(chan workflow.Outcome, 1024)
	}
	return s.outcomes
}

// Close stops accepting, lets running sessions end until ctx is done, then closes every
// connection (without waiting for the workflows they ran: those fail their next write) and
// closes the store.
func (s *Server) Close(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.apiSrv.GracefulStop()
		s.agentSrv.GracefulStop()
		close(done)
	}()
	s.api.Shutdown()
	if s.metricsSrv != nil {
		_ = s.metricsSrv.Close() // a scrape has nothing worth waiting for
	}
	if s.consoleSrv != nil {
		_ = s.consoleSrv.Close() // nor a page (its event streams reconnect)
	}
	select {
	case <-done:
	case <-ctx.Done():
		s.apiSrv.Stop()
		s.agentSrv.Stop()
	}
	if s.stopReports != nil {
		s.stopReports() // the writer's last pass writes what the sessions left
	}
	if s.stopReconcile != nil {
		s.stopReconcile()
	}
	s.wg.Wait()
	s.closeIssuers()
	return s.store.Close()
}

func (s *Server) closeIssuers() {
	for _, is := range s.issuers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = is.batcher.Close(ctx)
		cancel()
	}
}
