package api

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/station/store"
)

// Role is what a caller may do. Callers are identified by their client certificate.
type Role string

// Roles.
const (
	RoleOperator Role = "operator"
	RoleMES      Role = "mes"
	RoleQA       Role = "qa"
	RoleAdmin    Role = "admin"
)

// Valid reports whether r is one of the defined roles.
func (r Role) Valid() bool {
	switch r {
	case RoleOperator, RoleMES, RoleQA, RoleAdmin:
		return true
	}
	return false
}

var allRoles = []Role{RoleOperator, RoleMES, RoleQA, RoleAdmin}

// permissions lists the roles allowed to call each Station method, as the proto documents.
// Methods absent from the table are refused (default deny); health and reflection are
// handled by allowedAny.
var permissions = map[string][]Role{
	stationv1.Station_CreateWorkOrder_FullMethodName:    {RoleMES, RoleAdmin},
	stationv1.Station_CloseWorkOrder_FullMethodName:     {RoleMES, RoleAdmin},
	stationv1.Station_AbortUnit_FullMethodName:          {RoleOperator, RoleAdmin},
	stationv1.Station_AuthorizeRework_FullMethodName:    {RoleAdmin},
	stationv1.Station_DecideHold_FullMethodName:         {RoleQA, RoleAdmin},
	stationv1.Station_ReleaseEK_FullMethodName:          {RoleAdmin},
	stationv1.Station_GetWorkOrder_FullMethodName:       allRoles,
	stationv1.Station_ListWorkOrders_FullMethodName:     allRoles,
	stationv1.Station_GetUnit_FullMethodName:            allRoles,
	stationv1.Station_ListUnits_FullMethodName:          allRoles,
	stationv1.Station_WatchEvents_FullMethodName:        allRoles,
	stationv1.Station_GetTraveler_FullMethodName:        allRoles,
	stationv1.Station_ListRefusals_FullMethodName:       allRoles,
	stationv1.Station_GetStatus_FullMethodName:          allRoles,
	stationv1.Station_GetReport_FullMethodName:          allRoles,
	stationv1.Station_ListPossiblyIssued_FullMethodName: allRoles,
	stationv1.Station_ImportIssuanceLog_FullMethodName:  {RoleQA, RoleAdmin},
	stationv1.Station_VerifyAudit_FullMethodName:        {RoleQA, RoleAdmin},
	stationv1.Station_GetUnitAudit_FullMethodName:       {RoleQA, RoleAdmin},
	stationv1.Station_ExportBundle_FullMethodName:       {RoleQA, RoleAdmin},
}

// allowedAny reports the services any caller with a role may use: gRPC health and reflection.
func allowedAny(method string) bool {
	for _, prefix := range []string{"/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/",
		"/grpc.reflection.v1alpha.ServerReflection/"} {
		if strings.HasPrefix(method, prefix) {
			return true
		}
	}
	return false
}

// Allowed reports whether role may call method (a full gRPC method name such as
// stationv1.Station_AbortUnit_FullMethodName).
func Allowed(role Role, method string) bool {
	return allowedAny(method) || slices.Contains(permissions[method], role)
}

// RoleTable maps client certificates to roles. A certificate is looked up, in this order, by
// the SHA-256 fingerprint of its DER, then by the URIs of its subjectAltName, then by its
// subject CommonName; the first binding found decides (a certificate whose SAN URIs are bound
// to different roles has no role). The certificate has already been verified against the
// configured client CAs by the TLS handshake. A RoleTable is read-only once built and then
// safe for concurrent use.
type RoleTable struct {
	// Fingerprints maps the lowercase hex SHA-256 of a client certificate's DER to a role.
	Fingerprints map[string]Role
	// URIs maps a subjectAltName URI (e.g. a SPIFFE ID) to a role.
	URIs map[string]Role
	// CommonNames maps a client certificate's subject CommonName to a role.
	CommonNames map[string]Role
}

// Validate checks every role, fingerprint and URI.
func (t RoleTable) Validate() error {
	for fp, r := range t.Fingerprints {
		if len(fp) != 64 || strings.ToLower(fp) != fp || !isHex(fp) {
			return fmt.Errorf("role table: fingerprint %q: want 64 lowercase hex digits", fp)
		}
		if !r.Valid() {
			return fmt.Errorf("role table: fingerprint %s: unknown role %q", fp[:16], r)
		}
	}
	for u, r := range t.URIs {
		if pu, err := url.Parse(u); err != nil || !pu.IsAbs() {
			return fmt.Errorf("role table: URI %q is not an absolute URI", u)
		}
		if !r.Valid() {
			return fmt.Errorf("role table: URI %q: unknown role %q", u, r)
		}
	}
	for cn, r := range t.CommonNames {
		if cn == "" {
			return fmt.Errorf("role table: empty common name")
		}
		if !r.Valid() {
			return fmt.Errorf("role table: common name %q: unknown role %q", cn, r)
		}
	}
	return nil
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// Lookup returns the role of the verified client certificate cert: by fingerprint, else by SAN
// URI, else by CommonName.
func (t RoleTable) Lookup(cert *x509.Certificate) (Role, bool) {
	if r, ok := t.Fingerprints[Fingerprint(cert)]; ok {
		return r, true
	}
	var byURI Role
	for _, u := range cert.URIs {
		r, ok := t.URIs[u.String()]
		switch {
		case !ok:
		case byURI != "" && r != byURI:
			return "", false // bound to two roles: refuse rather than pick one
		default:
			byURI = r
		}
	}
	if byURI != "" {
		return byURI, true
	}
	if cn := cert.Subject.CommonName; cn != "" {
		if r, ok := t.CommonNames[cn]; ok {
			return r, true
		}
	}
	return "", false
}

// Fingerprint returns the lowercase hex SHA-256 of the certificate's DER, the key of
// RoleTable.Fingerprints.
func Fingerprint(cert *x509.Certificate) string {
	s := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(s[:])
}

// Caller is the authenticated caller of a request.
type Caller struct {
	// Role is the caller's role.
	Role Role
	// Principal names the caller in the audit trail: "<role>:CN=<common name>", or
	// "<role>:sha256=<first 16 hex digits>" for a certificate without a CommonName.
	Principal string
}

type callerKey struct{}

// CallerFrom returns the caller the interceptors authenticated for ctx.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// authenticate returns the caller of ctx, or a gRPC status error. Every refusal is logged and
// recorded in the audit trail (bounded, see refusalAuditor).
func (s *Server) authenticate(ctx context.Context, method string) (Caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Caller{}, status.Error(codes.Unauthenticated, "no peer")
	}
	var leaf *x509.Certificate
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
		leaf = ti.State.VerifiedChains[0][0]
	}
	return s.authorize(method, leaf, peerHost(p.Addr))
}

// authorize returns the caller holding the verified client certificate leaf (nil: none) if its
// role may call method, else a gRPC status error; every refusal is logged and audited.
func (s *Server) authorize(method string, leaf *x509.Certificate, peer string) (Caller, error) {
	details := map[string]string{"peer": peer}
	if leaf == nil {
		s.log.Warn("api call refused: no client certificate", "method", method, "peer", peer)
		s.refusals.record(refusal{principal: "unauthenticated", method: method, code: RefusedUnauthenticated, details: details})
		return Caller{}, status.Error(codes.Unauthenticated, "a client certificate issued by a CA this station trusts is required")
	}
	details["fingerprint"] = Fingerprint(leaf)
	details["subject"] = leaf.Subject.String()
	role, ok := s.cfg.Roles(leaf)
	if !ok || !role.Valid() {
		s.log.Warn("api call refused: certificate has no role", "method", method,
			"subject", details["subject"], "fingerprint", details["fingerprint"])
		s.refusals.record(refusal{principal: principalOf("", leaf), method: method, code: RefusedNoRole, details: details})
		return Caller{}, status.Errorf(codes.PermissionDenied, "client certificate %q has no role at this station", leaf.Subject.CommonName)
	}
	c := Caller{Role: role, Principal: principalOf(role, leaf)}
	if Allowed(role, method) {
		return c, nil
	}
	s.log.Warn("api call refused: role not allowed", "method", method, "principal", c.Principal)
	s.refusals.record(refusal{principal: c.Principal, method: method, code: RefusedRoleNotAllowed, details: details})
	return Caller{}, status.Errorf(codes.PermissionDenied, "role %s may not call %s", role, method)
}

// Authorize is the interceptors' check for a caller that reaches the station other than over
// gRPC (the operator console): leaf is its verified client certificate (nil: none), peer its
// address, method a Station full method name (stationv1.Station_*_FullMethodName). A refusal
// is logged and audited as the interceptors' are and returned as a gRPC status error
// (Unauthenticated, PermissionDenied); otherwise the returned context carries the caller, so
// that calling the method with it is audited under the caller's principal exactly as over
// gRPC.
func (s *Server) Authorize(ctx context.Context, method string, leaf *x509.Certificate, peer string) (context.Context, error) {
	if host, _, err := net.SplitHostPort(peer); err == nil {
		peer = host
	}
	c, err := s.authorize(method, leaf, peer)
	if err != nil {
		return nil, err
	}
	return withCaller(ctx, c), nil
}

// principalOf names the holder of cert in the audit trail: "<role>:CN=<common name>", or
// "<role>:sha256=<first 16 hex digits>" without a CommonName; without the "<role>:" prefix
// for a certificate that has no role.
func principalOf(role Role, cert *x509.Certificate) string {
	id := "CN=" + cert.Subject.CommonName
	if cert.Subject.CommonName == "" {
		id = "sha256=" + Fingerprint(cert)[:16]
	}
	if role == "" {
		return id
	}
	return string(role) + ":" + id
}

// peerHost returns the caller's address without its port.
func peerHost(addr net.Addr) string {
	if addr == nil {
		return ""
	}
	if host, _, err := net.SplitHostPort(addr.String()); err == nil {
		return host
	}
	return addr.String()
}

// withCaller returns ctx carrying the caller for this package and, for the store's audit
// records, its principal.
func withCaller(ctx context.Context, c Caller) context.Context {
	return store.WithPrincipal(context.WithValue(ctx, callerKey{}, c), c.Principal)
}

// UnaryInterceptor authenticates and authorizes every unary call.
func (s *Server) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	c, err := s.authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(withCaller(ctx, c), req)
}

// StreamInterceptor authenticates and authorizes every streaming call.
func (s *Server) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	c, err := s.authenticate(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &callerStream{ServerStream: ss, ctx: withCaller(ss.Context(), c)})
}

type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *callerStream) Context() context.Context { return c.ctx }

// ServerTLSConfig returns the TLS configuration of the API listener: TLS 1.3, the station's
// certificate, and client certificates verified against clientCAs when given. A certificate
// from another CA fails the handshake; a caller without one completes it and is refused with
// codes.Unauthenticated by the interceptors, which gives a clearer error than a failed
// handshake.
func ServerTLSConfig(cert tls.Certificate, clientCAs *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    clientCAs,
	}
}
