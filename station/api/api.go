// Package api serves the station's control and query API (proto/station/v1) to MES systems,
// operators and QA over mTLS. Callers are mapped to a role (operator, mes, qa, admin) by their
// verified client certificate; interceptors refuse callers without a certificate
// (Unauthenticated) and methods their role may not call (PermissionDenied). Every mutating
// call goes through the store's audited calls with the caller's principal. Store and workflow
// errors become gRPC codes only here (makeErr).
//
// WatchEvents replays the store's outbox after a resume token and then, when asked to follow,
// polls the outbox (every Config.PollInterval, 200 ms by default) until the client goes away:
// the store has no change notification, and an outbox read is one short bbolt read
// transaction.
package api

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/devid-station/devid/ca-client/clock"
	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/station/store"
)

// Runner is the workflow runner's part the API uses; *workflow.Runner implements it.
type Runner interface {
	// Abort stops the unit's workflow and marks it aborted; by names the caller.
	Abort(ctx context.Context, serial, by, reason string) (store.UnitState, error)
	// Running reports the serials being provisioned now.
	Running() []string
}

// Agents reports agent sessions; *gateway.Server implements it.
type Agents interface {
	// Connected reports the number of open agent sessions.
	Connected() int
}

// CAHealth is the health of one CA client, as GetStatus reports it.
type CAHealth struct {
	// Name is the CA's name in the config.
	Name string
	// Breaker is "closed", "open" or "half-open".
	Breaker string
	// Requests and Errors count enrollment requests and failed ones.
	Requests, Errors uint64
	// P50 and P95 are enrollment latency percentiles.
	P50, P95 time.Duration
}

// Clock tells the time.
type Clock = clock.Clock

// Config configures a Server.
type Config struct {
	// Store is the station's store. Required.
	Store *store.Store
	// Runner aborts units and reports running ones; nil makes AbortUnit answer Unimplemented
	// and counts every running unit in the store as running.
	Runner Runner
	// Agents reports connected agents; nil reports 0.
	Agents Agents
	// CAs reports each CA client's health; nil reports none.
	CAs func() []CAHealth
	// Profiles lists the profile names work orders may use; nil accepts any name.
	Profiles []string
	// StationID and Version are reported by GetStatus; StationID defaults to the store's.
	StationID, Version string
	// Roles maps a verified client certificate to its role (e.g. RoleTable.Lookup). Required.
	Roles func(*x509.Certificate) (Role, bool)
	// StatusWindow is the window of GetStatus's units per hour (0 = 15 minutes).
	StatusWindow time.Duration
	// PollInterval is how often a following WatchEvents stream reads the outbox (0 = 200 ms).
	PollInterval time.Duration
	// Clock defaults to the system clock.
	Clock Clock
	// Logger receives refusals and internal errors; nil discards.
	Logger *slog.Logger
	// RefusalWindow is the window of the refusal audit (0 = 1 minute): per window, up to 16
	// refused calls get an audit record each and one summary record counts the rest.
	RefusalWindow time.Duration
	// ReportsDir is the station's reports folder (reports/reportdir) that GetReport serves;
	// empty: GetReport answers Unimplemented.
	ReportsDir string
}

// Server implements stationv1.StationServer. It is safe for concurrent use.
type Server struct {
	stationv1.UnimplementedStationServer
	cfg    Config
	log    *slog.Logger
	index  *unitIndex
	health *health.Server

	refusals  *refusalAuditor
	auditDone chan struct{} // closed when the refusal auditor has written its last summary

	stopOnce sync.Once
	stopping chan struct{} // closed by Shutdown: following WatchEvents streams end
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("api: no store")
	}
	if cfg.Roles == nil {
		return nil, errors.New("api: no role mapping")
	}
	if cfg.StationID == "" {
		cfg.StationID = cfg.Store.StationID()
	}
	if cfg.StatusWindow <= 0 {
		cfg.StatusWindow = 15 * time.Minute
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 200 * time.Millisecond
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, index: newUnitIndex(cfg.Store), health: health.NewServer(),
		refusals:  newRefusalAuditor(cfg.Store, cfg.Logger, cfg.RefusalWindow, cfg.Clock.Now),
		auditDone: make(chan struct{}), stopping: make(chan struct{})}
	s.health.SetServingStatus(stationv1.Station_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	go func() {
		defer close(s.auditDone)
		s.refusals.run(s.stopping)
	}()
	return s, nil
}

// ServerOptions returns the interceptors that authenticate and authorize every call; pass
// them to grpc.NewServer together with the TLS credentials (see ServerTLSConfig).
func (s *Server) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(s.UnaryInterceptor),
		grpc.ChainStreamInterceptor(s.StreamInterceptor),
	}
}

// Register registers the Station service, gRPC health and reflection on gs, which must have
// been created with ServerOptions.
func (s *Server) Register(gs *grpc.Server) {
	stationv1.RegisterStationServer(gs, s)
	healthpb.RegisterHealthServer(gs, s.health)
	reflection.Register(gs)
}

// Shutdown marks every service NOT_SERVING for health checkers, ends the WatchEvents
// streams that follow new events (they would otherwise hold grpc.Server.GracefulStop until
// their clients leave) and writes the summary of refused calls not yet audited. Call it
// before stopping the gRPC server and closing the store; calling it again does nothing.
func (s *Server) Shutdown() {
	s.stopOnce.Do(func() {
		s.health.Shutdown()
		close(s.stopping)
		<-s.auditDone
	})
}

// err converts an error for the caller of method.
func (s *Server) err(method string, err error) error { return makeErr(s.log, method, err) }
